"""The DuckDB sink: one database file, a table per ingest table."""
from ingest.sinks.duckdb.sink import DuckDBSink, query_file

__all__ = ["DuckDBSink", "query_file"]
