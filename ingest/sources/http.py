"""HTTP/1.1 source (keep-alive, pipelining-safe), parsed by httptools.

Routes:
  POST /v1/ingest/{table}  NDJSON or a JSON array of objects, optionally gzip;
                           ?wait=none|received|flushed, ?timeout=, ?callback=,
                           Idempotency-Key
  GET  /v1/receipts/{id}   what became of an accepted request
  POST /v1/query           SQL in the body; answers an Arrow IPC stream
  GET  /v1/stats           per-table counters as JSON
  GET  /metrics            Prometheus text
  GET  /health             liveness: the process answers
  GET  /ready              readiness: 503 while draining for shutdown or while the sink is failing
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import logging
import time
import zlib
from collections import deque
from http import HTTPStatus
from urllib.parse import parse_qs

import httptools

from ingest.hotpath.buffer import BatchBuffer, LineFramer, split_json_array
from ingest.protocol import DEFAULT_WAIT, WAIT_MODES, table_name_problem
from ingest.hotpath.encoder import validate_lines
from ingest.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ingest.core.receipts import IdempotencyConflict
from ingest.core.ports import QueryInterrupted
from ingest.durability.wal import WalUnavailable
from ingest.server.webhooks import CallbackRefused

log = logging.getLogger("ingest.http")

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})
JSON_TYPE = "application/json"
MAX_ERRORS_REPORTED = 100
RECEIPTS_PREFIX = "/v1/receipts/"
RECEIPT_HEADER = "Ingest-Receipt"
DEFAULT_FLUSH_TIMEOUT = "30"  # seconds a wait=flushed request waits before answering 504
INGEST_PREFIX = "/v1/ingest/"
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
LINGER_SECONDS = 5  # how long a refused client may go on sending before we close
RETRY_AFTER_SECONDS = 1  # what 429 and 503 ask a client to wait
ROUTES = ("/v1/query", "/v1/stats", "/metrics", "/health", "/ready")  # besides the two prefixes
REFUSAL_LOG_INTERVAL = 10  # seconds: at most one log line per route and status in that time


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


def render_response(status: int, body: bytes, content_type: str, keep_alive: bool, headers=()) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: " + ("keep-alive" if keep_alive else "close"),
    ]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_body(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def route_of(url: bytes) -> str:
    """The route template a request URL falls under ("other" when none): a
    metric label that stays bounded whatever clients send."""
    path = url.split(b"?", 1)[0].decode("latin-1")
    if path.startswith(INGEST_PREFIX):
        return INGEST_PREFIX + "{table}"
    if path.startswith(RECEIPTS_PREFIX):
        return RECEIPTS_PREFIX + "{id}"
    return path if path in ROUTES else "other"


def refusal_reason(response: bytes) -> str:
    """What a rendered 4xx/5xx answer tells its client (its JSON "error")."""
    status_line, _, rest = response.partition(b"\r\n")
    try:
        document = json.loads(rest.partition(b"\r\n\r\n")[2])
        errors = document.get("errors") or [{}]
        return str(document.get("error") or errors[0].get("error") or document.get("status") or status_line[13:].decode())
    except (ValueError, AttributeError, TypeError):
        return status_line[13:].decode("latin-1")


class RefusalLog:
    """A warning line per refused request, at most one per route and status
    every `interval` seconds; the ones left out are counted in the next line."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL):
        self._interval = interval
        self._last: dict[tuple, float] = {}
        self._suppressed: dict[tuple, int] = {}

    def refused(self, route: str, status: int, peer: str, reason: str) -> None:
        key = (route, status)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        log.warning("refused %d %s from %s: %s%s", status, route, peer, reason,
                    f" (and {suppressed} more like it not logged)" if suppressed else "")


REFUSALS = RefusalLog()


class HttpIngestProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in the order they came,
    even when a later one (an ingest) finishes before an earlier one (a query)."""

    def __init__(self, server, connections: set):
        self._server = server
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._responses: deque[tuple[asyncio.Future, str]] = deque()  # (answer, route template)
        self._queries: set[asyncio.Task] = set()
        self._closing = False
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._inflate = None
        self._early_error: HttpError | None = None
        self._reserved: int | None = None  # bytes of the memory budget this ingest body holds while it is read

    # asyncio.Protocol

    def connection_made(self, transport):
        self.transport = transport
        self._connections.add(self)

    def connection_lost(self, exc):
        self._closing = True
        self._release()
        self._connections.discard(self)
        for query in list(self._queries):  # nobody is left to read the result
            query.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer_and_close(HttpError(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self._closing:
                self._answer_and_close(HttpError(400, f"malformed HTTP request: {exc}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._url.startswith(INGEST_PREFIX.encode()) and self._parser.get_method() == b"POST":
            # Refuse before the body is read into memory: it is discarded as it arrives.
            if self._server.draining:
                self._early_error = HttpError(503, "the server is shutting down; send to another instance or retry later",
                                              headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),))
                return
            if self._server.wal is not None and self._server.wal.unavailable:
                self._early_error = HttpError(503, "the write-ahead log cannot be written (is the disk full?); retry later",
                                              headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),))
                return
            if self._server.sink_health.failing:
                self._early_error = HttpError(503, f"the sink is failing ({self._server.sink_health.error}); retry later",
                                              headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),))
                return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.settings.max_body_bytes:
            # Refuse before reading the body: the client may stop sending.
            self._answer_and_close(self._too_large())
            return
        encoding = self._headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding not in ("identity", ""):
            self._early_error = HttpError(415, f"unsupported Content-Encoding {encoding!r}; send gzip or identity")
        if self._early_error is None and self._url.startswith(INGEST_PREFIX.encode()) and self._parser.get_method() == b"POST":
            # The body counts against the memory budget while it is read: refused before it is, when it does not fit.
            self._reserved = 0
            self._reserve(int(length) if length is not None and length.isdigit() else 0)

    def on_body(self, chunk: bytes) -> None:
        if self._closing or self._early_error is not None:
            return
        limit = self._server.settings.max_body_bytes
        if self._inflate is not None:
            try:
                chunk = self._gunzip(chunk, limit - self._body_size + 1)
            except zlib.error as exc:
                self._early_error = HttpError(400, f"invalid gzip body: {exc}")
                return
            except OverflowError:
                self._answer_and_close(self._too_large())
                return
        self._body_size += len(chunk)
        if self._body_size > limit:
            self._answer_and_close(self._too_large())
            return
        if self._reserved is not None and self._body_size > self._reserved and not self._reserve(self._body_size):
            return  # refused: the chunks read so far are dropped
        self._body.append(chunk)

    def _gunzip(self, chunk: bytes, room: int) -> bytes:
        """Inflates a piece of a gzip body. Members back to back (`cat a.gz
        b.gz`) are one body, as gzip -d reads them; bytes after the last
        member that are not another member are an error, not ignored."""
        pieces = []
        while chunk:
            if room <= 0:
                raise OverflowError
            if self._inflate.eof:
                if not GZIP_MAGIC.startswith(chunk[:2]):
                    raise zlib.error("trailing bytes after the gzip stream")
                self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            piece = self._inflate.decompress(chunk, room)
            if self._inflate.unconsumed_tail:
                raise OverflowError
            room -= len(piece)
            pieces.append(piece)
            chunk = self._inflate.unused_data
        return b"".join(pieces)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        keep_alive = self._parser.should_keep_alive()
        if self._inflate is not None and self._early_error is None and not self._inflate.eof:
            self._early_error = HttpError(400, "invalid gzip body: truncated stream")
        request = (
            self._parser.get_method().decode("latin-1"),
            httptools.parse_url(self._url),
            self._headers,
            b"".join(self._body),
        )
        self._body = []
        self._release()  # the body is read: once buffered, the pipeline counts its lines
        future = self._server.loop.create_future()
        self._responses.append((future, route_of(self._url)))
        if self._early_error is not None:
            future.set_result(self._error_response(self._early_error, keep_alive))
        else:
            try:
                result = self._route(*request, keep_alive)
            except HttpError as exc:
                future.set_result(self._error_response(exc, keep_alive))
            else:
                if isinstance(result, bytes):
                    future.set_result(result)
                else:
                    task = asyncio.ensure_future(result)
                    task.add_done_callback(lambda t, f=future, k=keep_alive: f.set_result(self._async_result(t, k)))
        future.add_done_callback(lambda _: self._write_ready())
        if not keep_alive:
            self._closing = True

    # responses

    def _write_ready(self) -> None:
        while self._responses and self._responses[0][0].done():
            future, route = self._responses.popleft()
            response = future.result()
            if self.transport is not None and not self.transport.is_closing():
                self._count(route, response)
                self.transport.write(response)
        if self._closing and not self._responses and self.transport is not None:
            self._linger_close()

    def _linger_close(self) -> None:
        """Close our side but keep reading (and discarding) for a while, so a
        client still sending a refused body gets to read our answer instead of
        a connection reset."""
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self._server.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _reserve(self, size: int) -> bool:
        """Grows this body's share of the memory budget to `size` bytes; when
        it does not fit, the request is refused (its body discarded as it
        arrives) and what it held is given back."""
        budget = self._server.budget
        if size > budget.limit:
            self._answer_and_close(HttpError(413, f"body of {size} bytes or more exceeds the memory budget of "
                                                  f"{budget.limit} bytes (--max-buffer-bytes); split it into smaller requests"))
            return False
        if budget.reserve(size - self._reserved):
            self._reserved = size
            return True
        self._release()
        self._body = []
        self._early_error = HttpError(429, "the server is at its memory budget; retry after the delay given",
                                      headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),))
        return False

    def _release(self) -> None:
        if self._reserved:
            self._server.budget.give_back(self._reserved)
        self._reserved = None

    def _answer_and_close(self, error: HttpError) -> None:
        self._release()
        future = self._server.loop.create_future()
        future.set_result(self._error_response(error, keep_alive=False))
        self._responses.append((future, route_of(self._url)))
        self._closing = True
        self._write_ready()

    def _too_large(self) -> HttpError:
        return HttpError(413, f"body exceeds the limit of {self._server.settings.max_body_bytes} bytes; split it into smaller requests")

    def _count(self, route: str, response: bytes) -> None:
        """Every answer in ingest_http_requests_total; refusals in the log too."""
        status = int(response[9:12])  # "HTTP/1.1 200 ..."
        self._server.metrics.observe_http(route, status)
        if status >= 400:
            reason = " ".join(refusal_reason(response).split())  # one line, whatever the error text holds
            REFUSALS.refused(route, status, self.peer, reason[:300])

    @staticmethod
    def _error_response(error: HttpError, keep_alive: bool) -> bytes:
        return render_response(error.status, json_body({"error": str(error)}), JSON_TYPE, keep_alive, error.headers)

    def _async_result(self, task: asyncio.Task, keep_alive: bool) -> bytes:
        if task.cancelled():
            return self._error_response(HttpError(503, "server is shutting down"), keep_alive)
        exc = task.exception()
        if isinstance(exc, HttpError):
            return self._error_response(exc, keep_alive)
        if exc is not None:
            log.error("request failed: %r", exc)
            return self._error_response(HttpError(500, f"internal error: {exc}"), keep_alive)
        status, body, content_type, *headers = task.result()
        return render_response(status, body, content_type, keep_alive, headers[0] if headers else ())

    # routing

    def _route(self, method: str, url, headers: dict, body: bytes, keep_alive: bool):
        path = url.path.decode("latin-1")
        if path.startswith(INGEST_PREFIX):
            self._allow(method, "POST")
            return self._ingest_request(path[len(INGEST_PREFIX):], url.query, headers, body, keep_alive)
        if path.startswith(RECEIPTS_PREFIX):
            self._allow(method, "GET")
            receipt = self._server.receipts.get(path[len(RECEIPTS_PREFIX):])
            if receipt is None:
                raise HttpError(404, "no such receipt: unknown, or older than --receipt-retention")
            return render_response(200, json_body(receipt.as_dict()), JSON_TYPE, keep_alive)
        if path == "/health":
            self._allow(method, "GET")
            return render_response(200, b'{"status":"ok"}', JSON_TYPE, keep_alive)
        if path == "/ready":
            self._allow(method, "GET")
            if self._server.draining:
                return render_response(503, b'{"status":"draining"}', JSON_TYPE, keep_alive)
            health = self._server.sink_health
            if health.failing:
                return render_response(503, json_body({"status": "sink failing", "sink": self._server.sink.name,
                                                        **health.as_dict()}), JSON_TYPE, keep_alive)
            return render_response(200, b'{"status":"ready"}', JSON_TYPE, keep_alive)
        if path == "/metrics":
            self._allow(method, "GET")
            return render_response(200, self._server.metrics.render(), METRICS_CONTENT_TYPE, keep_alive)
        if path == "/v1/stats":
            self._allow(method, "GET")
            return render_response(200, json_body(self._server.stats()), JSON_TYPE, keep_alive)
        if path == "/v1/query":
            self._allow(method, "POST")
            query = asyncio.ensure_future(self._query(body))
            self._queries.add(query)
            query.add_done_callback(self._queries.discard)
            return query
        raise HttpError(404, f"no such endpoint {path!r}; ingest with POST {INGEST_PREFIX}{{table}}")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HttpError(405, f"use {' or '.join(allowed)}", headers=(("Allow", ", ".join(allowed)),))

    def _ingest_request(self, table: str, query: bytes | None, headers: dict, body: bytes, keep_alive: bool):
        """POST /v1/ingest/{table}: answers now (bytes) when nothing needs
        waiting for, else a coroutine that answers once it may."""
        problem = table_name_problem(table)
        if problem:
            raise HttpError(400, problem)
        options = parse_qs(query.decode("latin-1")) if query else {}
        wait = (options.get("wait", [""])[0] or headers.get("ingest-wait", "") or DEFAULT_WAIT).lower()
        if wait not in WAIT_MODES:
            raise HttpError(400, f"wait must be one of {', '.join(WAIT_MODES)}, not {wait!r}")
        try:
            timeout = float(options.get("timeout", [DEFAULT_FLUSH_TIMEOUT])[0])
        except ValueError:
            timeout = math.nan
        if not 0 < timeout < math.inf:
            raise HttpError(400, "timeout must be a positive, finite number of seconds")
        callback = options.get("callback", [""])[0] or headers.get("ingest-callback") or None
        if callback is not None:
            try:
                self._server.webhooks.check(callback)
            except CallbackRefused as exc:
                raise HttpError(400, str(exc)) from None
        key = headers.get("idempotency-key")
        if key is None:
            status, document, lsn, receipt = self._accept(table, headers, body, callback, {})
            synced = self._server.wal.synced(lsn) if wait == "received" and self._needs_fsync(lsn) else None
            if wait == "none" or receipt is None or (wait == "received" and synced is None):
                return self._reply(status if wait != "none" or receipt is None else 202, document, receipt, keep_alive)
            if synced is not None:  # the common case, answered from a callback: no task per request
                return self._reply_when_synced(synced, status, document, receipt)
            return self._answer_when(wait, timeout, status, document, lsn, receipt)
        digest = hashlib.sha256(table.encode() + b"\0" + body).hexdigest()
        keys = self._server.idempotency
        try:
            entry = keys.find(key, table, digest)
        except IdempotencyConflict as exc:
            raise HttpError(422, str(exc)) from None
        if entry is not None:
            return self._original_reply(entry)
        entry = keys.begin(key, table, digest)
        try:
            status, document, lsn, receipt = self._accept(table, headers, body, callback,
                                                          {"key": key, "digest": digest, "table": table})
        except BaseException:
            keys.forget(key)
            raise
        return self._remember(key, entry, self._answer_when(wait, timeout, status, document, lsn, receipt))

    def _needs_fsync(self, lsn: int | None) -> bool:
        wal = self._server.wal
        return lsn is not None and wal is not None and wal.fsync != "off"

    @staticmethod
    def _reply(status: int, document: dict, receipt, keep_alive: bool) -> bytes:
        headers = ((RECEIPT_HEADER, receipt.id),) if receipt is not None else ()
        return render_response(status, json_body(document), JSON_TYPE, keep_alive, headers)

    def _reply_when_synced(self, synced: asyncio.Future, status: int, document: dict, receipt) -> asyncio.Future:
        reply = self._server.loop.create_future()

        def answer(done: asyncio.Future) -> None:
            if done.exception() is not None:  # the lines are buffered: answer once they have landed instead
                landed = asyncio.ensure_future(self._answer_when("flushed", float(DEFAULT_FLUSH_TIMEOUT), status,
                                                                 document, None, receipt))
                landed.add_done_callback(lambda t: reply.set_exception(t.exception()) if t.exception()
                                         else reply.set_result(t.result()))
            else:
                reply.set_result((status, json_body(document), JSON_TYPE, ((RECEIPT_HEADER, receipt.id),)))

        synced.add_done_callback(answer)
        return reply

    async def _answer_when(self, wait: str, timeout: float, status: int, document: dict, lsn, receipt):
        """received: once the lines are in the write-ahead log (fsynced per
        --wal-fsync); flushed: once every line landed or was dead-lettered."""
        headers = ((RECEIPT_HEADER, receipt.id),) if receipt is not None else ()
        if wait == "none" or receipt is None:
            return (202 if wait == "none" and receipt is not None else status), json_body(document), JSON_TYPE, headers
        if self._needs_fsync(lsn):
            try:
                await self._server.wal.durable(lsn)
            except OSError as exc:  # the log may not hold them, but the buffer does: wait for them to land
                log.error("write-ahead log fsync failed (%s); answering once the request's events have landed", exc)
                wait = "flushed"
        if wait == "received":
            return status, json_body(document), JSON_TYPE, headers
        self._server.pipeline(receipt.table).expedite()
        try:
            await asyncio.wait_for(asyncio.shield(receipt.finished()), timeout)
        except asyncio.TimeoutError:
            return 504, json_body({**receipt.as_dict(), "error": f"not flushed within {timeout:g}s; the events will "
                                   f"still land: poll GET {RECEIPTS_PREFIX}{receipt.id}"}), JSON_TYPE, headers
        result = {**document, **receipt.as_dict()}
        if receipt.dead_lettered:
            refused = any(reason.startswith("refused by the sink") for reason in receipt.reasons)
            result["error"] = f"{receipt.dead_lettered} event(s) could not land and were dead-lettered"
            return (422 if refused else 500), json_body(result), JSON_TYPE, headers
        return status, json_body(result), JSON_TYPE, headers

    @staticmethod
    async def _original_reply(entry):
        status, body, content_type, headers = await asyncio.shield(entry.reply)
        return status, body, content_type, headers + (("Idempotent-Replayed", "true"),)

    async def _remember(self, key: str, entry, answer):
        """Keeps the reply under the key, so a retry gets the same answer."""
        try:
            reply = await answer
        except BaseException:
            self._server.idempotency.forget(key)
            raise
        entry.reply.set_result(reply)
        return reply

    def _accept(self, table: str, headers: dict, body: bytes, callback, meta: dict):
        """Frames and checks the body, buffers (and logs) its good lines;
        returns (status, reply document, lsn, receipt)."""
        content_type = headers.get("content-type", "application/x-ndjson").split(";")[0].strip().lower()
        lines = BatchBuffer()
        if content_type == JSON_TYPE and body.lstrip(b" \t\r\n").removeprefix(UTF8_BOM).lstrip(b" \t\r\n")[:1] == b"[":
            try:
                split_json_array(body, lines)
            except ValueError as exc:
                raise HttpError(400, f"invalid JSON array: {exc}") from None
        elif content_type == JSON_TYPE or content_type in NDJSON_TYPES:
            framer = LineFramer(len(body) + 1)
            framer.feed(body, 0, lines)
            framer.finish(lines)
        else:
            raise HttpError(415, f"unsupported Content-Type {content_type!r}; send application/x-ndjson or application/json")
        if not lines.events:  # nothing was valid, as for a body of only bad lines
            raise HttpError(400, "the body holds no events: send one JSON object per line"
                                 " (application/x-ndjson) or a JSON array of objects (application/json)")
        errors = validate_lines(lines.data(), lines.spans())
        pipeline = self._server.pipeline(table)
        accepted = lines.events - len(errors)
        document = {
            "accepted": accepted,
            "rejected": len(errors),
            "errors": [{"line": index + 1, "error": reason} for index, reason in errors[:MAX_ERRORS_REPORTED]],
        }
        lsn = receipt = None
        if accepted:
            receipt = self._server.receipts.issue(table, accepted, len(errors), callback)
            document["receipt"] = receipt.id
            # the reply is encoded once; the logged meta wraps it as it is
            logged = (json_body({**meta, "receipt": receipt.id, "created": receipt.created, "callback": callback})[:-1]
                      + b',"reply":' + json_body(document) + b"}")
            try:
                lsn = pipeline.append_request(lines, [index for index, _ in errors], receipt, logged)
            except WalUnavailable as exc:  # nothing was buffered: the refusal is whole
                self._server.receipts.withdraw(receipt)
                raise HttpError(503, f"the write-ahead log cannot be written ({exc}); nothing was accepted, retry later",
                                headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),)) from None
        if errors:
            pipeline.rejected_at_source([lines.line(i) for i, _ in errors], [reason for _, reason in errors],
                                        f"http {self.peer} POST /v1/ingest/{table}")
        return (400 if accepted == 0 and errors else 200), document, lsn, receipt

    async def _query(self, body: bytes):
        sql = body.decode("utf-8", "replace").strip()
        if not sql:
            raise HttpError(400, "send the SQL text as the request body")
        try:
            payload = await self._server.query_arrow(sql)
        except QueryInterrupted as exc:
            raise HttpError(503, f"query interrupted: {exc}", headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),)) from None
        except Exception as exc:  # a user's SQL error, reported back to them
            raise HttpError(400, f"query failed: {exc}") from None
        return 200, payload, "application/vnd.apache.arrow.stream"

    @property
    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"
