"""Memory stays within the budget (--max-buffer-bytes) whatever the inputs
do: bodies being received count against it, query results are capped
(--max-query-bytes), and TCP and HTTP share the room under overload."""
import http.client
import json
import threading

from conftest import poll
from test_faults import process_memory

from ingest.corpus import ndjson

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
