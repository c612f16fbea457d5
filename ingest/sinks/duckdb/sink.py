"""DuckDB sink: one table per ingest table in DIR/ingest.duckdb, created and
altered to follow the encoder's schema; each batch lands in one transaction,
together with its id in the `_ingest_ledger` table."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.core.batch import LOG_SEPARATOR, BatchId, Ledger
from ingest.sinks.sql import RunningQuery, duckdb_type, query_arrow, quote_identifier, sandbox
from ingest.sinks.identity import ColumnRefused, TableNames, fold, normalise_columns

BATCH_VIEW = "__ingest_batch"
LEDGER = "_ingest_ledger"  # batch ids landed, written in the same transaction as their rows
# the rows, or DDL made from their keys, were refused: bisection isolates the events
DATA_ERRORS = (duckdb.ConstraintException, duckdb.ConversionException, duckdb.TypeMismatchException,
               duckdb.OutOfRangeException, duckdb.CatalogException, duckdb.BinderException, duckdb.ParserException,
               ColumnRefused)
ENVIRONMENT_ERRORS = (OSError, duckdb.IOException, duckdb.PermissionException)
# DuckDB reports a failed file operation inside other errors too, e.g. a full
# disk as "TransactionContext Error: Failed to commit: Could not write file ...".
FILE_FAILURE = re.compile(r"Could not (?:open|read|write|create|sync|truncate|set lock on|move)|No space left|"
                          r"Input/output error|Permission denied|Read-only file system|quota exceeded", re.IGNORECASE)


class DuckDBSink:
    name = "duckdb"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = duckdb.connect(str(path))
        self._lock = threading.Lock()  # one writer: the connection is not shared between threads
        self._columns: dict[str, dict[str, str]] = {}  # table -> column -> DuckDB type
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER} (table_name VARCHAR, batch_id VARCHAR, first_lsn BIGINT,"
            " last_lsn BIGINT, whole BOOLEAN, row_count BIGINT, landed_at TIMESTAMPTZ DEFAULT current_timestamp,"
            " PRIMARY KEY (table_name, batch_id))"
        )
        self._load_columns()
        self.tables = TableNames(self._columns)
        sandbox(self._con)  # queries run on cursors of this database: no files, no network, settings locked

    def _load_columns(self, table: str | None = None) -> None:
        """The cache of the tables' columns, (re)read from the catalog."""
        query = ("SELECT table_name, column_name, data_type FROM information_schema.columns"
                 f" WHERE table_schema = 'main' AND table_name <> '{LEDGER}'")
        if table is None:
            self._columns.clear()
            rows = self._con.execute(query + " ORDER BY table_name, ordinal_position").fetchall()
        else:
            self._columns.pop(table, None)
            rows = self._con.execute(query + " AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()
        for name, column, data_type in rows:
            self._columns.setdefault(name, {})[column] = data_type

    def resolve_table(self, table: str) -> str:
        """The table's name as the sink spells it (case-insensitive)."""
        return self.tables.resolve(table)

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

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        table = self.tables.resolve(table)
        with self._lock:
            con = self._con
            if table not in self._columns:
                self._load_columns(table)  # new, or its cache was dropped after a failure
            known = self._columns.get(table, {})
            batch = normalise_columns(batch, {fold(name): name for name in known})
            ddl = self._evolve(table, batch.schema)
            con.execute("BEGIN TRANSACTION")
            try:
                if batch_id is not None and self._has(table, batch_id):
                    con.execute("ROLLBACK")
                    return False
                for statement in ddl:
                    con.execute(statement)
                con.register(BATCH_VIEW, batch)
                con.execute(f"INSERT INTO {quote_identifier(table)} BY NAME SELECT * FROM {BATCH_VIEW}")
                if batch_id is not None:
                    self._record(table, batch_id, batch.num_rows)
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # a failed COMMIT has already ended the transaction
                try:
                    self._load_columns(table)  # any DDL was rolled back: the cache follows the catalog
                except duckdb.Error:
                    self._columns.pop(table, None)
                raise
            finally:
                con.unregister(BATCH_VIEW)  # after ROLLBACK: an aborted transaction refuses it
            if ddl:
                self._load_columns(table)
            return True

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        table = self.tables.resolve(table)
        with self._lock:
            if not self._has(table, batch_id):
                self._record(table, batch_id, None)

    def ledger(self, log: str = "") -> Ledger:
        # an import's ids begin with their log's name; the write-ahead log's are digits only
        where, parameters = ("batch_id LIKE ?", [f"{log}{LOG_SEPARATOR}%"]) if log else (
            "batch_id NOT LIKE ?", [f"%{LOG_SEPARATOR}%"])
        with self._lock:
            rows = self._con.execute(f"SELECT table_name, batch_id FROM {LEDGER} WHERE {where}", parameters).fetchall()
        return Ledger.from_ids(((table, BatchId.parse(text)) for table, text in rows), log)

    def _has(self, table: str, batch_id: BatchId) -> bool:
        return bool(self._con.execute(
            f"SELECT 1 FROM {LEDGER} WHERE table_name = ? AND batch_id = ?", [table, str(batch_id)]
        ).fetchall())

    def _record(self, table: str, batch_id: BatchId, rows: int | None) -> None:
        self._con.execute(
            f"INSERT INTO {LEDGER} (table_name, batch_id, first_lsn, last_lsn, whole, row_count) VALUES (?, ?, ?, ?, ?, ?)",
            [table, str(batch_id), batch_id.first_lsn, batch_id.last_lsn, batch_id.whole, rows],
        )

    @staticmethod
    def is_data_error(exc: BaseException) -> bool:
        """The rows themselves were refused (a constraint, a conversion): retrying
        the same rows cannot help, bisecting them can."""
        return isinstance(exc, DATA_ERRORS)

    @staticmethod
    def is_environment_error(exc: BaseException) -> bool:
        """A full disk, an I/O error, permission, a locked file: the same rows
        can land once the store is back."""
        return isinstance(exc, ENVIRONMENT_ERRORS) or (
            isinstance(exc, duckdb.Error) and bool(FILE_FAILURE.search(str(exc))))

    def query(self, sql: str, running: RunningQuery | None = None, max_bytes: int | None = None) -> pa.Table:
        cursor = self._con.cursor()  # its own connection to the same database: safe beside the writer
        try:
            return query_arrow(cursor, sql, running, max_bytes)
        finally:
            cursor.close()

    def close(self) -> None:
        with self._lock:
            self._con.execute("CHECKPOINT")
            self._con.close()


def query_file(path: Path, sql: str) -> pa.Table:
    """Query a DuckDB file that no server holds open."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return query_arrow(con, sql)
    finally:
        con.close()
