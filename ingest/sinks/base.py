"""What every sink looks like: it lands Arrow record batches for a table and
answers SQL over what has landed. Sinks are called from worker threads,
never from the event loop."""
from __future__ import annotations

import time
from typing import Protocol

import pyarrow as pa


def quote_identifier(name: str) -> str:
    """A SQL identifier, quoted, for any column name a client sends."""
    return '"' + name.replace('"', '""') + '"'


def is_json_field(field: pa.Field) -> bool:
    """Nested values are kept as JSON text, marked by the encoder."""
    return bool(field.metadata) and field.metadata.get(b"ingest.type") == b"json"


def duckdb_type(field: pa.Field) -> str:
    """The DuckDB column type for an encoded Arrow field."""
    t = field.type
    if is_json_field(field):
        return "JSON"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    raise TypeError(f"column {field.name!r}: no DuckDB type for Arrow type {t}")


class Sink(Protocol):
    name: str

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        """Land one batch atomically: all of its rows or none."""

    def is_data_error(self, exc: BaseException) -> bool:
        """True when `write` failed because of the rows, not the environment."""

    def query(self, sql: str) -> pa.Table:
        """Run SQL over the landed tables, safe while writes go on."""

    def close(self) -> None: ...



def query_arrow(connection, sql: str) -> pa.Table:
    """Runs SQL on a DuckDB connection; the result as an Arrow table
    (empty for statements that return no rows)."""
    relation = connection.sql(sql)
    if relation is None:
        return pa.table({})
    to_arrow = getattr(relation, "to_arrow_table", None) or relation.arrow  # DuckDB 2 renamed it
    return to_arrow()


class SlowSink:
    """Fault injection (`--sink-delay-ms`): every write takes longer, so
    backpressure can be tested against a real sink that cannot keep up."""

    def __init__(self, sink, delay: float):
        self._sink = sink
        self._delay = delay
        self.name = sink.name

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        time.sleep(self._delay)
        self._sink.write(table, batch)

    def __getattr__(self, name):
        return getattr(self._sink, name)
