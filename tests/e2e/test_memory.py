"""Memory stays within the budget (--max-buffer-bytes) whatever the inputs
do: bodies being received count against it, query results are capped
(--max-query-bytes), and TCP and HTTP share the room under overload."""
import http.client
import json
import threading

import pytest
from conftest import poll
from test_faults import process_memory

from ingest.testing.corpus import ndjson

MARGIN = 64 << 20  # encoder output, socket buffers, allocator slack (as in test_faults)


def post_concurrently(server, table: str, bodies: list[bytes], headers: dict) -> list[tuple[int, dict, bytes]]:
    """Sends every request's headers first, then all the bodies at once, so
    the server has every body in flight together; the answers in order."""
    connections = []
    for body in bodies:
        conn = http.client.HTTPConnection(server.host, server.http_port, timeout=120)
        conn.putrequest("POST", f"/v1/ingest/{table}")
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders()
        connections.append(conn)
    answers = [None] * len(bodies)

    def send(i):
        try:
            connections[i].send(bodies[i])
            response = connections[i].getresponse()
            answers[i] = (response.status, dict(response.getheaders()), response.read())
        finally:
            connections[i].close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_large_bodies_are_refused_before_they_are_read_beyond_the_budget(start_server):
    budget = 16 << 20
    server = start_server("--max-buffer-bytes", budget, "--max-body-bytes", 32 << 20, "--flush-interval", 50)
    server.http("GET", "/metrics")  # warm up what a scrape loads before the baseline
    baseline = process_memory(server.proc.pid, "VmRSS")
    body = ndjson(60_000)  # about 12 MB: one fits in the budget, two do not
    assert budget // 2 < len(body) < budget
    answers = post_concurrently(server, "big", [body] * 12, {"Content-Type": "application/x-ndjson"})
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) >= 1 and set(statuses) == {200, 429}, statuses
    for status, headers, payload in answers:
        if status == 429:
            assert headers["Retry-After"] == "1" and "memory budget" in json.loads(payload)["error"]
    assert process_memory(server.proc.pid, "VmHWM") - baseline < budget + MARGIN
    accepted = statuses.count(200) * 60_000
    server.wait_landed("big", accepted)
    assert server.stats()["buffer_bytes"] == 0  # every reservation was given back
    assert server.assert_accounted()["big"]["received"] == accepted
    assert server.stop() == 0


def test_a_body_larger_than_the_whole_budget_is_413_and_gzip_counts_its_inflated_size(start_server):
    budget = 1 << 20
    server = start_server("--max-buffer-bytes", budget)
    status, reply = server.ingest("t", ndjson(8000))  # about 1.6 MB: it could never fit
    assert status == 413 and "--max-buffer-bytes" in reply["error"]
    status, reply = server.ingest("t", ndjson(8000), gzipped=True)  # a small body that inflates past the budget
    assert status == 413 and "--max-buffer-bytes" in reply["error"]
    assert server.ingest("t", ndjson(100), gzipped=True)[0] == 200
    server.wait_landed("t", 100)
    assert server.stats()["buffer_bytes"] == 0
    assert server.stop() == 0


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_a_query_result_over_the_cap_is_refused_with_a_clear_error_and_memory_stays_bounded(start_server, sink):
    cap = 8 << 20
    server = start_server("--sink", sink, "--max-query-bytes", cap)
    server.query("SELECT 1")  # warm up what a query loads before the baseline
    baseline = process_memory(server.proc.pid, "VmRSS")
    big = "SELECT range AS n, repeat('x', 100) AS pad FROM range(4000000)"  # about 450 MB in Arrow
    status, _, payload = server.http("POST", "/v1/query", big.encode(), {"Content-Type": "text/plain"})
    assert status == 400 and "--max-query-bytes" in json.loads(payload)["error"]
    assert process_memory(server.proc.pid, "VmHWM") - baseline < cap + MARGIN
    small = server.query("SELECT count(*) AS n, max(length(pad)) AS w FROM (SELECT repeat('x', 100) AS pad FROM range(50000))")
    assert small.to_pylist() == [{"n": 50000, "w": 100}]
    assert server.query("SELECT range AS n FROM range(200000)").num_rows == 200000  # many batches, under the cap
    assert server.stop() == 0


def test_tcp_and_http_past_the_budget_share_the_room(start_server):
    # The sink takes about 10,000 events/s; TCP alone offers far more, and HTTP pushes too.
    server = start_server("--batch-events", 1000, "--flush-interval", 50, "--sink-delay-ms", 100,
                          "--max-buffer-bytes", 2 << 20)
    tcp_events, request_events = 20_000, 100
    tcp_in = threading.Event()  # the server has read every TCP event
    tcp = threading.Thread(target=server.send_tcp, args=(ndjson(tcp_events),))
    answers = {200: 0, 429: 0}

    def send_http(worker):
        conn = http.client.HTTPConnection(server.host, server.http_port, timeout=60)
        body = ndjson(request_events, start=10_000_000 * (worker + 1))
        while not tcp_in.is_set():
            conn.request("POST", "/v1/ingest/web", body, {"Content-Type": "application/x-ndjson"})
            response = conn.getresponse()
            response.read()
            answers[response.status] += 1
            if response.status == 429:
                tcp_in.wait(0.05)  # a client's pause before it retries, shorter than Retry-After
        conn.close()

    tcp.start()
    poll(lambda: server.stats()["inputs_paused"] >= 1, what="the TCP input to be paused")
    senders = [threading.Thread(target=send_http, args=(i,)) for i in range(2)]
    for sender in senders:
        sender.start()
    server.wait_received("events", tcp_events)
    tcp_in.set()
    for sender in senders + [tcp]:
        sender.join(timeout=60)
    accepted_over_http = answers[200] * request_events
    assert answers[429] >= 1  # both were past the budget
    # While TCP got its 20,000 events in, HTTP must have had a fair part of the room too.
    assert accepted_over_http >= tcp_events // 5, answers
    server.wait_landed("events", tcp_events)
    server.wait_landed("web", accepted_over_http)
    server.assert_accounted()
    assert server.stop() == 0
