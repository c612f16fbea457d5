"""Load generators for `ingest bench`, each one its own process:

    python -m ingest.bench.clients '{"transport": "tcp", "host": ..., ...}'

A client reads its share of the corpus file, builds every payload, connects,
prints ``ready`` and waits for ``go`` on stdin, so that preparing is never
timed and all clients start together. Then it sends, and writes what it
measured to ``result`` (JSON) and, for HTTP, every request's round trip to
``result + ".latency"`` (float64 seconds). Times are CLOCK_MONOTONIC, the same
clock in every process, so the runner can line them up with its own.

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
RETRY_STATUSES = (429, 503)


@dataclass(frozen=True)
class ClientSpec:
    transport: str  # "tcp" or "http"
    host: str
    port: int
    table: str  # HTTP: the table in the URL; TCP: the server's --tcp-table (not sent)
    wait: str | None  # HTTP: the ack mode asked for (?wait=none|received|flushed); None: the server's default
    corpus: str  # NDJSON file
    start: int  # byte offset of this client's first line
    end: int  # byte offset just past its last line
    batch: int  # events per send() call (TCP) or per request (HTTP)
    pipeline: int  # HTTP requests in flight on the connection (1 = no pipelining)
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
            f"POST /v1/ingest/{spec.table}{f'?wait={spec.wait}' if spec.wait else ''} HTTP/1.1\r\n"
            f"Host: {spec.host}:{spec.port}\r\n"
            "Content-Type: application/x-ndjson\r\nContent-Length: "
        ).encode()
        bodies = [head + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]
    return bodies, counts, len(data)


def wait_for_go(sock: socket.socket) -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sock.close()
        raise SystemExit("ingest bench client: told to stop before starting")


class SentCurve:
    """Events sent, summed per millisecond: [(time, events), ...] for the
    runner to line up against the landed counts."""

    def __init__(self):
        self._events: dict[int, int] = {}

    def add(self, when: float, events: int) -> None:
        tick = int(when / CURVE_RESOLUTION)
        self._events[tick] = self._events.get(tick, 0) + events

    def points(self) -> list[tuple[float, int]]:
        return [(tick * CURVE_RESOLUTION, events) for tick, events in sorted(self._events.items())]


def run_tcp(spec: ClientSpec, chunks: list[bytes], counts: list[int]) -> dict:
    sock = socket.create_connection((spec.host, spec.port), timeout=300)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one send() is one segment, as a logger's would be
    wait_for_go(sock)
    clock, sendall = time.monotonic, sock.sendall
    curve = SentCurve()
    first = clock()
    for chunk, events in zip(chunks, counts):
        sendall(chunk)
        curve.add(clock(), events)
    last = clock()
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return {"first_send": first, "last_send": last, "finished": clock(), "events": sum(counts),
            "requests": len(chunks), "retried": 0, "curve": curve.points(), "statuses": {}, "first_error": None}


def run_http(spec: ClientSpec, requests: list[bytes], counts: list[int]) -> dict:
    """Keep-alive, with up to `pipeline` requests in flight; the server answers
    in order, so the oldest request in flight owns the next response."""
    sock = socket.create_connection((spec.host, spec.port), timeout=300)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    wait_for_go(sock)
    clock, sendall, recv = time.monotonic, sock.sendall, sock.recv
    total, window = len(requests), max(1, spec.pipeline)
    to_send: deque = deque(range(total))
    retry_at: list[tuple[float, int]] = []  # heap of (when, request) refused with 429/503
    first_sent = array("d", bytes(8 * total))
    in_flight: deque = deque()  # (request, sent at)
    latencies = array("d")
    statuses: dict[int, int] = {}
    curve = SentCurve()
    first_error, answered, retried = None, 0, 0
    pending = bytearray()
    first = clock()
    while answered < total:
        now = clock()
        while retry_at and retry_at[0][0] <= now:
            to_send.appendleft(heapq.heappop(retry_at)[1])
        if to_send and len(in_flight) < window:
            batch = [to_send.popleft() for _ in range(min(len(to_send), window - len(in_flight)))]
            sendall(requests[batch[0]] if len(batch) == 1 else b"".join(requests[n] for n in batch))
            for n in batch:
                in_flight.append((n, now))
                if not first_sent[n]:
                    first_sent[n] = now
        if not in_flight:  # everything left waits for its Retry-After
            time.sleep(max(0.0, retry_at[0][0] - clock()))
            continue
        data = recv(RECV_BYTES)
        if not data:
            raise ConnectionError(f"server closed the connection after {answered} of {total} responses")
        pending += data
        position = 0
        while True:
            head_end = pending.find(b"\r\n\r\n", position)
            if head_end < 0:
                break
            match = CONTENT_LENGTH.search(pending, position, head_end + 2)
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if end > len(pending):
                break
            now = clock()
            request, sent_at = in_flight.popleft()
            status = int(pending[position + 9:position + 12])
            statuses[status] = statuses.get(status, 0) + 1
            if status in RETRY_STATUSES:
                delay = RETRY_AFTER.search(pending, position, head_end + 2)
                heapq.heappush(retry_at, (now + (int(delay.group(1)) if delay else 1), request))
                retried += 1
            else:
                latencies.append(now - first_sent[request])
                curve.add(sent_at, counts[request])
                answered += 1
                if not 200 <= status < 300 and first_error is None:
                    first_error = f"HTTP {status}: {bytes(pending[head_end + 4:end])[:300].decode('utf-8', 'replace')}"
            position = end
        del pending[:position]
    last = clock()
    sock.close()
    with open(spec.result + ".latency", "wb") as f:
        latencies.tofile(f)
    return {"first_send": first, "last_send": last, "finished": last, "events": sum(counts),
            "requests": total, "retried": retried, "curve": curve.points(), "statuses": statuses,
            "first_error": first_error}


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
