"""The Delta Lake sink: one Delta table per ingest table, written by any number of nodes."""
from ingest.sinks.delta.sink import DeltaSink, list_tables, query_tables

__all__ = ["DeltaSink", "list_tables", "query_tables", "storage_options"]


def storage_options(settings) -> dict:
    """The object-store options delta-rs gets: [delta_storage_options], and
    --delta-endpoint (or AWS_ENDPOINT_URL) for an S3-compatible store.
    Credentials come from the environment (AWS_ACCESS_KEY_ID, ...), which
    delta-rs reads itself."""
    import os

    options = dict(settings.delta_storage_options)
    endpoint = settings.delta_endpoint or os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint and settings.delta_root.startswith(("s3://", "s3a://")):
        options.setdefault("aws_endpoint_url", endpoint)
        if endpoint.startswith("http://"):
            options.setdefault("aws_allow_http", "true")
    return options
