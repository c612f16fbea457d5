"""DuckDB sink: one table per ingest table in DIR/ingest.duckdb, created and
altered to follow the encoder's schema; each batch lands in one transaction,
together with its id in the `_ingest_ledger` table.

Each table writes through its own cursor (a connection to the same database)
under its own lock, so one table's slow batch does not hold up the others:
DuckDB runs their transactions concurrently (appends, and ledger rows with
different keys, do not conflict). A table's writes stay one at a time."""
from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.sinks.base import BatchId, Ledger, duckdb_type, query_arrow, quote_identifier

BATCH_VIEW = "__ingest_batch"
LEDGER = "_ingest_ledger"  # batch ids landed, written in the same transaction as their rows
DATA_ERRORS = (duckdb.ConstraintException, duckdb.ConversionException, duckdb.TypeMismatchException,
               duckdb.OutOfRangeException)


class DuckDBSink:
    name = "duckdb"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = duckdb.connect(str(path))
        self._lock = threading.Lock()  # guards the main connection and the dicts below
        self._writers: dict[str, tuple[threading.Lock, duckdb.DuckDBPyConnection]] = {}  # table -> its lock, cursor
        self._columns: dict[str, dict[str, str]] = {}  # table -> column -> DuckDB type
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER} (table_name VARCHAR, batch_id VARCHAR, first_lsn BIGINT,"
            " last_lsn BIGINT, whole BOOLEAN, row_count BIGINT, landed_at TIMESTAMPTZ DEFAULT current_timestamp,"
            " PRIMARY KEY (table_name, batch_id))"
        )
        for table, column, data_type in self._con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            f" WHERE table_schema = 'main' AND table_name <> '{LEDGER}' ORDER BY table_name, ordinal_position"
        ).fetchall():
            self._columns.setdefault(table, {})[column] = data_type

    def _evolve(self, table: str, schema: pa.Schema) -> list[str]:
        """DDL that makes `table` accept `schema`: create it, add new columns,
        widen BIGINT columns that became DOUBLE."""
        known = self._columns.get(table)
        wanted = {f.name: duckdb_type(f) for f in schema}
        if known is None:
            columns = ", ".join(f"{quote_identifier(n)} {t}" for n, t in wanted.items())
            return [f"CREATE TABLE IF NOT EXISTS {quote_identifier(table)} ({columns})"]
        ddl = []
        for name, data_type in wanted.items():
            have = known.get(name)
            if have is None:
                ddl.append(f"ALTER TABLE {quote_identifier(table)} ADD COLUMN {quote_identifier(name)} {data_type}")
            elif have != data_type and (have, data_type) == ("BIGINT", "DOUBLE"):
                ddl.append(f"ALTER TABLE {quote_identifier(table)} ALTER {quote_identifier(name)} TYPE DOUBLE")
        return ddl

    def _writer(self, table: str) -> tuple[threading.Lock, duckdb.DuckDBPyConnection]:
        with self._lock:
            writer = self._writers.get(table)
            if writer is None:
                writer = self._writers[table] = (threading.Lock(), self._con.cursor())
            return writer

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        lock, con = self._writer(table)
        with lock:
            ddl = self._evolve(table, batch.schema)
            con.execute("BEGIN TRANSACTION")
            try:
                if batch_id is not None and self._has(con, table, batch_id):
                    con.execute("ROLLBACK")
                    return False
                for statement in ddl:
                    con.execute(statement)
                con.register(BATCH_VIEW, batch)
                con.execute(f"INSERT INTO {quote_identifier(table)} BY NAME SELECT * FROM {BATCH_VIEW}")
                if batch_id is not None:
                    self._record(con, table, batch_id, batch.num_rows)
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # a failed COMMIT has already ended the transaction
                raise
            finally:
                con.unregister(BATCH_VIEW)  # after ROLLBACK: an aborted transaction refuses it
            if ddl:
                columns = self._columns.setdefault(table, {})
                for field in batch.schema:
                    columns[field.name] = duckdb_type(field)
            return True

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        lock, con = self._writer(table)
        with lock:
            if not self._has(con, table, batch_id):
                self._record(con, table, batch_id, None)

    def ledger(self) -> Ledger:
        with self._lock:
            rows = self._con.execute(f"SELECT table_name, batch_id FROM {LEDGER}").fetchall()
        return Ledger.from_ids((table, BatchId.parse(text)) for table, text in rows)

    @staticmethod
    def _has(con, table: str, batch_id: BatchId) -> bool:
        return bool(con.execute(
            f"SELECT 1 FROM {LEDGER} WHERE table_name = ? AND batch_id = ?", [table, str(batch_id)]
        ).fetchall())

    @staticmethod
    def _record(con, table: str, batch_id: BatchId, rows: int | None) -> None:
        con.execute(
            f"INSERT INTO {LEDGER} (table_name, batch_id, first_lsn, last_lsn, whole, row_count) VALUES (?, ?, ?, ?, ?, ?)",
            [table, str(batch_id), batch_id.first_lsn, batch_id.last_lsn, batch_id.whole, rows],
        )

    @staticmethod
    def is_data_error(exc: BaseException) -> bool:
        """The rows themselves were refused (a constraint, a conversion): retrying
        the same rows cannot help, bisecting them can."""
        return isinstance(exc, DATA_ERRORS)

    def query(self, sql: str, max_bytes: int | None = None) -> pa.Table:
        cursor = self._con.cursor()  # its own connection to the same database: safe beside the writer
        try:
            return query_arrow(cursor, sql, max_bytes)
        finally:
            cursor.close()

    def close(self) -> None:
        with self._lock:
            for lock, cursor in self._writers.values():
                with lock:
                    cursor.close()
            self._writers.clear()
            self._con.execute("CHECKPOINT")
            self._con.close()


def query_file(path: Path, sql: str) -> pa.Table:
    """Query a DuckDB file that no server holds open."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return query_arrow(con, sql)
    finally:
        con.close()
