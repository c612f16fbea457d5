"""Where sealed, encoded batches land."""
from ingest.sinks.base import Sink
from ingest.sinks.duckdb import DuckDBSink
from ingest.sinks.parquet import ParquetSink

__all__ = ["Sink", "DuckDBSink", "ParquetSink"]
