"""The Parquet sink: a directory of files per ingest table."""
from ingest.sinks.parquet.compaction import compact_table
from ingest.sinks.parquet.sink import ParquetSink, query_directory

__all__ = ["ParquetSink", "compact_table", "query_directory"]
