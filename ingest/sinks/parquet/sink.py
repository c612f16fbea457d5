"""Parquet sink: zstd files under DIR/parquet/{table}/, each batch one file,
written to a hidden temporary name and renamed, so readers globbing
``*.parquet`` only ever see whole files. With the write-ahead log on, a
file's name is its batch id, which is how a replayed batch is recognised."""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.core.batch import BatchId, Ledger
from ingest.sinks.sql import RunningQuery, query_arrow, quote_identifier, sandbox
from ingest.sinks.identity import ColumnRefused, TableNames, fold, normalise_columns

log = logging.getLogger("ingest.sinks.parquet")

BATCH_PREFIX = "batch-"  # batch-{first lsn}-{last lsn}[.{offset}+{rows}].parquet: the ledger is the file names


class ParquetSink:
    name = "parquet"

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._sequence = itertools.count()
        self._started = time.strftime("%Y%m%dT%H%M%S")
        self.tables = TableNames(sorted(p.name for p in root.iterdir() if p.is_dir()))
        self._columns: dict[str, dict[str, str]] = {}  # table -> folded name -> column name in its files
        self._columns_lock = threading.Lock()  # writes of several tables run at once

    def resolve_table(self, table: str) -> str:
        """The table's name as the sink spells it (case-insensitive)."""
        return self.tables.resolve(table)

    def _known_columns(self, table: str, directory: Path) -> dict[str, str]:
        """The table's column names, from its files' footers the first time."""
        with self._columns_lock:
            known = self._columns.get(table)
            if known is None:
                known = {}
                for path in sorted(directory.glob("*.parquet")):
                    try:
                        names = pq.read_schema(path).names
                    except (OSError, pa.ArrowException) as exc:
                        log.warning("table %s: cannot read the schema of %s: %s", table, path, exc)
                        continue
                    for name in names:
                        known.setdefault(fold(name), name)
                self._columns[table] = known
            return dict(known)

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        table = self.tables.resolve(table)
        directory = self.root / table
        directory.mkdir(parents=True, exist_ok=True)  # the root too, should it have been deleted
        batch = normalise_columns(batch, self._known_columns(table, directory))
        if batch_id is None:
            name = f"{self._started}-{os.getpid()}-{next(self._sequence):08d}.parquet"
        else:
            name = f"{BATCH_PREFIX}{batch_id}.parquet"
            if (directory / name).exists():
                return False
        temporary = directory / f".{name}.tmp"
        pq.write_table(pa.Table.from_batches([batch]), temporary, compression="zstd")
        os.replace(temporary, directory / name)
        with self._columns_lock:
            known = self._columns.setdefault(table, {})
            for column in batch.schema.names:
                known.setdefault(fold(column), column)
        return True

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        table = self.tables.resolve(table)
        (self.root / table / f".{BATCH_PREFIX}{batch_id}.settled").touch()

    def ledger(self) -> Ledger:
        ids = []
        for path in self.root.glob(f"*/{BATCH_PREFIX}*.parquet"):
            ids.append((path.parent.name, BatchId.parse(path.name[len(BATCH_PREFIX):-len(".parquet")])))
        for path in self.root.glob(f"*/.{BATCH_PREFIX}*.settled"):
            ids.append((path.parent.name, BatchId.parse(path.name[len(BATCH_PREFIX) + 1:-len(".settled")])))
        return Ledger.from_ids(ids)

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
                if any(directory.glob("*.parquet")):
                    views.setdefault(fold(directory.name), []).append(directory)
        for directories in views.values():
            patterns = ", ".join("'" + str(d / "*.parquet").replace("'", "''") + "'" for d in directories)
            con.execute(
                f"CREATE VIEW {quote_identifier(directories[0].name)} AS "
                f"SELECT * FROM read_parquet([{patterns}], union_by_name = true)"
            )
        sandbox(con, (str(root).rstrip("/") + "/",))  # the views read the tables' files, and nothing else
        return query_arrow(con, sql, running, max_bytes)
    finally:
        con.close()


__all__ = ["ParquetSink", "query_directory"]
