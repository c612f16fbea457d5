"""What every sink looks like: it lands Arrow record batches for a table and
answers SQL over what has landed. Sinks are called from worker threads,
never from the event loop."""
from __future__ import annotations

import string
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterable, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc


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


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(name: str) -> str:
    """A name's identity in the sinks: DuckDB compares identifiers (tables,
    columns, the Parquet query views) ignoring ASCII case only, so "a" and
    "A" are one name and "é" and "É" are two."""
    return name.translate(_ASCII_LOWER)


class ColumnRefused(ValueError):
    """A batch's keys cannot be stored as they are (a NUL in a key; keys that
    differ only in case held by one event, or with different types). A data
    error: bisection isolates the events that carry them."""


class TableNames:
    """Table names are case-insensitive (ASCII, as DuckDB's): the first
    spelling seen, or the one already in the sink, is the table's name and
    later spellings map to it."""

    def __init__(self, existing: Iterable[str] = ()):
        self._lock = threading.Lock()  # resolved on the event loop and in sink threads
        self._names: dict[str, str] = {}
        for name in existing:
            self._names.setdefault(fold(name), name)

    def resolve(self, name: str) -> str:
        with self._lock:
            return self._names.setdefault(fold(name), name)


def _same_kind(a: pa.Field, b: pa.Field) -> bool:
    return a.type == b.type and is_json_field(a) == is_json_field(b)


def normalise_columns(batch: pa.RecordBatch, known: dict[str, str]) -> pa.RecordBatch:
    """The batch with one column per case-insensitive key, spelled as the
    table already spells it (`known`: folded name -> column name) or else as
    the batch first does. Keys that differ only
    in case are merged when no event holds both and they have one type (or
    integer and float: the float); a column with no value in this batch that
    cannot be stored is dropped. Anything else raises ColumnRefused naming
    the keys."""
    groups: dict[str, list[int]] = {}
    for index, field in enumerate(batch.schema):
        if "\x00" in field.name or not field.name:
            if batch.column(index).null_count == batch.num_rows:
                continue  # no event gives it a value
            what = "holds a NUL character" if field.name else "is empty"
            raise ColumnRefused(f"key {field.name!r} {what}, which the sink cannot store")
        groups.setdefault(fold(field.name), []).append(index)
    fields, columns = [], []
    for key, indices in groups.items():
        name = known.get(key) or batch.schema.field(indices[0]).name
        if len(indices) > 1:
            valued = [i for i in indices if batch.column(i).null_count < batch.num_rows]
            indices = valued or indices[:1]
        field, column = batch.schema.field(indices[0]), batch.column(indices[0])
        if len(indices) > 1:
            group = [batch.schema.field(i) for i in indices]
            names = " and ".join(repr(f.name) for f in group)
            arrays = [batch.column(i) for i in indices]
            if not all(_same_kind(field, f) for f in group):
                if not all(pa.types.is_integer(f.type) or pa.types.is_floating(f.type) for f in group):
                    raise ColumnRefused(f"keys {names} differ only in case, so the sink stores them as one"
                                        f" column, but they have different types")
                arrays = [a.cast(pa.float64()) for a in arrays]
                field = field.with_type(pa.float64())
            counts = pc.cast(arrays[0].is_valid(), pa.int32())
            for a in arrays[1:]:
                counts = pc.add(counts, pc.cast(a.is_valid(), pa.int32()))
            if pc.max(counts).as_py() > 1:
                raise ColumnRefused(f"keys {names} differ only in case, so the sink stores them as one column,"
                                    f" but an event holds both")
            column = pc.coalesce(*arrays)
        fields.append(field.with_name(name))
        columns.append(column)
    if len(fields) == batch.num_columns and all(f.name == g.name for f, g in zip(fields, batch.schema)):
        return batch
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, metadata=batch.schema.metadata))


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

    def query(self, sql: str, running: RunningQuery | None = None, max_bytes: int | None = None) -> pa.Table:
        """Run SQL over the landed tables, safe while writes go on;
        `running` lets another thread interrupt it; a result over
        `max_bytes` raises QueryTooLarge."""

    def resolve_table(self, table: str) -> str:
        """The table's name in the sink: names are case-insensitive, the
        first spelling (or the one the sink already has) wins."""

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


QUERY_BATCH_ROWS = 16_384  # rows fetched at a time when a result is capped


class QueryTooLarge(Exception):
    """A query result grew past its cap (--max-query-bytes)."""


def query_arrow(connection, sql: str, running: RunningQuery | None = None, max_bytes: int | None = None) -> pa.Table:
    """Runs SQL on a DuckDB connection; the result as an Arrow table
    (empty for statements that return no rows). With `max_bytes`, the
    result is read in record batches and refused once it grows past it."""
    with running.on(connection) if running is not None else nullcontext():
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
