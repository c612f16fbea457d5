"""Compaction: each partition's (or an unpartitioned table's) small files
merged into one, safe while a server keeps writing into the table.

For each data directory, the files already landed (for a partitioned table,
only batch files whose ``.batch-{id}.landed`` marker exists, so a batch still
being written is left alone) are read in the table's unified schema
(_common_metadata) and written to a hidden temporary name, fsynced, renamed
to ``compacted-{token}.parquet``, and only then are the inputs unlinked. The
merged file's key-value metadata holds the batch ids of every input
(``ingest.batches``: ParquetSink.ledger() reads it, so recovery never
replays them, and the sink skips them) and the inputs' names
(``ingest.inputs``). A crash between the rename and the unlinks rolls
forward: the next compaction, or the sink's start, removes the inputs a
merged file names (layout.roll_forward). A crash before the rename leaves
only a hidden temporary file, which the next compaction removes.

Readers (``read_parquet``, pyarrow.dataset, polars) that list the directory
between the rename and the unlinks can see the merged file and its inputs
at once, so rows twice; the window is a few unlinks, and a reader listing
after them sees each row once. Two compactions of one table do not run at
once (an flock on ``.compacting`` in the table directory).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.sinks.identity import fold
from ingest.sinks.parquet import layout

log = logging.getLogger("ingest.sinks.parquet")

LOCK = ".compacting"


def _resolve(root: Path, table: str) -> Path | None:
    """The table's directory, its name matched case-insensitively as the sink matches it."""
    if (root / table).is_dir():
        return root / table
    matches = sorted(p for p in root.iterdir() if p.is_dir() and fold(p.name) == fold(table)) if root.is_dir() else []
    return matches[0] if matches else None


def _inputs(directory: Path, landed: set[str] | None) -> list[Path]:
    """The files to merge: those landed (every visible one when the table is
    unpartitioned: a batch file's name is its ledger entry)."""
    files = []
    for path in layout.data_files(directory):
        batch_id = layout.batch_file_id(path.name)
        if landed is not None and batch_id is not None and str(batch_id) not in landed:
            continue  # its batch is still being written (no landed marker yet)
        files.append(path)
    return files


def _in_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """One input's rows in the table's unified schema (missing columns null, integers widened)."""
    columns = []
    for field in schema:
        index = table.schema.get_field_index(field.name)
        if index < 0:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            columns.append(table.column(index).cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _merge(directory: Path, inputs: list[Path], schema: pa.Schema) -> int:
    """Writes the merged file and unlinks the inputs; returns its rows."""
    batches, names, rows = [], [], 0
    for path in inputs:
        batch_id = layout.batch_file_id(path.name)
        if batch_id is not None:
            batches.append(str(batch_id))
        elif path.name.startswith(layout.COMPACTED_PREFIX):
            held, _ = layout.compacted_metadata(path)
            batches.extend(str(b) for b in held)
        names.append(path.name)
    name = f"{layout.COMPACTED_PREFIX}{uuid.uuid4().hex}.parquet"
    temporary = directory / f".{name}.tmp"
    metadata = {layout.BATCHES_KEY: json.dumps(batches).encode(), layout.INPUTS_KEY: json.dumps(names).encode()}
    with pq.ParquetWriter(temporary, schema.with_metadata(metadata), compression="zstd") as writer:
        for path in inputs:
            table = _in_schema(pq.read_table(path), schema)
            rows += table.num_rows
            writer.write_table(table)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, directory / name)
    layout.fsync_directory(directory)  # the merged file is durable before any input goes
    for path in inputs:
        path.unlink(missing_ok=True)
    return rows


def compact_table(root: Path, table: str) -> dict:
    """Merges the small files of each partition of `table` under `root`
    (DIR/parquet) into one. Returns {"tables", "partitions", "files_before",
    "files_after", "rows"}: the directories looked at, their data files
    before and after, and the rows they hold."""
    summary = {"tables": 0, "partitions": 0, "files_before": 0, "files_after": 0, "rows": 0}
    table_directory = _resolve(root, table)
    if table_directory is None:
        return summary
    summary["tables"] = 1
    with open(table_directory / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        layout.roll_forward(table_directory)
        for stale in table_directory.rglob(f".{layout.COMPACTED_PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)  # a compaction that stopped before its rename
        saved = layout.read_common_metadata(table_directory)
        schema, partition_by = saved if saved is not None else (layout.footer_schema(table_directory), [])
        names = {fold(n) for n in partition_by}
        file_schema = pa.schema([f for f in schema if fold(f.name) not in names])  # partition columns: the path
        landed = None
        if partition_by:
            landed = {str(b) for b in (layout.marker_id(p.name, layout.LANDED_SUFFIX)
                                       for p in table_directory.iterdir()) if b is not None}
        for directory in layout.data_directories(table_directory):
            before = layout.data_files(directory)
            if not before:
                continue
            summary["partitions"] += 1
            summary["files_before"] += len(before)
            inputs = _inputs(directory, landed)
            if len(inputs) > 1:
                for path in inputs:  # columns a file has that _common_metadata lacks (written before it)
                    for field in pq.read_schema(path).remove_metadata():
                        file_schema, _ = layout.unify(file_schema, field)
                _merge(directory, inputs, file_schema)
                log.info("compacted %d files in %s", len(inputs), directory)
            after = layout.data_files(directory)
            summary["files_after"] += len(after)
            summary["rows"] += sum(pq.read_metadata(p).num_rows for p in after)
    return summary


__all__ = ["compact_table"]
