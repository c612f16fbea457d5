"""POST /v1/query is read-only and sandboxed, on both sinks: what an
adversarial run did through it, each refused, and ingestion unharmed."""
from __future__ import annotations

import json
import os
import socket
import threading

import pytest

NDJSON = {"Content-Type": "application/x-ndjson"}


class CountingListener:
    """A loopback socket that counts the connections made to it."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture
def listener():
    listener = CountingListener()
    yield listener
    listener.sock.close()


def query(server, sql: str):
    status, _, payload = server.http("POST", "/v1/query", sql.encode(), {"Content-Type": "text/plain"})
    return status, payload


REFUSED = [
    "SELECT * FROM read_csv('/etc/shadow')",
    "SELECT * FROM read_text('/proc/self/cmdline')",
    "SELECT * FROM read_blob('/proc/self/environ')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM read_json_auto('http://{listener}/x.json')",
    "SELECT * FROM duckdb_secrets()",
    "COPY (SELECT 1) TO '/tmp/ingest-sandbox-escape.csv'",
    "COPY events TO '/tmp/ingest-sandbox-escape.csv'",
    "EXPORT DATABASE '/tmp/ingest-sandbox-export'",
    "ATTACH '/tmp/ingest-sandbox.duckdb' AS other",
    "INSTALL httpfs FROM 'http://{listener}/'",
    "LOAD httpfs",
    "SET threads = 1",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA threads = 1",
    "CALL pragma_version()",
    "DELETE FROM _ingest_ledger",
    "DELETE FROM events",
    "DROP TABLE events",
    "UPDATE events SET n = 0",
    "INSERT INTO events VALUES (1)",
    "CREATE TABLE stolen AS SELECT 1",
    "ALTER TABLE events ADD COLUMN x INT",
    "CREATE MACRO m() AS 1",
    "CHECKPOINT",
    "BEGIN TRANSACTION",
    "EXPLAIN ANALYZE DELETE FROM events",
    "SELECT 1; DELETE FROM events",
    "SELECT * FROM query('DELETE FROM events')",
]


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_statements_that_reach_outside_or_change_anything_are_refused(start_server, sink, listener):
    server = start_server("--sink", sink, "--flush-interval", 20)
    body = b"".join(b'{"n":%d}\n' % i for i in range(10))
    assert server.http("POST", "/v1/ingest/events?wait=flushed", body, NDJSON)[0] == 200
    threads = server.query("SELECT current_setting('threads') AS t").to_pylist()
    for sql in REFUSED:
        status, payload = query(server, sql.format(listener=f"127.0.0.1:{listener.port}"))
        assert status in (400, 403), (sql, status, payload)
        assert "refused" in json.loads(payload)["error"] or status == 400, (sql, payload)
    assert listener.connections == 0, "the server fetched a URL a query named"
    for path in ("/tmp/ingest-sandbox-escape.csv", "/tmp/ingest-sandbox.duckdb", "/tmp/ingest-sandbox-export"):
        assert not os.path.exists(path), path
    # nothing changed: the settings, the table, its ledger; and ingestion still lands
    assert server.query("SELECT current_setting('threads') AS t").to_pylist() == threads
    assert server.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 10}]
    assert server.http("POST", "/v1/ingest/events?wait=flushed", body, NDJSON)[0] == 200
    assert server.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 20}]
    if sink == "duckdb":
        assert server.query("SELECT count(*) AS n FROM _ingest_ledger").to_pylist()[0]["n"] >= 2
    counts = server.assert_accounted()["events"]
    assert counts["dead_lettered"] == 0
    assert server.stop() == 0


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_reads_still_work(start_server, sink):
    server = start_server("--sink", sink, "--flush-interval", 20)
    body = b"".join(b'{"n":%d,"k":"%s"}\n' % (i, b"ab"[i % 2:i % 2 + 1]) for i in range(10))
    assert server.http("POST", "/v1/ingest/events?wait=flushed", body, NDJSON)[0] == 200
    assert server.query("SELECT sum(n) AS s FROM events").to_pylist() == [{"s": 45}]
    assert server.query("WITH x AS (SELECT k, count(*) AS c FROM events GROUP BY k) "
                        "SELECT * FROM x ORDER BY k").to_pylist() == [{"k": "a", "c": 5}, {"k": "b", "c": 5}]
    assert server.query("FROM events SELECT max(n) AS m").to_pylist() == [{"m": 9}]
    assert server.query("SELECT * FROM events ORDER BY n LIMIT 1").num_rows == 1
    assert server.query("DESCRIBE events").num_rows == 2
    status, payload = query(server, "SELECT * FROM no_such_table")
    assert status == 400 and "no_such_table" in json.loads(payload)["error"]
    assert server.stop() == 0


def test_a_query_past_its_timeout_is_interrupted_and_answered_408(start_server):
    server = start_server("--query-timeout", 1)
    status, payload = query(server, "SELECT count(*) FROM range(1000000000000) a WHERE a.range % 7 = 3")
    assert status == 408 and "--query-timeout" in json.loads(payload)["error"], payload
    assert server.query("SELECT 42 AS n").to_pylist() == [{"n": 42}]
    assert server.http("POST", "/v1/ingest/events?wait=flushed", b'{"a":1}\n', NDJSON)[0] == 200
    assert server.stop() == 0


def test_a_result_past_its_cap_is_refused(start_server):
    server = start_server("--max-query-bytes", 100_000)
    status, payload = query(server, "SELECT range AS n FROM range(1000000)")
    assert status == 400 and "--max-query-bytes" in json.loads(payload)["error"]
    assert server.query("SELECT count(*) AS n FROM range(1000000)").to_pylist() == [{"n": 1000000}]
    assert server.stop() == 0
