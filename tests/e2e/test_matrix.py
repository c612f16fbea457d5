"""The core cases on every variant of the server: {compiled, pure-Python}
hot path x {uvloop, asyncio}, through the `variant` fixture. Each case lives
here once; the rest of tests/e2e runs on the compiled hot path and uvloop."""
import re
import socket
import threading

from conftest import poll
from test_delivery import post
from test_wal import logged_then_killed

from ingest.cli import run_query
from ingest.testing.corpus import ndjson


def test_tcp_round_trip_lands_every_event_with_types(start_variant_server, variant):
    server = start_variant_server("--batch-events", 50)
    assert server.stats()["hot_path"] == {"buffer": variant.implementation, "encoder": variant.implementation}
    server.send_tcp(ndjson(120))
    server.wait_received("events", 120)
    assert server.stop() == 0

    table = run_query(server.data_dir, "SELECT count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi FROM events")
    assert table.to_pylist() == [{"n": 120, "ids": 120, "lo": 0, "hi": 119}]
    types = {
        row["column_name"]: row["data_type"]
        for row in run_query(server.data_dir, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'").to_pylist()
    }
    assert types["id"] == "BIGINT"
    assert types["amount"] == "DOUBLE"
    assert types["ok"] == "BOOLEAN"
    assert types["event"] == "VARCHAR"
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["context"] == "JSON"
    row = run_query(server.data_dir, "SELECT context->>'plan' AS plan, coupon FROM events WHERE id = 1").to_pylist()
    assert row == [{"plan": "pro", "coupon": None}]


def test_wait_flushed_answers_after_the_rows_are_queryable(start_variant_server):
    server = start_variant_server("--flush-interval", 60_000, "--batch-events", 1_000_000)
    status, headers, reply = post(server, "/v1/ingest/orders?wait=flushed&timeout=60",
                                  b'{"id":1,"total":9.5}\n{"id":2,"total":3}\nnot json\n')
    # the batch only seals by age after a minute: wait=flushed must not wait for that
    assert status == 200 and reply["status"] == "landed" and reply["landed"] == 2 and reply["rejected"] == 1
    assert headers["Ingest-Receipt"] == reply["receipt"]
    assert server.query("SELECT id, total FROM orders ORDER BY id").to_pylist() == [
        {"id": 1, "total": 9.5}, {"id": 2, "total": 3.0}]
    assert server.stop() == 0


def test_pipelined_requests_are_answered_in_order(start_variant_server):
    server = start_variant_server()
    requests = b"".join(
        b"POST /v1/ingest/pipe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        for body in (b'{"a":1}\n', b'{"a":2}\n{"a":3}\n', b"nope\n")
    ) + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((server.host, server.http_port)) as sock:
        sock.sendall(requests)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"200", b"400", b"200"]
    assert b'"accepted":2' in received and received.rstrip().endswith(b'{"status":"ok"}')
    assert server.stop() == 0


def test_a_slow_sink_pauses_tcp_and_refuses_http_then_everything_lands(start_variant_server):
    # about 1 MB over TCP against a 256 KB budget and a sink taking 5,000 events/s
    server = start_variant_server("--batch-events", 500, "--flush-interval", 20, "--sink-delay-ms", 100,
                                  "--max-buffer-bytes", 256 << 10)
    tcp_events = 5000
    tcp = threading.Thread(target=server.send_tcp, args=(ndjson(tcp_events),))
    tcp.start()
    poll(lambda: server.stats()["inputs_paused"] >= 1, what="the TCP input to be paused")
    statuses = []

    def refused() -> bool:
        status, reply = server.ingest("web", ndjson(10, start=10_000_000 + 10 * len(statuses)))
        statuses.append(status)
        return status == 429 and "memory budget" in reply["error"]

    poll(refused, what="a 429 while the budget is full")
    tcp.join(timeout=60)
    server.wait_landed("events", tcp_events)
    if 200 in statuses:  # requests before the one refused
        server.wait_landed("web", 10 * statuses.count(200))
    server.assert_accounted()
    assert server.stop() == 0


def test_buffered_events_are_replayed_after_kill_9(start_variant_server, tmp_path):
    data_dir = tmp_path / "data"
    logged_then_killed(start_variant_server, data_dir, (0, 100), (100, 100), (200, 100))
    server = start_variant_server("--flush-interval", 20, data_dir=data_dir)
    server.wait_landed("t", 300)
    assert server.query("SELECT count(DISTINCT id) AS n FROM t").to_pylist() == [{"n": 300}]
    assert "replayed 300 events" in server.log()
    assert server.stop() == 0
