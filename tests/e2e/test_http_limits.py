"""Hostile HTTP clients, end to end through a real server subprocess: the
limits on a request's head, the timeouts, backpressure on answers and the
cap on open connections. Each refusal shows in ingest_refusals_total."""
from __future__ import annotations

import http.client
import json
import socket
import threading

from conftest import poll

from ingest.testing.corpus import ndjson


def refusals(server) -> dict:
    return {dict(labels)["reason"]: value for (name, labels), value in server.metrics().items()
            if name == "ingest_refusals_total"}


def connect(server, timeout=60) -> socket.socket:
    sock = socket.create_connection((server.host, server.http_port), timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class SteadyClient:
    """Lands events over one keep-alive connection while a test runs its attack."""

    def __init__(self, server, table: str):
        self.statuses: list[int] = []
        self.sent = 0
        self._stop = threading.Event()
        self._conn = http.client.HTTPConnection(server.host, server.http_port, timeout=60)
        self._conn.connect()  # before the attack: its slot is taken
        self._table = table
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self._conn.request("POST", f"/v1/ingest/{self._table}", body=ndjson(10, start=self.sent),
                               headers={"Content-Type": "application/x-ndjson"})
            response = self._conn.getresponse()
            response.read()
            self.statuses.append(response.status)
            self.sent += 10

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)
        self._conn.close()


def test_pipelined_requests_never_read_do_not_stall_other_connections(start_server):
    server = start_server()
    hog = connect(server)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 5000)  # and never reads a byte
    for _ in range(3):
        status, _, body = server.http("GET", "/health")
        assert status == 200
    assert server.ingest("t", ndjson(5))[0] == 200
    hog.close()
    assert server.stop() == 0


def test_pipelined_answers_come_in_order_past_the_pipelining_cap(start_server):
    server = start_server()
    with connect(server) as sock:
        count = 500
        sock.sendall(b"".join(b"POST /v1/ingest/p HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(line), line)
                              for line in (b'{"n":%d}\n' % i for i in range(count))))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK") == count + 1
    assert data.rstrip().endswith(b"}") and data.rfind(b"Connection: close") > data.rfind(b"Connection: keep-alive")
    server.wait_landed("p", count)
    assert sorted(r["n"] for r in server.query("SELECT n FROM p").to_pylist()) == list(range(count))
    assert server.stop() == 0


def test_a_huge_header_is_431_without_being_buffered(start_server):
    server = start_server()
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(1000):  # up to 64 MB; the server answers and closes long before
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"--max-header-bytes" in answer
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"--max-headers" in answer
    counted = refusals(server)
    assert counted["header_too_large"] == 1 and counted["too_many_headers"] == 1
    assert server.http("GET", "/health")[0] == 200
    assert server.stop() == 0


def test_a_url_over_the_limit_is_414(start_server):
    server = start_server("--max-url-bytes", 2000)
    for length in (3000, 70_000):  # the second is past what httptools can parse at all
        with connect(server) as sock:
            try:
                sock.sendall(b"GET /health?" + b"a" * length + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["error"].startswith("URL longer than 2000 bytes (--max-url-bytes)")
    assert refusals(server)["uri_too_long"] == 2
    assert server.http("GET", "/health?" + "a" * 1000)[0] == 200
    assert server.stop() == 0


def test_slowloris_connections_are_answered_408_and_closed_while_a_client_lands_events(start_server):
    server = start_server("--header-timeout", 1, "--idle-timeout", 600)
    with SteadyClient(server, "steady") as steady:
        trickling = [connect(server) for _ in range(100)]
        for sock in trickling:
            sock.sendall(b"POST /v1/ingest/t HTTP/1.1\r\n")
        closed = set()

        def all_closed():
            for i, sock in enumerate(trickling):
                if i in closed:
                    continue
                try:
                    sock.sendall(b"X")  # a header byte now and then
                except (BrokenPipeError, ConnectionResetError):
                    closed.add(i)
            return len(closed) == len(trickling)
        poll(all_closed, interval=0.5, what="every trickling connection closed")
        poll(lambda: steady.sent >= 50, what="the steady client landing events")
    answers = [read_until_closed(sock) for sock in trickling]
    for sock in trickling:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers if a)
    assert any(b"--header-timeout" in a for a in answers)
    assert set(steady.statuses) == {200}
    server.wait_landed("steady", steady.sent)
    assert refusals(server)["header_timeout"] >= 1
    assert server.stop() == 0


def test_idle_keep_alive_connections_are_closed_quietly(start_server):
    server = start_server("--idle-timeout", 1)
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until_closed(sock)  # the answer, then the close once the connection idles
    assert data.count(b"HTTP/1.1 ") == 1 and data.startswith(b"HTTP/1.1 200 ")
    with connect(server) as sock:  # connected, nothing sent
        assert read_until_closed(sock) == b""
    assert server.stop() == 0


def test_a_body_shorter_than_its_length_is_408_and_its_budget_given_back(start_server):
    server = start_server("--body-timeout", 1)
    with connect(server) as sock:
        sock.sendall(b"POST /v1/ingest/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b'{"n":1}\n' * 10)
        poll(lambda: server.stats()["buffer_bytes"] >= 100_000, what="the body's reservation")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"--body-timeout" in answer
    assert server.stats()["buffer_bytes"] == 0
    assert refusals(server)["body_timeout"] == 1
    assert server.stop() == 0


def test_connections_past_the_cap_are_refused_while_a_client_lands_events(start_server):
    cap = 20
    server = start_server("--max-connections", cap)
    with SteadyClient(server, "steady") as steady:
        held = [connect(server) for _ in range(cap - 1)]  # with the steady client's, the cap is reached
        for _ in range(50):
            with connect(server) as sock:
                answer = read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower(), answer[:200]
            with socket.create_connection((server.host, server.tcp_port), timeout=60) as sock:
                assert read_until_closed(sock) == b""
        poll(lambda: steady.sent >= 50, what="the steady client landing events")
        for sock in held:
            sock.close()
    assert set(steady.statuses) == {200}
    server.wait_landed("steady", steady.sent)
    assert refusals(server)["too_many_connections"] == 100
    log = server.log()
    assert "refused 503 http connection" in log and log.count("refused 503 http connection") < 50  # rate-limited
    assert server.stop() == 0
