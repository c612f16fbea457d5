"""Load generators for `ingest bench`, each one its own process:

    python -m ingest.bench.clients '{"transport": "tcp", "host": ..., ...}'

A client reads its share of the corpus file, builds every payload, connects,
prints ``ready`` and waits for ``go`` on stdin, so that preparing is never
timed and all clients start together. Then it sends, and writes what it
measured to ``result`` (JSON) and, for HTTP, every request's round trip to
``result + ".latency"`` (float64 seconds). Times are CLOCK_MONOTONIC, the same
clock in every process, so the runner can line them up with its own.

An HTTP client drives `connections` keep-alive connections from one
process (a selector waits on all of them), each with up to `pipeline`
requests in flight: pipeline 1 is what real clients do, one request, wait for
its answer, the next. It speaks to ingest (POST /v1/ingest/...) and to
ClickHouse (POST /?query=INSERT ...) alike: only the request target differs.

An HTTP request answered 429 (memory budget) or 503 is sent again after its
Retry-After, as a well-behaved client would; its round trip then runs from
its first attempt to its 200.

Standard library only: a client starts in milliseconds and leaves the CPU to
the server.
"""
from __future__ import annotations

import heapq
import json
import re
import selectors
import socket
import sys
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass

CURVE_RESOLUTION = 0.001  # seconds: events sent are summed per millisecond
RECV_BYTES = 1 << 16
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")
RETRY_AFTER = re.compile(rb"(?i)\r\nretry-after:[ \t]*(\d+)")
CHUNKED = re.compile(rb"(?i)\r\ntransfer-encoding:[ \t]*chunked")
RETRY_STATUSES = (429, 503)


@dataclass(frozen=True)
class ClientSpec:
    transport: str  # "tcp" or "http"
    host: str
    port: int
    path: str  # HTTP: the request target, e.g. /v1/ingest/events?wait=none; TCP: "" (nothing names the table)
    corpus: str  # NDJSON file
    start: int  # byte offset of this client's first line
    end: int  # byte offset just past its last line
    batch: int  # events per send() call (TCP) or per request (HTTP)
    connections: int  # HTTP keep-alive connections this process drives (TCP: one)
    pipeline: int  # HTTP requests in flight on each connection (1 = no pipelining)
    result: str  # where to write the JSON result

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def payloads(spec: ClientSpec) -> tuple[list[bytes], list[int], int]:
    """The chunks this client sends (TCP: NDJSON; HTTP: whole requests), the
    number of events in each, and the NDJSON bytes in all of them."""
    with open(spec.corpus, "rb") as f:
        f.seek(spec.start)
        data = f.read(spec.end - spec.start)
    lines = data.splitlines(keepends=True)
    bodies = [b"".join(lines[i:i + spec.batch]) for i in range(0, len(lines), spec.batch)]
    counts = [min(spec.batch, len(lines) - i) for i in range(0, len(lines), spec.batch)]
    if spec.transport == "http":
        head = (
            f"POST {spec.path} HTTP/1.1\r\n"
            f"Host: {spec.host}:{spec.port}\r\n"
            "Content-Type: application/x-ndjson\r\nContent-Length: "
        ).encode()
        bodies = [head + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]
    return bodies, counts, len(data)


def connect(spec: ClientSpec) -> socket.socket:
    sock = socket.create_connection((spec.host, spec.port), timeout=300)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one send() is one segment, as a logger's would be
    return sock


def wait_for_go(sockets: list[socket.socket]) -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        for sock in sockets:
            sock.close()
        raise SystemExit("ingest bench client: told to stop before starting")


class EventCurve:
    """Events summed per millisecond: [(time, events), ...] for the runner to
    line up against the landed counts."""

    def __init__(self):
        self._events: dict[int, int] = {}

    def add(self, when: float, events: int) -> None:
        tick = int(when / CURVE_RESOLUTION)
        self._events[tick] = self._events.get(tick, 0) + events

    def points(self) -> list[tuple[float, int]]:
        return [(tick * CURVE_RESOLUTION, events) for tick, events in sorted(self._events.items())]


def run_tcp(spec: ClientSpec, chunks: list[bytes], counts: list[int]) -> dict:
    sock = connect(spec)
    wait_for_go([sock])
    clock, sendall = time.monotonic, sock.sendall
    curve = EventCurve()
    first = clock()
    for chunk, events in zip(chunks, counts):
        sendall(chunk)
        curve.add(clock(), events)
    last = clock()
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return {"first_send": first, "last_send": last, "finished": clock(), "events": sum(counts),
            "requests": len(chunks), "retried": 0, "curve": curve.points(), "acked_curve": None, "statuses": {},
            "first_error": None}


def response_bounds(pending: bytearray, position: int) -> tuple[int, int] | None:
    """(end of the head, end of the whole response) of the HTTP response that
    starts at `position`, or None while it is incomplete. The body is framed by
    Content-Length (ingest) or chunked (ClickHouse)."""
    head_end = pending.find(b"\r\n\r\n", position)
    if head_end < 0:
        return None
    end = head_end + 4
    length = CONTENT_LENGTH.search(pending, position, head_end + 2)
    if length:
        end += int(length.group(1))
    elif CHUNKED.search(pending, position, head_end + 2):
        while True:  # chunk-size CRLF data CRLF ..., until the zero-size chunk (no trailers)
            line_end = pending.find(b"\r\n", end)
            if line_end < 0:
                return None
            size = int(bytes(pending[end:line_end]).split(b";")[0], 16)
            end = line_end + 2 + size + 2
            if size == 0 or end > len(pending):
                break
    return (head_end, end) if end <= len(pending) else None


class Connection:
    """One keep-alive connection and its requests in flight, oldest first: the
    server answers in order, so the oldest owns the next response."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.in_flight: deque = deque()  # (request, sent at)
        self.pending = bytearray()  # received, not yet a whole response


def run_http(spec: ClientSpec, requests: list[bytes], counts: list[int]) -> dict:
    """`connections` keep-alive connections sharing this client's requests,
    each with up to `pipeline` requests in flight; one selector waits on all."""
    connections = [Connection(connect(spec)) for _ in range(max(1, spec.connections))]
    wait_for_go([connection.sock for connection in connections])
    selector = selectors.DefaultSelector()
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    clock = time.monotonic
    total, window = len(requests), max(1, spec.pipeline)
    to_send: deque = deque(range(total))
    retry_at: list[tuple[float, int]] = []  # heap of (when, request) refused with 429/503
    first_sent = array("d", bytes(8 * total))
    latencies = array("d")
    statuses: dict[int, int] = {}
    sent_curve, acked_curve = EventCurve(), EventCurve()
    first_error, answered, retried, in_flight = None, 0, 0, 0
    first = clock()
    while answered < total:
        now = clock()
        while retry_at and retry_at[0][0] <= now:
            to_send.appendleft(heapq.heappop(retry_at)[1])
        for connection in connections:
            room = window - len(connection.in_flight)
            if not to_send or room <= 0:
                continue
            batch = [to_send.popleft() for _ in range(min(len(to_send), room))]
            connection.sock.sendall(requests[batch[0]] if len(batch) == 1 else b"".join(requests[n] for n in batch))
            in_flight += len(batch)
            for n in batch:
                connection.in_flight.append((n, now))
                if not first_sent[n]:
                    first_sent[n] = now
        if not in_flight:  # everything left waits for its Retry-After
            time.sleep(max(0.0, retry_at[0][0] - clock()))
            continue
        for key, _ in selector.select(max(0.0, retry_at[0][0] - now) if retry_at else None):
            connection = key.data
            data = connection.sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionError(f"server closed a connection after {answered} of {total} responses")
            pending = connection.pending
            pending += data
            position = 0
            while (bounds := response_bounds(pending, position)) is not None:
                head_end, end = bounds
                now = clock()
                request, sent_at = connection.in_flight.popleft()
                in_flight -= 1
                status = int(pending[position + 9:position + 12])
                statuses[status] = statuses.get(status, 0) + 1
                if status in RETRY_STATUSES:
                    delay = RETRY_AFTER.search(pending, position, head_end + 2)
                    heapq.heappush(retry_at, (now + (int(delay.group(1)) if delay else 1), request))
                    retried += 1
                else:
                    latencies.append(now - first_sent[request])
                    sent_curve.add(sent_at, counts[request])
                    acked_curve.add(now, counts[request])
                    answered += 1
                    if not 200 <= status < 300 and first_error is None:
                        body = bytes(pending[head_end + 4:end])[:300].decode("utf-8", "replace")
                        first_error = f"HTTP {status}: {body}"
                position = end
            del pending[:position]
    last = clock()
    selector.close()
    for connection in connections:
        connection.sock.close()
    with open(spec.result + ".latency", "wb") as f:
        latencies.tofile(f)
    return {"first_send": first, "last_send": last, "finished": last, "events": sum(counts),
            "requests": total, "retried": retried, "curve": sent_curve.points(), "acked_curve": acked_curve.points(),
            "statuses": statuses, "first_error": first_error}


def main(argv: list[str]) -> int:
    spec = ClientSpec(**json.loads(argv[0]))
    chunks, counts, nbytes = payloads(spec)
    run = run_tcp if spec.transport == "tcp" else run_http
    result = run(spec, chunks, counts)
    result["bytes"] = nbytes
    with open(spec.result, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
