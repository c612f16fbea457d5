"""What the files in a Parquet table directory mean, for the sink and for
compaction (the one place that knows it).

DIR/parquet/{table}/
  _common_metadata                  the table's unified schema (partition columns included),
                                    its key ``ingest.partition_by``: the partition columns
  batch-{id}.parquet                an unpartitioned batch; its name is its ledger entry
  {k=v/...}/batch-{id}.parquet      one partition's rows of a batch (partition columns in the path)
  .batch-{id}.landed                every partition file of a partitioned batch is in place
  .batch-{id}.settled               a bisected batch is done
  [{k=v/...}/]compacted-{token}.parquet
                                    merged files; key-value metadata ``ingest.batches`` (the batch
                                    ids it holds) and ``ingest.inputs`` (the file names it replaced)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.core.batch import BatchId

log = logging.getLogger("ingest.sinks.parquet")

BATCH_PREFIX = "batch-"  # batch-{first lsn}-{last lsn}[.{offset}+{rows}].parquet
COMPACTED_PREFIX = "compacted-"
LANDED_SUFFIX = ".landed"
SETTLED_SUFFIX = ".settled"
COMMON_METADATA = "_common_metadata"
PARTITION_BY_KEY = b"ingest.partition_by"  # _common_metadata: JSON list of the partition columns
BATCHES_KEY = b"ingest.batches"  # a compacted file: JSON list of the batch ids it holds
INPUTS_KEY = b"ingest.inputs"  # a compacted file: JSON list of the file names it replaced


def batch_file_id(name: str) -> BatchId | None:
    """The batch id a data file's name carries, or None."""
    if name.startswith(BATCH_PREFIX) and name.endswith(".parquet"):
        return BatchId.parse(name[len(BATCH_PREFIX):-len(".parquet")])
    return None


def marker_id(name: str, suffix: str) -> BatchId | None:
    """The batch id of a `.batch-{id}{suffix}` marker, or None."""
    prefix = "." + BATCH_PREFIX
    if name.startswith(prefix) and name.endswith(suffix):
        return BatchId.parse(name[len(prefix):-len(suffix)])
    return None


def marker_name(batch_id: BatchId, suffix: str) -> str:
    return f".{BATCH_PREFIX}{batch_id}{suffix}"


def data_files(directory: Path) -> list[Path]:
    """The visible Parquet files directly in `directory`, sorted by name."""
    try:
        return sorted(p for p in directory.iterdir()
                      if p.name.endswith(".parquet") and not p.name.startswith((".", "_")) and p.is_file())
    except FileNotFoundError:
        return []


def data_directories(table_directory: Path) -> list[Path]:
    """The table directory and every partition directory under it."""
    found = [table_directory]
    for path in sorted(table_directory.rglob("*")):
        if path.is_dir() and not path.name.startswith((".", "_")) and "=" in path.name:
            found.append(path)
    return found


def compacted_metadata(path: Path) -> tuple[list[BatchId], list[str]]:
    """A compacted file's batch ids and the names of the files it replaced."""
    metadata = pq.read_schema(path).metadata or {}
    batches = [BatchId.parse(text) for text in json.loads(metadata.get(BATCHES_KEY, b"[]"))]
    return batches, json.loads(metadata.get(INPUTS_KEY, b"[]"))


def roll_forward(table_directory: Path) -> int:
    """Removes the inputs that a compacted file already holds (a compaction
    stopped between its rename and its unlinks); returns how many."""
    removed = 0
    for directory in data_directories(table_directory):
        for path in data_files(directory):
            if not path.name.startswith(COMPACTED_PREFIX):
                continue
            try:
                _, inputs = compacted_metadata(path)
            except (OSError, pa.ArrowException, ValueError) as exc:
                log.warning("cannot read the footer of %s: %s", path, exc)
                continue
            for name in inputs:
                try:
                    (directory / name).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def remove_unlanded(table_directory: Path) -> int:
    """Removes partition files of batches whose landed marker is missing (a
    write stopped part way; recovery replays the batch, maybe under another
    id); returns how many. Only while no write into the table is under way."""
    landed = {path.name[1:-len(LANDED_SUFFIX)] + ".parquet"
              for path in table_directory.glob(f".{BATCH_PREFIX}*{LANDED_SUFFIX}")}
    removed = 0
    for directory in data_directories(table_directory)[1:]:
        for path in data_files(directory):
            if batch_file_id(path.name) is not None and path.name not in landed:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def unify(schema: pa.Schema, field: pa.Field) -> tuple[pa.Schema, bool]:
    """The table's schema taking in one column as a batch or file has it:
    a new column is added, a null-typed column takes the first real type,
    an integer column meeting a float becomes float64 (as DuckDB widens
    BIGINT to DOUBLE). Any other difference keeps the table's type (the
    server refuses such values before they reach the sink)."""
    index = schema.get_field_index(field.name)
    if index < 0:
        return schema.append(field), True
    have = schema.field(index)
    if have.type == field.type or pa.types.is_null(field.type):
        return schema, False
    if pa.types.is_null(have.type):
        return schema.set(index, field), True
    if pa.types.is_integer(have.type) and pa.types.is_floating(field.type):
        return schema.set(index, have.with_type(pa.float64())), True
    return schema, False


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema):
    """The batch's columns in the table's types where the table's type is
    wider (float64 for an integer column, a real type for a null one)."""
    changed = False
    columns, fields = [], []
    for field, column in zip(batch.schema, batch.columns):
        index = schema.get_field_index(field.name)
        target = schema.field(index) if index >= 0 else None
        if target is not None and target.type != field.type and not pa.types.is_null(target.type) and (
                pa.types.is_null(field.type)
                or (pa.types.is_integer(field.type) and pa.types.is_floating(target.type))):
            column = column.cast(target.type)
            field = field.with_type(target.type)
            changed = True
        columns.append(column)
        fields.append(field)
    if not changed:
        return batch
    return type(batch).from_arrays(columns, schema=pa.schema(fields, metadata=batch.schema.metadata))


def read_common_metadata(table_directory: Path) -> tuple[pa.Schema, list[str]] | None:
    """The table's schema and partition columns, or None when it has no _common_metadata."""
    path = table_directory / COMMON_METADATA
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        return None
    partition_by = json.loads((schema.metadata or {}).get(PARTITION_BY_KEY, b"[]"))
    return schema.remove_metadata(), partition_by


def write_common_metadata(table_directory: Path, schema: pa.Schema, partition_by: list[str]) -> None:
    """Replaces _common_metadata atomically."""
    temporary = table_directory / f".{COMMON_METADATA}.{os.getpid()}.tmp"
    pq.write_metadata(schema.with_metadata({PARTITION_BY_KEY: json.dumps(partition_by).encode()}), temporary)
    os.replace(temporary, table_directory / COMMON_METADATA)


def footer_schema(table_directory: Path) -> pa.Schema:
    """The unified schema of every data file's footer (a table written before _common_metadata)."""
    schema = pa.schema([])
    for directory in data_directories(table_directory):
        for path in data_files(directory):
            try:
                file_schema = pq.read_schema(path)
            except (OSError, pa.ArrowException) as exc:
                log.warning("cannot read the schema of %s: %s", path, exc)
                continue
            for field in file_schema.remove_metadata():
                schema, _ = unify(schema, field)
    return schema


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
