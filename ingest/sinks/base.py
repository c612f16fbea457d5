"""What every sink looks like: it lands Arrow record batches for a table and
answers SQL over what has landed. Sinks are called from worker threads,
never from the event loop."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True)
class BatchId:
    """Which write-ahead-log records a batch holds (first..last lsn of its
    table), and for a bisected write which rows of it. A sink records the id
    in the same commit as the rows and skips an id it already has, so a
    batch replayed after a crash never lands twice."""

    first_lsn: int
    last_lsn: int
    offset: int = 0
    length: int = -1  # -1: the whole batch

    @property
    def whole(self) -> bool:
        return self.length < 0

    def slice(self, offset: int, length: int) -> "BatchId":
        return BatchId(self.first_lsn, self.last_lsn, self.offset + offset, length)

    def __str__(self) -> str:
        text = f"{self.first_lsn:012d}-{self.last_lsn:012d}"
        return text if self.whole else f"{text}.{self.offset}+{self.length}"

    @classmethod
    def parse(cls, text: str) -> "BatchId":
        lsns, _, rows = text.partition(".")
        first, last = (int(n) for n in lsns.split("-"))
        if not rows:
            return cls(first, last)
        offset, length = (int(n) for n in rows.split("+"))
        return cls(first, last, offset, length)


@dataclass
class Ledger:
    """What a sink says has landed, per table: whole batches, and batches
    of which only some bisected slices landed before a crash."""

    complete: dict  # table -> set of (first_lsn, last_lsn)
    partial: dict  # table -> set of (first_lsn, last_lsn)

    @classmethod
    def from_ids(cls, ids) -> "Ledger":
        """From (table, BatchId) pairs; a whole id completes its batch."""
        complete: dict = {}
        partial: dict = {}
        for table, batch_id in ids:
            target = complete if batch_id.whole else partial
            target.setdefault(table, set()).add((batch_id.first_lsn, batch_id.last_lsn))
        for table, ranges in partial.items():
            ranges -= complete.get(table, set())
        return cls(complete, partial)


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
    if pa.types.is_date32(t):
        return "DATE"
    if pa.types.is_list(t):
        return duckdb_type(t.value_field) + "[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{quote_identifier(f.name)} {duckdb_type(f)}" for f in t) + ")"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    raise TypeError(f"column {field.name!r}: no DuckDB type for Arrow type {t}")


class Sink(Protocol):
    name: str

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        """Land one batch atomically: all of its rows or none, with its id in
        the same commit. False when the id had already landed."""

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        """A bisected batch is done: each slice landed or was dead-lettered."""

    def ledger(self) -> Ledger:
        """Every batch id that has landed."""

    def is_data_error(self, exc: BaseException) -> bool:
        """True when `write` failed because of the rows, not the environment."""

    def query(self, sql: str, max_bytes: int | None = None) -> pa.Table:
        """Run SQL over the landed tables, safe while writes go on; a result
        over `max_bytes` raises QueryTooLarge."""

    def close(self) -> None: ...



QUERY_BATCH_ROWS = 16_384  # rows fetched at a time when a result is capped


class QueryTooLarge(Exception):
    """A query result grew past its cap (--max-query-bytes)."""


def query_arrow(connection, sql: str, max_bytes: int | None = None) -> pa.Table:
    """Runs SQL on a DuckDB connection; the result as an Arrow table
    (empty for statements that return no rows). With `max_bytes`, the
    result is read in record batches and refused once it grows past it."""
    relation = connection.sql(sql)
    if relation is None:
        return pa.table({})
    if max_bytes is None:
        to_arrow = getattr(relation, "to_arrow_table", None) or relation.arrow  # DuckDB 2 renamed it
        return to_arrow()
    return read_capped(relation, max_bytes)


def read_capped(relation, max_bytes: int) -> pa.Table:
    """A DuckDB relation's result, fetched batch by batch; QueryTooLarge
    as soon as the batches read exceed `max_bytes`."""
    to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch  # DuckDB 2 renamed it
    reader = to_reader(QUERY_BATCH_ROWS)
    batches, size = [], 0
    try:
        for batch in reader:
            size += batch.nbytes
            if size > max_bytes:
                raise QueryTooLarge(f"the result is larger than {max_bytes} bytes (--max-query-bytes); select fewer "
                                    "rows or columns (LIMIT, WHERE) or aggregate")
            batches.append(batch)
    finally:
        reader.close()
    return pa.Table.from_batches(batches, reader.schema)


class SlowSink:
    """Fault injection (`--sink-delay-ms`): every write takes longer, so
    backpressure can be tested against a real sink that cannot keep up."""

    def __init__(self, sink, delay: float):
        self._sink = sink
        self._delay = delay
        self.name = sink.name

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        time.sleep(self._delay)
        return self._sink.write(table, batch, batch_id)

    def __getattr__(self, name):
        return getattr(self._sink, name)
