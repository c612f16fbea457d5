"""ingest: a high-throughput JSON event-ingestion server for DuckDB and Parquet."""

__version__ = "0.1.0"
