"""Python client for the ingest HTTP API: batching, backpressure and retries.

    from ingest.client import Client

    with Client("http://127.0.0.1:7080") as client:
        client.send("clicks", {"user": "ada", "event": "login"})

`Client` ships from one background thread, `AsyncClient` from one asyncio
task; both take the same options and keep the same counters. `post()` is the
request-reply form (one request, the server's answer returned), and
`post_ndjson()` POSTs a prepared NDJSON body with the same retries, for tools
that build their own requests.

What the clients do with each answer of `POST /v1/ingest/{table}`:

| answer | what happens |
| --- | --- |
| 200, 202 | acknowledged; lines the server rejected (or dead-lettered, with `wait="flushed"`) become a `Failure` |
| 400 (no valid line) | a `Failure` holding the lines; not retried |
| 413 | the batch is split in half and each half sent on its own, down to one event; then a `Failure` |
| 429, 503 (`Retry-After`) | retried after the larger of `Retry-After` and the backoff; counted in `throttled` |
| 408, other 5xx, a cut connection | retried with backoff |
| 504 with `wait="flushed"` | the server has the events (in its write-ahead log) but did not commit them in time: counted as acknowledged and in `unflushed`, not resent |
| other 4xx | a `Failure`; not retried |

An answer that carries the ingest reply (`"accepted"` in its JSON) is the
server's word on the data and is never retried, whatever its status.

Every request carries an `Idempotency-Key` (a fresh uuid4 per batch) and every
retry of that batch the same key, so the server ingests a batch once even when
a connection is cut after it took the request. Backoff is full jitter:
`random.uniform(0, min(backoff_base * 2**attempt, backoff_max))`.
"""
from __future__ import annotations

import asyncio
import gzip as gzip_format
import http.client
import json
import logging
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

from ingest.backoff import full_jitter
from ingest.protocol import WAIT_MODES, table_name_problem

try:
    import orjson
except ImportError:  # orjson is optional: only faster
    orjson = None

__all__ = [
    "AsyncClient", "Client", "ClientClosed", "Failure", "FlushTimeout", "IngestError", "QueueFull", "RequestTooLarge",
    "RetryPolicy", "encode_event", "post_ndjson",
]

log = logging.getLogger("ingest.client")

DEFAULT_URL = "http://127.0.0.1:7080"
OVERFLOW_POLICIES = ("block", "drop", "raise")
NDJSON = "application/x-ndjson"
GZIP_LEVEL = 1  # the fastest level: a client's CPU matters more than the last few percent of bytes
RETRY_AFTER_STATUSES = (429, 503)
ABANDONED = "the client was closed before the server acknowledged these events"
# What a request can raise when the connection, not the server, failed: worth a retry.
CONNECTION_ERRORS = (OSError, EOFError, http.client.HTTPException)


class IngestError(Exception):
    """A request the server did not take, or that could not reach it. `status`
    is the last HTTP status (None when there was no answer), `reply` the
    server's JSON document when it sent one."""

    def __init__(self, message: str, status: int | None = None, reply: dict | None = None):
        super().__init__(message)
        self.status = status
        self.reply = reply


class RequestTooLarge(IngestError):
    """413, or a body over `max_request_bytes`: send fewer events per request."""


class FlushTimeout(IngestError):
    """504 for `wait="flushed"`: the server has the events and they will land,
    but they were not committed within the wait timeout. `reply` holds the
    receipt to poll."""


class QueueFull(Exception):
    """send() found `max_queue` events waiting (overflow="raise", or "block" past its timeout)."""


class ClientClosed(RuntimeError):
    """send() or flush() after close()."""


class _Abandoned(IngestError):
    """close() gave up on events still being retried."""


@dataclass(frozen=True)
class Failure:
    """Events that will not land through this client. `count` is how many;
    `events` holds the lines the client can name (all of them when the whole
    request failed, the listed ones when the server rejected some lines, none
    for events the server dead-lettered: find those in its dead-letter store)."""

    table: str
    count: int
    reason: str
    status: int | None = None  # the HTTP status, None when the server never answered
    events: list[bytes] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 8  # re-sends after the first attempt
    backoff_base: float = 0.1  # seconds
    backoff_max: float = 10.0  # seconds

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `attempt` (0 for the first): full jitter,
        but never less than the server asked for."""
        return max(full_jitter(attempt, self.backoff_base, self.backoff_max), retry_after or 0.0)


def encode_event(event) -> bytes:
    """One event as one NDJSON line, without its newline: a dict (or any JSON
    value) is serialised compactly, bytes or str are taken as JSON already."""
    if isinstance(event, (bytes, bytearray, memoryview)):
        line = bytes(event).rstrip(b"\r\n")
    elif isinstance(event, str):
        line = event.rstrip("\r\n").encode()
    elif orjson is not None:
        line = orjson.dumps(event)
    else:
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=_isoformat).encode()
    if not line:
        raise ValueError("an event cannot be empty")
    if b"\n" in line:
        raise ValueError("an event must be one line of JSON; this one holds a newline")
    return line


def _isoformat(value):
    """What orjson does with dates, so events serialise the same without it."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_table(table: str) -> None:
    problem = table_name_problem(table) if isinstance(table, str) else f"invalid table name {table!r}"
    if problem:
        raise ValueError(problem)


def _check_wait(wait: str) -> None:
    if wait not in WAIT_MODES:
        raise ValueError(f"wait must be one of {', '.join(WAIT_MODES)}, not {wait!r}")


# requests and responses


@dataclass(frozen=True)
class _Address:
    host: str
    port: int
    path: str  # a prefix before /v1/..., when the server sits behind a proxy

    @classmethod
    def parse(cls, url: str) -> _Address:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"server URL {url!r}: give it as http://HOST:PORT (the client speaks plain HTTP)")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class _Request:
    target: str  # path and query
    body: bytes
    headers: dict
    timeout: float  # seconds the whole exchange may take


def _ingest_request(path: str, table: str, body: bytes, *, wait: str, gzip: bool, wait_timeout: float,
                    timeout: float, key: str | None = None) -> _Request:
    """One POST /v1/ingest/{table}; `key` defaults to a fresh one, kept by every retry."""
    query = f"wait={wait}"
    if wait == "flushed":
        query += f"&timeout={wait_timeout:g}"
        timeout += wait_timeout  # the server may hold the answer that long
    headers = {"Content-Type": NDJSON, "Idempotency-Key": key or str(uuid.uuid4())}
    if gzip:
        body = gzip_format.compress(body, GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return _Request(f"{path}/v1/ingest/{table}?{query}", body, headers, timeout)


class _Response:
    """One HTTP answer; `reply` is the ingest reply document when the body is one."""

    __slots__ = ("status", "headers", "body", "reply")

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body
        self.reply = None
        if "json" in headers.get("content-type", ""):
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if isinstance(document, dict) and "accepted" in document:
                self.reply = document

    @property
    def final(self) -> bool:
        """Whether retrying could not change the outcome."""
        if self.reply is not None:
            return True  # the server's word on the data; a retry would replay it
        return not (self.status == 408 or self.status == 429 or self.status >= 500)

    @property
    def retry_after(self) -> float | None:
        try:
            return max(0.0, float(self.headers["retry-after"]))
        except (KeyError, ValueError):
            return None  # absent, or an HTTP date (our server sends seconds)

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed", "").lower() == "true"

    def describe(self) -> str:
        try:
            error = json.loads(self.body).get("error")
        except (ValueError, AttributeError):
            error = None
        return f"HTTP {self.status}: {error or self.body[:200].decode('utf-8', 'replace')}"


def _final_reply(table: str, response: _Response) -> dict:
    """post()'s answer: the ingest reply, or the error that explains why there is none."""
    reply = response.reply
    if reply is not None and response.status in (200, 202, 400):
        return reply
    raise {413: RequestTooLarge, 504: FlushTimeout}.get(response.status, IngestError)(
        f"POST /v1/ingest/{table}: {response.describe()}", response.status, reply)


# connections


class _HttpConnection:
    """A keep-alive connection on http.client; reconnects on the next request after an error."""

    def __init__(self, connection: http.client.HTTPConnection):
        self._connection = connection

    @classmethod
    def to(cls, address: _Address, timeout: float) -> _HttpConnection:
        return cls(http.client.HTTPConnection(address.host, address.port, timeout=timeout))

    def exchange(self, request: _Request) -> _Response:
        connection = self._connection
        connection.timeout = request.timeout
        if connection.sock is not None:
            connection.sock.settimeout(request.timeout)
        try:
            connection.request("POST", request.target, body=request.body, headers=request.headers)
            answer = connection.getresponse()
            return _Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
        except BaseException:
            connection.close()
            raise

    def interrupt(self) -> None:
        """Wakes a request blocked on the socket (from another thread)."""
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._connection.close()


class _AsyncConnection:
    """A keep-alive connection on asyncio streams: minimal HTTP/1.1, enough for
    our server's answers (which always carry Content-Length)."""

    def __init__(self, address: _Address):
        self._address = address
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: _Request) -> _Response:
        try:
            async with asyncio.timeout(request.timeout):
                return await self._exchange(request)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise ConnectionError(f"malformed HTTP response: {exc}") from None
        except BaseException:
            self.close()
            raise

    async def _exchange(self, request: _Request) -> _Response:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._address.host, self._address.port)
        reader, writer = self._streams
        head = [f"POST {request.target} HTTP/1.1", f"Host: {self._address.host_header}",
                f"Content-Length: {len(request.body)}", *(f"{k}: {v}" for k, v in request.headers.items())]
        writer.writelines([("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), request.body])
        await writer.drain()
        status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(f"status line {status_line!r}")
        headers = {}
        for line in filter(None, header_lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif "transfer-encoding" in headers:
            raise ValueError("a chunked answer (the ingest server sends Content-Length)")
        else:  # the body runs to the end of the connection
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return _Response(int(status), headers, body)

    def interrupt(self) -> None:
        if self._streams is not None:
            self._streams[1].transport.abort()

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class _Pool:
    """Idle keep-alive connections: the shipper and each concurrent post() use
    one of their own. list.append and list.pop are atomic, so threads may share it."""

    def __init__(self, connect: Callable):
        self._connect = connect
        self._idle: list = []
        self._closed = False

    def take(self):
        try:
            return self._idle.pop()
        except IndexError:
            return self._connect()

    def give(self, connection) -> None:
        if self._closed:
            connection.close()
        else:
            self._idle.append(connection)

    def close(self) -> None:
        self._closed = True
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break


# delivery: written once, as coroutines; the sync client runs them with
# blocking I/O behind the awaits, so they never suspend (see _run_blocking)


class _BlockingIO:
    def __init__(self, connection: _HttpConnection, abort: threading.Event | None = None):
        self.connection = connection
        self._abort = abort

    async def exchange(self, request: _Request) -> _Response:
        return self.connection.exchange(request)

    async def pause(self, seconds: float) -> bool:
        """Sleeps; False when the client is being closed and should give up."""
        if self._abort is None:
            time.sleep(seconds)
            return True
        return not self._abort.wait(seconds)


class _AsyncIO:
    def __init__(self, connection: _AsyncConnection, abort: asyncio.Event | None = None):
        self.connection = connection
        self._abort = abort

    async def exchange(self, request: _Request) -> _Response:
        return await self.connection.exchange(request)

    async def pause(self, seconds: float) -> bool:
        if self._abort is None:
            await asyncio.sleep(seconds)
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._abort.wait()
        except TimeoutError:
            return True
        return False


def _run_blocking(coroutine):
    """Runs a coroutine whose awaits all block instead of suspending (the
    _BlockingIO ones): how the sync client shares the async delivery code."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a blocking delivery tried to suspend")


class _Counters:
    """What both clients count. The shipper and post() callers update it from
    different threads, hence the lock."""

    def __init__(self):
        self._counters_lock = threading.Lock()
        self.acknowledged = 0  # events the server confirmed (as the wait mode says)
        self.unflushed = 0  # of those, events a flushed wait timed out on (504): durable, not yet committed
        self.failed_events = 0  # events in `failed`
        self.failed: list[Failure] = []
        self.retries = 0  # requests sent again
        self.throttled = 0  # 429 and 503 answers
        self.replayed = 0  # answers the server replayed for a repeated Idempotency-Key

    def _count(self, **amounts: int) -> None:
        with self._counters_lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


async def _send_until_final(request: _Request, policy: RetryPolicy, counters: _Counters, io) -> _Response:
    """Sends `request` (the same bytes, the same Idempotency-Key) until an answer
    that retrying cannot change; raises IngestError once retries run out."""
    attempt = 0
    while True:
        retry_after = status = None
        try:
            response = await io.exchange(request)
        except CONNECTION_ERRORS as exc:
            reason = f"cannot reach the server ({type(exc).__name__}: {exc})"
        else:
            if response.replayed:
                counters._count(replayed=1)
            if response.final:
                return response
            reason, status = response.describe(), response.status
            if status in RETRY_AFTER_STATUSES:
                counters._count(throttled=1)
                retry_after = response.retry_after
        if attempt >= policy.max_retries:
            raise IngestError(f"gave up after {attempt + 1} attempts; the last: {reason}", status)
        if not await io.pause(policy.delay(attempt, retry_after)):
            raise _Abandoned(ABANDONED)
        attempt += 1
        counters._count(retries=1)


def post_ndjson(target: str | http.client.HTTPConnection, table: str, body: bytes, *, wait: str = "received",
                gzip: bool = False, idempotency_key: str | None = None, wait_timeout: float = 30.0,
                retry: RetryPolicy = RetryPolicy(), timeout: float = 30.0) -> dict:
    """POSTs a prepared NDJSON body to `target` (a server URL, or an open
    http.client.HTTPConnection to reuse), retrying as the clients do, under
    one Idempotency-Key (fresh unless given). Returns the ingest reply (for
    200, 202 and 400); raises RequestTooLarge, FlushTimeout or IngestError."""
    _check_table(table)
    _check_wait(wait)
    owned = isinstance(target, str)
    if owned:
        address = _Address.parse(target)
        connection = _HttpConnection.to(address, timeout)
    else:
        address = _Address(target.host, target.port, "")
        connection = _HttpConnection(target)
    request = _ingest_request(address.path, table, body, wait=wait, gzip=gzip, wait_timeout=wait_timeout,
                              timeout=timeout, key=idempotency_key)
    delivery = _send_until_final(request, retry, _Counters(), _BlockingIO(connection))
    try:
        return _final_reply(table, _run_blocking(delivery))
    finally:
        if owned:
            connection.close()


# batching


class _Batch:
    __slots__ = ("table", "lines", "size", "opened", "settled")

    def __init__(self, table: str, opened: float):
        self.table = table
        self.lines: list[bytes] = []
        self.size = 0  # NDJSON bytes, newlines included
        self.opened = opened  # time.monotonic() of its first event
        self.settled = False  # acknowledged or failed


class _Batcher:
    """Each table's open batch, sealed at `max_events` events, `max_bytes`
    bytes or `max_age` seconds after its first event; then the sealed batches
    in the order they were sealed. Not thread-safe: the clients hold their lock."""

    def __init__(self, max_events: int, max_bytes: int, max_age: float, capacity: int):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.capacity = capacity
        self.added = 0  # events ever added
        self.pending = 0  # events added and not settled: what `capacity` bounds
        self._open: dict[str, _Batch] = {}
        self._sealed: deque[_Batch] = deque()
        self._unsettled: dict[_Batch, None] = {}  # sealed, shipping or waiting to (a dict keeps their order)

    def has_room(self) -> bool:
        return self.pending < self.capacity

    def add(self, table: str, line: bytes, now: float) -> bool:
        """Adds a line; True when the shipper should look again (a batch was
        sealed, or one was opened and its clock started)."""
        size = len(line) + 1
        batch = self._open.get(table)
        if batch is not None and batch.size + size > self.max_bytes:
            self._seal(table)
            batch = None
        opened = batch is None
        if opened:
            batch = self._open[table] = _Batch(table, now)
        batch.lines.append(line)
        batch.size += size
        self.added += 1
        self.pending += 1
        if len(batch.lines) >= self.max_events or batch.size >= self.max_bytes:
            self._seal(table)
            return True
        return opened

    def seal_due(self, now: float) -> float | None:
        """Seals the batches `max_age` old; seconds until the next is due (None: no batch is open)."""
        next_due = None
        for table, batch in list(self._open.items()):
            left = batch.opened + self.max_age - now
            if left <= 0:
                self._seal(table)
            elif next_due is None or left < next_due:
                next_due = left
        return next_due

    def seal_all(self) -> list[_Batch]:
        """Seals every open batch; returns every batch not yet settled."""
        for table in list(self._open):
            self._seal(table)
        return list(self._unsettled)

    def take(self) -> _Batch | None:
        return self._sealed.popleft() if self._sealed else None

    def settle(self, batch: _Batch) -> None:
        batch.settled = True
        self._unsettled.pop(batch, None)
        self.pending -= len(batch.lines)

    def abandon(self) -> list[_Batch]:
        """Settles and returns every batch left (the shipper has stopped)."""
        left = self.seal_all()
        self._sealed.clear()
        for batch in left:
            self.settle(batch)
        return left

    def _seal(self, table: str) -> None:
        batch = self._open.pop(table)
        self._sealed.append(batch)
        self._unsettled[batch] = None


_STOP = object()  # the shipper's last step


class _Shipper(_Counters):
    """What Client and AsyncClient share: options, the queue, serialising,
    delivery and the accounting of its outcome. The subclasses add the thread
    or the task, and the locking that goes with it."""

    def __init__(self, url: str = DEFAULT_URL, *, batch_events: int = 1000, batch_bytes: int = 1 << 20,
                 max_request_bytes: int = 8 << 20, flush_interval: float = 0.2, max_queue: int = 100_000,
                 overflow: str = "block", wait: str = "received", wait_timeout: float = 30.0, gzip: bool = False,
                 max_retries: int = 8, backoff_base: float = 0.1, backoff_max: float = 10.0, timeout: float = 30.0,
                 on_error: Callable[[Failure], None] | None = None):
        super().__init__()
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")
        _check_wait(wait)
        for name, value in (("batch_events", batch_events), ("batch_bytes", batch_bytes),
                            ("max_request_bytes", max_request_bytes), ("max_queue", max_queue)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        self._address = _Address.parse(url)
        self._batcher = _Batcher(batch_events, min(batch_bytes, max_request_bytes), flush_interval, max_queue)
        self._max_request_bytes = max_request_bytes
        self._overflow = overflow
        self._wait = wait
        self._wait_timeout = wait_timeout
        self._gzip = gzip
        self._policy = RetryPolicy(max_retries, backoff_base, backoff_max)
        self._timeout = timeout
        self._on_error = on_error
        self._tables: set[str] = set()  # names already checked
        self._closed = False
        self._current = None  # the shipper's connection while it sends, for close() to interrupt
        self.dropped = 0  # events refused by overflow="drop"
        self._setup()

    def _setup(self) -> None:
        raise NotImplementedError

    @property
    def sent(self) -> int:
        """Events queued by send(); each ends up acknowledged or failed."""
        return self._batcher.added

    @property
    def pending(self) -> int:
        """Events queued and not yet acknowledged or failed."""
        return self._batcher.pending

    # sending

    def _line(self, table: str, event) -> bytes:
        if table not in self._tables:
            _check_table(table)
            self._tables.add(table)
        line = encode_event(event)
        if len(line) + 1 > self._max_request_bytes:
            raise ValueError(f"an event of {len(line)} bytes for table {table!r} is over max_request_bytes "
                             f"({self._max_request_bytes}); make it smaller or raise the limit")
        return line

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the ingest client is closed")

    def _room_or_closed(self) -> bool:
        return self._closed or self._batcher.has_room()

    def _queue_full(self) -> QueueFull:
        return QueueFull(f"{self._batcher.pending} events are waiting to be sent (max_queue="
                         f"{self._batcher.capacity}): the server at {self._address.host_header} is slow or unreachable")

    def _refuse(self) -> bool:
        """The queue is full and overflow is not "block": drops the event or raises."""
        if self._overflow == "drop":
            self.dropped += 1
            return False
        raise self._queue_full()

    def _post_request(self, table: str, events: Iterable, wait: str | None) -> _Request:
        _check_wait(wait or self._wait)
        body = b"".join(self._line(table, event) + b"\n" for event in events)
        if len(body) > self._max_request_bytes:
            raise RequestTooLarge(f"{len(body)} bytes of events for table {table!r} are over max_request_bytes "
                                  f"({self._max_request_bytes}); post fewer at a time, or use send()")
        return self._request(table, body, wait or self._wait)

    def _request(self, table: str, body: bytes, wait: str) -> _Request:
        return _ingest_request(self._address.path, table, body, wait=wait, gzip=self._gzip,
                               wait_timeout=self._wait_timeout, timeout=self._timeout)

    # shipping

    def _next_step(self, aborted: bool):
        """Under the client's lock: the next batch to ship, else _STOP, else
        seconds until a batch is due (None: until something changes)."""
        if aborted:
            return _STOP
        if self._closed:
            self._batcher.seal_all()  # closing ships everything first
        due = self._batcher.seal_due(time.monotonic())
        batch = self._batcher.take()
        if batch is not None:
            return batch
        return _STOP if self._closed else due

    def _flushed(self) -> Callable[[], bool]:
        """Under the client's lock: seals every batch; the test for "all of them settled"."""
        batches = self._batcher.seal_all()
        return lambda: all(batch.settled for batch in batches)

    async def _deliver(self, table: str, lines: list[bytes], io) -> None:
        """Sends one batch until it is acknowledged or failed, halving it on 413."""
        request = self._request(table, b"\n".join(lines) + b"\n", self._wait)
        try:
            response = await _send_until_final(request, self._policy, self, io)
            if response.status != 413 or len(lines) == 1:
                return self._settle(table, lines, response)
        except IngestError as exc:
            return self._fail(table, lines, len(lines), str(exc), exc.status)
        except Exception as exc:  # a bug must neither stop the shipper nor lose count of the events
            log.exception("ingest client: delivering %d events to %r failed", len(lines), table)
            return self._fail(table, lines, len(lines), f"client error: {exc!r}", None)
        half = len(lines) // 2
        await self._deliver(table, lines[:half], io)
        await self._deliver(table, lines[half:], io)
        return None

    def _settle(self, table: str, lines: list[bytes], response: _Response) -> None:
        reply, status = response.reply, response.status
        if reply is None:
            if 200 <= status < 300:
                return self._count(acknowledged=len(lines))
            return self._fail(table, lines, len(lines), response.describe(), status)
        dead = reply.get("dead_lettered") or 0  # with wait=flushed: could not land
        confirmed = reply.get("accepted", 0) - dead
        self._count(acknowledged=confirmed, unflushed=confirmed if status == 504 else 0)
        rejected = reply.get("rejected") or 0
        if rejected:
            errors = [e for e in reply.get("errors", ())
                      if isinstance(e.get("line"), int) and 0 < e["line"] <= len(lines)]
            named = lines if rejected >= len(lines) else [lines[e["line"] - 1] for e in errors]
            first = f"; line {errors[0]['line']}: {errors[0].get('error')}" if errors else ""
            self._fail(table, named, rejected, f"the server rejected {rejected} of {len(lines)} events{first}", status)
        if dead:
            reasons = "; ".join(reply.get("reasons") or ()) or reply.get("error", "")
            self._fail(table, [], dead, f"the server dead-lettered {dead} events: {reasons}", status)
        return None

    def _fail(self, table: str, events: list[bytes], count: int, reason: str, status: int | None,
              quiet: bool = False) -> None:
        failure = Failure(table, count, reason, status, list(events))
        with self._counters_lock:
            self.failed.append(failure)
            self.failed_events += count
        if not quiet:
            log.warning("ingest client: %d events for table %r failed: %s", count, table, reason)
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:
                log.exception("ingest client: the on_error callback raised")

    def _abandon(self) -> None:
        """Under the client's lock, once the shipper stopped: fails what is left."""
        left = self._batcher.abandon()
        for batch in left:
            self._fail(batch.table, batch.lines, len(batch.lines), ABANDONED, None, quiet=True)
        if left:
            log.warning("ingest client: %d events failed: %s", sum(len(batch.lines) for batch in left), ABANDONED)


class Client(_Shipper):
    """Sends events to an ingest server in batches, from one background thread.

    Client(url="http://127.0.0.1:7080", *, batch_events=1000, batch_bytes=1<<20,
           max_request_bytes=8<<20, flush_interval=0.2, max_queue=100_000,
           overflow="block", wait="received", wait_timeout=30.0, gzip=False,
           max_retries=8, backoff_base=0.1, backoff_max=10.0, timeout=30.0,
           on_error=None)

    send(table, event) serialises the event and queues it. Each table's batch
    ships when it holds `batch_events` events or `batch_bytes` bytes, or
    `flush_interval` seconds after its first event. No request is larger than
    `max_request_bytes` (an event that alone is larger is refused by send()).

    The queue holds at most `max_queue` events, counted from send() until the
    server acknowledged them or they failed. When it is full, `overflow` says
    what send() does:
      "block": waits for room (up to send's `timeout`, then raises QueueFull);
      "drop":  drops the new event, returns False and counts it in `dropped`;
      "raise": raises QueueFull.

    `wait` is the server's ack mode: "none" (202 once parsed), "received"
    (durable in its write-ahead log) or "flushed" (committed in the sink; the
    server waits up to `wait_timeout` seconds, then answers 504, which counts
    as acknowledged and in `unflushed`: the events are durable and will land,
    and resending could only replay the same answer).

    Counters: `sent`, `acknowledged`, `pending`, `failed` (a list of Failure,
    each passed to `on_error` too, from the shipping thread), `failed_events`,
    `dropped`, `retries`, `throttled` (429/503 answers), `unflushed`,
    `replayed` (answers replayed for a retried Idempotency-Key). Once flushed,
    sent == acknowledged + failed_events.
    """

    def _setup(self) -> None:
        self._cond = threading.Condition()
        self._abort = threading.Event()
        address, timeout = self._address, self._timeout
        self._pool = _Pool(lambda: _HttpConnection.to(address, timeout))
        self._thread = threading.Thread(target=self._run, name="ingest-client", daemon=True)
        self._thread.start()

    def send(self, table: str, event, *, timeout: float | None = None) -> bool:
        """Queues one event (a dict, or bytes/str holding one JSON object);
        False when overflow="drop" dropped it. `timeout`: how long "block" waits."""
        line = self._line(table, event)
        with self._cond:
            self._check_open()
            if not self._batcher.has_room():
                if self._overflow != "block":
                    return self._refuse()
                if not self._cond.wait_for(self._room_or_closed, timeout):
                    raise self._queue_full()
                self._check_open()
            if self._batcher.add(table, line, time.monotonic()):
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every event sent before the call is acknowledged or
        failed; False if `timeout` seconds passed first."""
        with self._cond:
            flushed = self._flushed()
            self._cond.notify_all()
            return self._cond.wait_for(flushed, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Ships what is queued and stops the thread. After `timeout` seconds,
        what is still unsent fails (reason: the client was closed); returns
        False when that happened."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                self._cond.notify_all()
            current = self._current
            if current is not None:
                current.interrupt()
            self._thread.join()
        self._pool.close()
        return not self._abort.is_set()

    def post(self, table: str, events: Iterable, *, wait: str | None = None) -> dict:
        """Sends `events` in one request now, past the queue, and returns the
        server's reply ({"accepted", "rejected", "errors", "receipt"}, for 200,
        202 and 400); raises RequestTooLarge, FlushTimeout or IngestError."""
        request = self._post_request(table, events, wait)
        connection = self._pool.take()
        try:
            response = _run_blocking(_send_until_final(request, self._policy, self, _BlockingIO(connection)))
        finally:
            self._pool.give(connection)
        return _final_reply(table, response)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not _STOP:
            connection = self._current = self._pool.take()
            try:
                _run_blocking(self._deliver(batch.table, batch.lines, _BlockingIO(connection, self._abort)))
            finally:
                self._current = None
                self._pool.give(connection)
            with self._cond:
                self._batcher.settle(batch)
                self._cond.notify_all()
        with self._cond:
            self._abandon()
            self._cond.notify_all()

    def _next_batch(self):
        with self._cond:
            while not isinstance(step := self._next_step(self._abort.is_set()), _Batch) and step is not _STOP:
                self._cond.wait(step)
            return step


class AsyncClient(_Shipper):
    """Client for asyncio: the same options, counters and policies, with
    `await send/flush/close/post` and `async with`; it ships from one task
    of the running loop (started by the first send). Use it from one loop.
    """

    def _setup(self) -> None:
        self._cond = asyncio.Condition()
        self._abort = asyncio.Event()
        self._pool = _Pool(lambda: _AsyncConnection(self._address))
        self._task: asyncio.Task | None = None

    async def send(self, table: str, event, *, timeout: float | None = None) -> bool:
        """As Client.send."""
        line = self._line(table, event)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-client")
        async with self._cond:
            self._check_open()
            if not self._batcher.has_room():
                if self._overflow != "block":
                    return self._refuse()
                try:
                    async with asyncio.timeout(timeout):
                        await self._cond.wait_for(self._room_or_closed)
                except TimeoutError:
                    raise self._queue_full() from None
                self._check_open()
            if self._batcher.add(table, line, time.monotonic()):
                self._cond.notify_all()
        return True

    async def flush(self, timeout: float | None = None) -> bool:
        """As Client.flush."""
        async with self._cond:
            flushed = self._flushed()
            self._cond.notify_all()
            try:
                async with asyncio.timeout(timeout):
                    await self._cond.wait_for(flushed)
            except TimeoutError:
                return False
        return True

    async def close(self, timeout: float | None = None) -> bool:
        """As Client.close."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._abort.set()
                async with self._cond:
                    self._cond.notify_all()
                if self._current is not None:
                    self._current.interrupt()
            await self._task
        self._pool.close()
        return not self._abort.is_set()

    async def post(self, table: str, events: Iterable, *, wait: str | None = None) -> dict:
        """As Client.post."""
        request = self._post_request(table, events, wait)
        connection = self._pool.take()
        try:
            response = await _send_until_final(request, self._policy, self, _AsyncIO(connection))
        finally:
            self._pool.give(connection)
        return _final_reply(table, response)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not _STOP:
            connection = self._current = self._pool.take()
            try:
                await self._deliver(batch.table, batch.lines, _AsyncIO(connection, self._abort))
            finally:
                self._current = None
                self._pool.give(connection)
            async with self._cond:
                self._batcher.settle(batch)
                self._cond.notify_all()
        async with self._cond:
            self._abandon()
            self._cond.notify_all()

    async def _next_batch(self):
        async with self._cond:
            while not isinstance(step := self._next_step(self._abort.is_set()), _Batch) and step is not _STOP:
                try:
                    async with asyncio.timeout(step):
                        await self._cond.wait()
                except TimeoutError:
                    pass
            return step
