"""Parquet sink: zstd files under DIR/parquet/{table}/, each batch one file
(or, with --partition-by, one file per partition under hive-style
directories), written to a hidden temporary name and renamed, so readers
globbing ``**/*.parquet`` only ever see whole files. With the write-ahead
log on, a file's name is its batch id, which is how a replayed batch is
recognised; a partitioned batch counts as landed once its
``.batch-{id}.landed`` marker is in the table directory, after all its
files. ``_common_metadata`` holds the table's unified schema, rewritten
before any file that adds or widens a column (layout.py)."""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.core.batch import BatchId, Ledger
from ingest.sinks.identity import ColumnRefused, TableNames, fold, normalise_columns
from ingest.sinks.parquet import layout
from ingest.sinks.parquet.layout import BATCH_PREFIX, LANDED_SUFFIX, SETTLED_SUFFIX
from ingest.sinks.partitioning import PartitionKey, partition_path, split_partitions, with_partition_columns
from ingest.sinks.sql import RunningQuery, query_arrow, quote_identifier, sandbox

log = logging.getLogger("ingest.sinks.parquet")


@dataclass
class _Table:
    schema: pa.Schema  # the table's unified schema, as _common_metadata holds it
    keys: tuple[PartitionKey, ...]  # the table's partition keys
    saved: bool  # _common_metadata holds `schema`


class ParquetSink:
    name = "parquet"

    def __init__(self, root: Path, partition_keys: tuple[PartitionKey, ...] = ()):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.partition_keys = tuple(partition_keys)
        self._sequence = itertools.count()
        self._started = time.strftime("%Y%m%dT%H%M%S")
        self.tables = TableNames(sorted(p.name for p in root.iterdir() if p.is_dir()))
        self._tables: dict[str, _Table] = {}
        self._schema_lock = threading.Lock()  # writes of several tables (or batches of one) run at once
        self._compacted: dict[str, set[BatchId]] = {}  # table -> ids held by compacted files (ledger())
        for directory in (p for p in root.iterdir() if p.is_dir()):
            if layout.roll_forward(directory):  # a compaction stopped between its rename and its unlinks
                log.info("table %s: removed files a compacted file already holds", directory.name)
            if layout.remove_unlanded(directory):  # replayed from the log, perhaps batched otherwise
                log.info("table %s: removed the partition files of batches that had not all landed", directory.name)

    def resolve_table(self, table: str) -> str:
        """The table's name as the sink spells it (case-insensitive)."""
        return self.tables.resolve(table)

    def _table(self, table: str, directory: Path) -> _Table:
        """The table's schema and partitioning: _common_metadata, else its files' footers, else new."""
        state = self._tables.get(table)
        if state is None:
            saved = layout.read_common_metadata(directory)
            if saved is not None:
                schema, partition_by = saved
                names = {fold(n) for n in partition_by}
                keys = tuple(k for k in self.partition_keys if fold(k.name) in names)
                if len(keys) != len(partition_by):
                    log.warning("table %s is partitioned by %s; --partition-by %s does not apply to it",
                                table, partition_by, ",".join(map(str, self.partition_keys)))
                    keys = tuple(PartitionKey(n) for n in partition_by) if not keys else keys
                state = _Table(schema, keys, True)
            elif layout.data_files(directory):  # written before _common_metadata: unpartitioned
                state = _Table(layout.footer_schema(directory), (), False)
            else:
                state = _Table(pa.schema([]), self.partition_keys, False)
            self._tables[table] = state
        return state

    def _landed(self, directory: Path, batch_id: BatchId, partitioned: bool) -> bool:
        if partitioned:
            if (directory / layout.marker_name(batch_id, LANDED_SUFFIX)).exists():
                return True
        elif (directory / f"{BATCH_PREFIX}{batch_id}.parquet").exists():
            return True
        return batch_id in self._compacted.get(directory.name, ())

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        table = self.tables.resolve(table)
        directory = self.root / table
        if not directory.is_dir():
            with self._schema_lock:
                self._tables.pop(table, None)  # deleted under the server: its _common_metadata too
            directory.mkdir(parents=True, exist_ok=True)  # the root too, should it have been deleted
        with self._schema_lock:
            keys = self._table(table, directory).keys
        if batch_id is not None and self._landed(directory, batch_id, bool(keys)):
            return False
        if keys:
            batch = with_partition_columns(batch, keys)
        with self._schema_lock:
            state = self._table(table, directory)
            batch = normalise_columns(batch, {fold(n): n for n in state.schema.names})
            schema, changed = state.schema, not state.saved
            for field in batch.schema:
                schema, widened = layout.unify(schema, field)
                changed = changed or widened
            if changed:  # before the file: a reader using _common_metadata never meets a column it lacks
                layout.write_common_metadata(directory, schema, [self._spelling(schema, k) for k in keys])
                state.schema, state.saved = schema, True
            batch = layout.conform(batch, schema)
            partition_names = [self._spelling(schema, k) for k in keys]
        name = f"{BATCH_PREFIX}{batch_id}.parquet" if batch_id is not None else \
            f"{self._started}-{os.getpid()}-{next(self._sequence):08d}.parquet"
        for values, part in split_partitions(batch, partition_names):
            target = directory / partition_path(partition_names, values) if partition_names else directory
            target.mkdir(parents=True, exist_ok=True)
            temporary = target / f".{name}.tmp"
            pq.write_table(pa.Table.from_batches([part]), temporary, compression="zstd")
            os.replace(temporary, target / name)  # a replay rewrites the same names: idempotent
        if keys and batch_id is not None:
            (directory / layout.marker_name(batch_id, LANDED_SUFFIX)).touch()
        return True

    @staticmethod
    def _spelling(schema: pa.Schema, key: PartitionKey) -> str:
        """The partition column's name as the table spells it."""
        return next((n for n in schema.names if fold(n) == fold(key.name)), key.name)

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        table = self.tables.resolve(table)
        (self.root / table / layout.marker_name(batch_id, SETTLED_SUFFIX)).touch()

    def ledger(self, log: str = "") -> Ledger:
        """Unpartitioned batches' file names, partitioned batches' landed
        markers, settled markers, and the ids compacted files hold."""
        ids = []
        compacted: dict[str, set[BatchId]] = {}
        for directory in (p for p in self.root.iterdir() if p.is_dir()):
            table = directory.name
            for path in directory.iterdir():
                batch_id = (layout.batch_file_id(path.name) or layout.marker_id(path.name, LANDED_SUFFIX)
                            or layout.marker_id(path.name, SETTLED_SUFFIX))
                if batch_id is not None:
                    ids.append((table, batch_id))
            for data_directory in layout.data_directories(directory):
                for path in layout.data_files(data_directory):
                    if path.name.startswith(layout.COMPACTED_PREFIX):
                        held, _ = layout.compacted_metadata(path)
                        compacted.setdefault(table, set()).update(held)
                        ids.extend((table, batch_id) for batch_id in held)
        self._compacted = compacted
        return Ledger.from_ids(ids, log)

    @staticmethod
    def is_data_error(exc: BaseException) -> bool:
        """Arrow refused the values; an OSError (disk full, a missing
        directory) is worth retrying instead."""
        return isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ColumnRefused))

    @staticmethod
    def is_environment_error(exc: BaseException) -> bool:
        """No space, an I/O error, permission, a missing or blocked directory
        (Arrow's I/O errors are OSErrors too)."""
        return isinstance(exc, OSError)

    def query(self, sql: str, running: RunningQuery | None = None, max_bytes: int | None = None) -> pa.Table:
        return query_directory(self.root, sql, running, max_bytes)

    def close(self) -> None:
        pass


def query_directory(root: Path, sql: str, running: RunningQuery | None = None,
                    max_bytes: int | None = None) -> pa.Table:
    """SQL over every table directory under `root`, each exposed as a view.
    View names are case-insensitive: directories whose names differ only in
    case are one view, named as the first of them in sorted order."""
    root = root.resolve()  # the views and the sandbox's allowed directory name the same absolute path
    con = duckdb.connect(":memory:")
    try:
        views: dict[str, list[Path]] = {}
        if root.is_dir():
            for directory in sorted(p for p in root.iterdir() if p.is_dir()):
                if any(layout.data_files(d) for d in layout.data_directories(directory)):
                    views.setdefault(fold(directory.name), []).append(directory)
        for directories in views.values():
            patterns = ", ".join("'" + str(d / "**" / "*.parquet").replace("'", "''") + "'" for d in directories)
            partitioned = any(len(layout.data_directories(d)) > 1 for d in directories)
            con.execute(
                f"CREATE VIEW {quote_identifier(directories[0].name)} AS "
                f"SELECT * FROM read_parquet([{patterns}], union_by_name = true"
                f"{', hive_partitioning = true' if partitioned else ', hive_partitioning = false'})"
            )
        sandbox(con, (str(root).rstrip("/") + "/",))  # the views read the tables' files, and nothing else
        return query_arrow(con, sql, running, max_bytes)
    finally:
        con.close()


__all__ = ["ParquetSink", "query_directory"]
