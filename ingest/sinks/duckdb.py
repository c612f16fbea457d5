"""DuckDB sink: one table per ingest table in DIR/ingest.duckdb, created and
altered to follow the encoder's schema; each batch lands in one transaction."""
from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.sinks.base import duckdb_type, query_arrow, quote_identifier

BATCH_VIEW = "__ingest_batch"
DATA_ERRORS = (duckdb.ConstraintException, duckdb.ConversionException, duckdb.TypeMismatchException,
               duckdb.OutOfRangeException)


class DuckDBSink:
    name = "duckdb"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = duckdb.connect(str(path))
        self._lock = threading.Lock()  # one writer: the connection is not shared between threads
        self._columns: dict[str, dict[str, str]] = {}  # table -> column -> DuckDB type
        for table, column, data_type in self._con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
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

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        with self._lock:
            con = self._con
            ddl = self._evolve(table, batch.schema)
            con.execute("BEGIN TRANSACTION")
            try:
                for statement in ddl:
                    con.execute(statement)
                con.register(BATCH_VIEW, batch)
                con.execute(f"INSERT INTO {quote_identifier(table)} BY NAME SELECT * FROM {BATCH_VIEW}")
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

    @staticmethod
    def is_data_error(exc: BaseException) -> bool:
        """The rows themselves were refused (a constraint, a conversion): retrying
        the same rows cannot help, bisecting them can."""
        return isinstance(exc, DATA_ERRORS)

    def query(self, sql: str) -> pa.Table:
        cursor = self._con.cursor()  # its own connection to the same database: safe beside the writer
        try:
            return query_arrow(cursor, sql)
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
