"""Parquet sink: zstd files under DIR/parquet/{table}/, each batch one file,
written to a hidden temporary name and renamed, so readers globbing
``*.parquet`` only ever see whole files. With the write-ahead log on, a
file's name is its batch id, which is how a replayed batch is recognised."""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.sinks.base import BatchId, Ledger, query_arrow, quote_identifier


BATCH_PREFIX = "batch-"  # batch-{first lsn}-{last lsn}[.{offset}+{rows}].parquet: the ledger is the file names


class ParquetSink:
    name = "parquet"

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._sequence = itertools.count()
        self._started = time.strftime("%Y%m%dT%H%M%S")

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        directory = self.root / table
        directory.mkdir(exist_ok=True)
        if batch_id is None:
            name = f"{self._started}-{os.getpid()}-{next(self._sequence):08d}.parquet"
        else:
            name = f"{BATCH_PREFIX}{batch_id}.parquet"
            if (directory / name).exists():
                return False
        temporary = directory / f".{name}.tmp"
        pq.write_table(pa.Table.from_batches([batch]), temporary, compression="zstd")
        os.replace(temporary, directory / name)
        return True

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
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
        return isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError))

    def query(self, sql: str, max_bytes: int | None = None) -> pa.Table:
        return query_directory(self.root, sql, max_bytes)

    def close(self) -> None:
        pass


def query_directory(root: Path, sql: str, max_bytes: int | None = None) -> pa.Table:
    """SQL over every table directory under `root`, each exposed as a view."""
    con = duckdb.connect(":memory:")
    try:
        if root.is_dir():
            for directory in sorted(p for p in root.iterdir() if p.is_dir()):
                if not any(directory.glob("*.parquet")):
                    continue
                pattern = str(directory / "*.parquet").replace("'", "''")
                con.execute(
                    f"CREATE VIEW {quote_identifier(directory.name)} AS "
                    f"SELECT * FROM read_parquet('{pattern}', union_by_name = true)"
                )
        return query_arrow(con, sql, max_bytes)
    finally:
        con.close()


__all__ = ["ParquetSink", "query_directory"]
