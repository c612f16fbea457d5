"""The sandbox at the database level, beneath the read-only check: what
gets past a statement check is still refused by DuckDB itself."""
from __future__ import annotations

import socket

import duckdb
import pyarrow as pa
import pytest

from ingest.core.ports import QueryRefused
from ingest.sinks.sql import check_read_only, query_arrow, sandbox


@pytest.fixture
def database(tmp_path):
    con = duckdb.connect(str(tmp_path / "sandboxed.duckdb"))
    con.execute("CREATE TABLE t (a INTEGER)")
    sandbox(con)
    yield con
    con.close()


def test_the_sink_still_writes_arrow_batches_and_checkpoints(database):
    database.register("batch", pa.record_batch({"a": pa.array([1, 2], pa.int32())}))
    database.execute("INSERT INTO t SELECT * FROM batch")
    database.unregister("batch")
    database.execute("CHECKPOINT")
    assert database.execute("SELECT count(*) FROM t").fetchone() == (2,)


@pytest.mark.parametrize("sql", [
    "INSTALL httpfs FROM 'http://127.0.0.1:{port}/'", "LOAD httpfs", "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('http://127.0.0.1:{port}/x')", "COPY t TO '{tmp}/out.csv'", "ATTACH '{tmp}/x.duckdb'",
    "SET enable_external_access = true", "SET threads = 1",
])
def test_the_database_refuses_what_a_statement_check_might_miss(database, sql, tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    cursor = database.cursor()
    with pytest.raises((QueryRefused, duckdb.Error)):
        query_arrow(cursor, sql.format(port=server.getsockname()[1], tmp=tmp_path))
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody connected
    server.close()
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize("sql", ["DELETE FROM t", "SELECT 1; SELECT 2", "PRAGMA version", "CALL pragma_version()",
                                 "EXPLAIN ANALYZE DELETE FROM t", "DROP TABLE t", "SET threads = 1"])
def test_only_one_select_passes_the_read_only_check(sql):
    with pytest.raises(QueryRefused):
        check_read_only(sql)


@pytest.mark.parametrize("sql", ["SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x", "FROM t", "DESCRIBE t",
                                 "SHOW TABLES", "VALUES (1)", "SELECT * FROM"])
def test_reads_pass_the_read_only_check(sql):
    check_read_only(sql)  # a parse error ("SELECT * FROM") is left for the query to report
