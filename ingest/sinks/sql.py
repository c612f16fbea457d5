"""DuckDB SQL both sinks use: column types, quoted identifiers, and
queries that another thread can interrupt and whose result is capped."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import threading

import duckdb
import pyarrow as pa

from ingest.core.ports import QueryInterrupted, QueryRefused, QueryTooLarge
from ingest.schema import is_json_field


def quote_identifier(name: str) -> str:
    """A SQL identifier, quoted, for any column name a client sends."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_type(field: pa.Field) -> str:
    """The DuckDB column type for an encoded Arrow field."""
    t = field.type
    if is_json_field(field):
        return "JSON"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date32(t):
        return "DATE"
    if pa.types.is_list(t):
        return duckdb_type(t.value_field) + "[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{quote_identifier(f.name)} {duckdb_type(f)}" for f in t) + ")"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    raise TypeError(f"column {field.name!r}: no DuckDB type for Arrow type {t}")


class RunningQuery:
    """A query on a DuckDB connection in a worker thread, so that another
    thread can interrupt it. DuckDB forgets an interrupt that comes before
    the query has started, so whoever interrupts repeats it until the query
    has ended."""

    def __init__(self):
        self._lock = threading.Lock()
        self._connection = None
        self.reason = ""

    def interrupt(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason
            if self._connection is not None:
                self._connection.interrupt()

    @contextmanager
    def on(self, connection):
        with self._lock:
            if self.reason:
                raise QueryInterrupted(self.reason)
            self._connection = connection
        try:
            yield
        except duckdb.Error:
            if self.reason:
                raise QueryInterrupted(self.reason) from None
            raise
        finally:
            with self._lock:
                self._connection = None


# What a database that answers queries from the network may not do: reach files
# or URLs (read_csv('/etc/passwd'), COPY TO, ATTACH, INSTALL ... FROM 'http://'),
# fetch or load extensions, or have these settings changed back.
SANDBOX_SETTINGS = (
    # each query, and each write, runs on its calling thread only: a query thread runs at a lower CPU
    # priority than intake (ingest.server.app.yield_to_intake), which DuckDB's shared workers could not
    ("threads", 1),
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
    ("enable_external_access", False),
)


def sandbox(connection, allowed_directories: tuple[str, ...] = ()) -> None:
    """Locks a DuckDB database (every connection to it) away from files and
    the network, but for `allowed_directories` (each ending in "/"), and its
    configuration against changes. The database's own file, its WAL and its
    temporary files are still written, and Arrow data registered in memory
    is still read."""
    if allowed_directories:
        connection.execute("SET allowed_directories = ?", [list(allowed_directories)])
    for name, value in SANDBOX_SETTINGS:
        connection.execute(f"SET {name} = {str(value).lower() if isinstance(value, bool) else value}")
    connection.execute("SET lock_configuration = true")


def check_read_only(sql: str) -> None:
    """QueryRefused unless `sql` is one SELECT (SELECT, WITH, FROM-first,
    VALUES, DESCRIBE, SHOW, SUMMARIZE all parse as one); a parse error is
    left for the query itself to report."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return
    if len(statements) != 1:
        raise QueryRefused(f"send one statement, not {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"{kind.name} statements are not run here: the query endpoint is read-only "
                           "(SELECT only; no DDL, DML, SET, PRAGMA, COPY, ATTACH, INSTALL or LOAD)")


QUERY_BATCH_ROWS = 16_384  # rows fetched at a time when a result is capped


def query_arrow(connection, sql: str, running: RunningQuery | None = None, max_bytes: int | None = None) -> pa.Table:
    """Runs SQL on a DuckDB connection; the result as an Arrow table
    (empty for statements that return no rows). With `max_bytes`, the
    result is read in record batches and refused once it grows past it."""
    with running.on(connection) if running is not None else nullcontext():
        try:
            relation = connection.sql(sql)
            if relation is None:
                return pa.table({})
            if max_bytes is None:
                to_arrow = getattr(relation, "to_arrow_table", None) or relation.arrow  # DuckDB 2 renamed it
                return to_arrow()
            return read_capped(relation, max_bytes)
        except duckdb.PermissionException as exc:  # the sandbox: a file, a URL, an extension
            raise QueryRefused(str(exc)) from None


def read_capped(relation, max_bytes: int) -> pa.Table:
    """A DuckDB relation's result, fetched batch by batch; QueryTooLarge
    as soon as the batches read exceed `max_bytes`."""
    to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch  # DuckDB 2 renamed it
    reader = to_reader(QUERY_BATCH_ROWS)
    batches, size = [], 0
    try:
        for batch in reader:
            size += batch.nbytes
            if size > max_bytes:
                raise QueryTooLarge(f"the result is larger than {max_bytes} bytes (--max-query-bytes); select fewer "
                                    "rows or columns (LIMIT, WHERE) or aggregate")
            batches.append(batch)
    finally:
        reader.close()
    return pa.Table.from_batches(batches, reader.schema)


_parsing = threading.local()  # a connection per thread, to parse with (never to run)


def referenced_tables(sql: str) -> set[str]:
    """The tables a query names (CTE names left out), as it spells them;
    ValueError when it cannot be parsed. The parser's connection is in
    memory, holds no tables and cannot reach files or the network."""
    connection = getattr(_parsing, "connection", None)
    if connection is None:
        connection = _parsing.connection = duckdb.connect(":memory:")
        sandbox(connection)
    try:
        return set(connection.get_table_names(sql))
    except duckdb.Error as exc:
        raise ValueError(str(exc)) from None
