"""What every sink looks like: it lands Arrow record batches for a table and
answers SQL over what has landed. Sinks are called from worker threads,
never from the event loop."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import duckdb
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

    def is_environment_error(self, exc: BaseException) -> bool:
        """True when `write` failed because of the environment (no space, an
        I/O error, permission, a locked or unreachable store): the same rows
        can land once it is back."""

    def query(self, sql: str, running: RunningQuery | None = None) -> pa.Table:
        """Run SQL over the landed tables, safe while writes go on;
        `running` lets another thread interrupt it."""

    def close(self) -> None: ...



class QueryInterrupted(Exception):
    """A running query was stopped: the server is shutting down, or its client went away."""


class RunningQuery:
    """A query on a DuckDB connection in a worker thread, so that another
    thread can interrupt it. DuckDB forgets an interrupt that comes before
    the query has started, so whoever interrupts repeats it until the query
    has ended."""

    def __init__(self):
        self._lock = threading.Lock()
        self._connection = None
        self.reason = ""

    def interrupt(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason
            if self._connection is not None:
                self._connection.interrupt()

    @contextmanager
    def on(self, connection):
        with self._lock:
            if self.reason:
                raise QueryInterrupted(self.reason)
            self._connection = connection
        try:
            yield
        except duckdb.Error:
            if self.reason:
                raise QueryInterrupted(self.reason) from None
            raise
        finally:
            with self._lock:
                self._connection = None


def query_arrow(connection, sql: str, running: RunningQuery | None = None) -> pa.Table:
    """Runs SQL on a DuckDB connection; the result as an Arrow table
    (empty for statements that return no rows)."""
    with running.on(connection) if running is not None else nullcontext():
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

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        time.sleep(self._delay)
        return self._sink.write(table, batch, batch_id)

    def __getattr__(self, name):
        return getattr(self._sink, name)
