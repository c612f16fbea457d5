"""`--partition-by`: which columns split a table into hive-style
directories (``ts_date=2026-12-07/``), for the Delta and Parquet sinks.

A key is a column (its values name the directories) or ``date(column)``, a
derived ``{column}_date`` column holding the UTC day of a timestamp, an
ISO-8601 string (its first ten characters) or a Unix time in seconds,
milliseconds or microseconds. A row without a value goes to the partition
``__HIVE_DEFAULT_PARTITION__``, the name Hive, Spark and DuckDB read as null."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_KEY = re.compile(r"^\s*(?:(date)\(\s*([^()\s,]+)\s*\)|([^()\s,=/]+))\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class PartitionKey:
    column: str  # the event's field
    transform: str = "identity"  # or "date"

    @property
    def name(self) -> str:
        """The partition column's name in the table and in its directories."""
        return f"{self.column}_date" if self.transform == "date" else self.column

    def __str__(self) -> str:
        return f"date({self.column})" if self.transform == "date" else self.column


def parse_partition_by(text: str) -> tuple[PartitionKey, ...]:
    """`"date(ts), country"` -> its keys; ValueError naming the part it cannot read."""
    keys = []
    for part in (p for p in text.split(",") if p.strip()) if text.strip() else ():
        match = _KEY.match(part)
        if match is None:
            raise ValueError(f"partition_by: cannot read {part.strip()!r}: give a column or date(column), "
                             "comma-separated, e.g. \"date(ts)\" or \"date(ts),country\"")
        keys.append(PartitionKey(match.group(2), "date") if match.group(1) else PartitionKey(match.group(3)))
    names = [k.name.lower() for k in keys]
    if len(set(names)) != len(names):
        raise ValueError(f"partition_by: {text!r} names a partition column twice")
    return tuple(keys)


def _find(batch: pa.RecordBatch, column: str) -> int:
    """The index of `column` (case-insensitive, as the sinks name columns), or -1."""
    lowered = column.lower()
    for index, name in enumerate(batch.schema.names):
        if name.lower() == lowered:
            return index
    return -1


def _day(values: pa.Array) -> pa.Array:
    """The UTC day of each value; null where there is none."""
    kind = values.type
    if pa.types.is_date32(kind):
        return values
    if pa.types.is_timestamp(kind) or pa.types.is_date64(kind):
        return pc.cast(values, pa.date32())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        head = pc.utf8_slice_codeunits(values, 0, 10)
        return pc.cast(pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True), pa.date32())
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds = pc.cast(values, pa.float64())
        magnitude = pc.abs(seconds)
        seconds = pc.if_else(pc.less(magnitude, 1e11), seconds,  # seconds until the year 5138
                             pc.if_else(pc.less(magnitude, 1e14), pc.divide(seconds, 1e3), pc.divide(seconds, 1e6)))
        days = pc.floor(pc.divide(seconds, 86400.0))
        in_range = pc.and_(pc.greater(days, -1e6), pc.less(days, 3e6))
        days = pc.if_else(in_range, days, pa.scalar(None, pa.float64()))
        return pc.cast(pc.cast(days, pa.int32()), pa.date32())
    return pa.nulls(len(values), pa.date32())


def _partition_value(values: pa.Array) -> pa.Array:
    """A column as a partition column takes it: a plain type a directory name can hold."""
    kind = values.type
    if (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_boolean(kind)
            or pa.types.is_date32(kind)):
        return values
    if pa.types.is_null(kind):
        return values.cast(pa.string())
    return pc.cast(values, pa.string()) if not (pa.types.is_list(kind) or pa.types.is_struct(kind)) \
        else pa.nulls(len(values), pa.string())


def with_partition_columns(batch: pa.RecordBatch, keys: tuple[PartitionKey, ...]) -> pa.RecordBatch:
    """The batch with each key's partition column, derived (``ts_date``) or
    made plain, and present even when no event has the field (all null)."""
    for key in keys:
        source = _find(batch, key.column)
        values = batch.column(source) if source >= 0 else pa.nulls(batch.num_rows, pa.string())
        column = _day(values) if key.transform == "date" else _partition_value(values)
        if key.transform == "date" and source < 0:
            column = pa.nulls(batch.num_rows, pa.date32())
        target = _find(batch, key.name)
        if target >= 0:
            batch = batch.set_column(target, pa.field(batch.schema.names[target], column.type), column)
        else:
            batch = batch.append_column(pa.field(key.name, column.type), column)
    return batch


def partition_path(names: list[str], values: tuple) -> str:
    """The hive-style directory of one partition: ``ts_date=2026-12-07/country=FR``."""
    parts = []
    for name, value in zip(names, values):
        text = NULL_PARTITION if value is None else str(value)
        parts.append(f"{quote(name, safe='')}={quote(text, safe=' -_.:')}")
    return "/".join(parts)


def split_partitions(batch: pa.RecordBatch, names: list[str]) -> list[tuple[tuple, pa.RecordBatch]]:
    """The batch's rows grouped by their partition values, the partition
    columns dropped (the directory names hold them), sorted by those values
    so a replayed batch splits the same way."""
    if not names:
        return [((), batch)]
    table = pa.Table.from_batches([batch])
    indices = [_find(batch, name) for name in names]
    keys = [table.column(i) for i in indices]
    combined = pa.table({f"k{n}": k for n, k in enumerate(keys)}).append_column(
        "row", pa.array(range(batch.num_rows), pa.int64()))
    groups = combined.group_by([f"k{n}" for n in range(len(keys))], use_threads=False).aggregate([("row", "list")])
    kept = [i for i in range(batch.num_columns) if i not in indices]
    parts = []
    for row in groups.to_pylist():
        rows = pa.array(row["row_list"], pa.int64())
        values = tuple(row[f"k{n}"] for n in range(len(keys)))
        part = batch.take(rows).select(kept)
        parts.append((values, part))
    return sorted(parts, key=lambda item: tuple("" if v is None else str(v) for v in item[0]))
