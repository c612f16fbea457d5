"""SIGTERM ends within the grace even while queries run; a query whose client
has gone is interrupted. A real server subprocess on loopback."""
import socket
import threading

import pytest
from conftest import poll

GRACE = 10
# about 10^12 rows: runs far longer than any test unless it is interrupted
ENDLESS = b"SELECT sum(a.range * b.range) AS s FROM range(1000000) a, range(1000000) b"


def running_queries(server) -> float:
    return server.metrics()[("ingest_queries_running", frozenset())]


def send_query(server, sql: bytes) -> socket.socket:
    sock = socket.create_connection((server.host, server.http_port))
    sock.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(sql), sql))
    return sock


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_sigterm_interrupts_a_running_query_and_stops_within_the_grace(start_server, sink):
    server = start_server("--sink", sink, "--shutdown-grace", GRACE)
    assert server.ingest("t", b'{"a":1}\n')[0] == 200
    server.wait_landed("t", 1)
    answer = []
    with send_query(server, ENDLESS) as sock:
        reader = threading.Thread(target=lambda: answer.append(sock.makefile("rb").read()))
        reader.start()
        poll(lambda: running_queries(server) == 1, what="the query to run")
        assert server.stop(timeout=GRACE) == 0
        reader.join(timeout=GRACE)
    assert not (server.data_dir / "server.json").exists()
    assert answer and answer[0].startswith(b"HTTP/1.1 503") and b"shutting down" in answer[0], answer
    assert "query interrupted: the server is shutting down" in server.log()
    assert server.query_after_stop("SELECT count(*) AS n FROM t") == [{"n": 1}]


def test_a_query_whose_client_went_away_is_interrupted(start_server):
    server = start_server()
    # as many endless queries as the server runs at once: both are abandoned by their clients
    clients = [send_query(server, ENDLESS) for _ in range(2)]
    poll(lambda: running_queries(server) == 2, what="both queries to run")
    for sock in clients:
        sock.close()
    poll(lambda: running_queries(server) == 0, what="the abandoned queries to be interrupted")
    assert server.query("SELECT 42 AS x").to_pylist() == [{"x": 42}]
    assert server.log().count("query interrupted: its client went away") == 2
    assert server.stop(timeout=GRACE) == 0
