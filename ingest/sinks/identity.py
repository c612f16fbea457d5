"""How the sinks name tables and columns: case-insensitive (ASCII), as
DuckDB compares identifiers, with one spelling kept per name."""
from __future__ import annotations

import string
import threading
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from ingest.schema import is_json_field

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
