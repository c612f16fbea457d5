"""HTTP/1.1 source (keep-alive, pipelining-safe), parsed by httptools.

Routes:
  POST /v1/ingest/{table}  NDJSON or a JSON array of objects, optionally gzip
  POST /v1/query           SQL in the body; answers an Arrow IPC stream
  GET  /v1/stats           per-table counters as JSON
  GET  /metrics            Prometheus text
  GET  /health             liveness: the process answers
  GET  /ready              readiness: 503 while draining for shutdown
"""
from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections import deque
from http import HTTPStatus

import httptools

from ingest.buffer import BatchBuffer, LineFramer, split_json_array
from ingest.config import TABLE_NAME
from ingest.encoder import validate_lines
from ingest.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger("ingest.http")

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})
JSON_TYPE = "application/json"
MAX_ERRORS_REPORTED = 100
INGEST_PREFIX = "/v1/ingest/"
UTF8_BOM = b"\xef\xbb\xbf"
LINGER_SECONDS = 5  # how long a refused client may go on sending before we close
RETRY_AFTER_SECONDS = 1  # what 429 and 503 ask a client to wait


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


class HttpIngestProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in the order they came,
    even when a later one (an ingest) finishes before an earlier one (a query)."""

    def __init__(self, server, connections: set):
        self._server = server
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._responses: deque[asyncio.Future] = deque()
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

    # asyncio.Protocol

    def connection_made(self, transport):
        self.transport = transport
        self._connections.add(self)

    def connection_lost(self, exc):
        self._closing = True
        self._connections.discard(self)

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
            if self._server.budget.exhausted:
                self._early_error = HttpError(429, "the server is at its memory budget; retry after the delay given",
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

    def on_body(self, chunk: bytes) -> None:
        if self._closing or self._early_error is not None:
            return
        limit = self._server.settings.max_body_bytes
        if self._inflate is not None:
            try:
                chunk = self._inflate.decompress(chunk, limit - self._body_size + 1)
                if self._inflate.unconsumed_tail:
                    raise OverflowError
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
        self._body.append(chunk)

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
        future = self._server.loop.create_future()
        self._responses.append(future)
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
        while self._responses and self._responses[0].done():
            response = self._responses.popleft().result()
            if self.transport is not None and not self.transport.is_closing():
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

    def _answer_and_close(self, error: HttpError) -> None:
        future = self._server.loop.create_future()
        future.set_result(self._error_response(error, keep_alive=False))
        self._responses.append(future)
        self._closing = True
        self._write_ready()

    def _too_large(self) -> HttpError:
        return HttpError(413, f"body exceeds the limit of {self._server.settings.max_body_bytes} bytes; split it into smaller requests")

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
        status, body, content_type = task.result()
        return render_response(status, body, content_type, keep_alive)

    # routing

    def _route(self, method: str, url, headers: dict, body: bytes, keep_alive: bool):
        path = url.path.decode("latin-1")
        if path.startswith(INGEST_PREFIX):
            self._allow(method, "POST")
            status, document, lsn = self._ingest(path[len(INGEST_PREFIX):], headers, body)
            wal = self._server.wal
            if lsn is not None and wal is not None and wal.fsync != "off":
                return self._after_durable(wal, lsn, status, document)
            return render_response(status, json_body(document), JSON_TYPE, keep_alive)
        if path == "/health":
            self._allow(method, "GET")
            return render_response(200, b'{"status":"ok"}', JSON_TYPE, keep_alive)
        if path == "/ready":
            self._allow(method, "GET")
            if self._server.draining:
                return render_response(503, b'{"status":"draining"}', JSON_TYPE, keep_alive)
            return render_response(200, b'{"status":"ready"}', JSON_TYPE, keep_alive)
        if path == "/metrics":
            self._allow(method, "GET")
            return render_response(200, self._server.metrics.render(), METRICS_CONTENT_TYPE, keep_alive)
        if path == "/v1/stats":
            self._allow(method, "GET")
            return render_response(200, json_body(self._server.stats()), JSON_TYPE, keep_alive)
        if path == "/v1/query":
            self._allow(method, "POST")
            return self._query(body)
        raise HttpError(404, f"no such endpoint {path!r}; ingest with POST {INGEST_PREFIX}{{table}}")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HttpError(405, f"use {' or '.join(allowed)}", headers=(("Allow", ", ".join(allowed)),))

    @staticmethod
    async def _after_durable(wal, lsn: int, status: int, document: dict):
        """Acknowledges once the request's write-ahead-log records are fsynced."""
        await wal.durable(lsn)
        return status, json_body(document), JSON_TYPE

    def _ingest(self, table: str, headers: dict, body: bytes) -> tuple[int, dict, int | None]:
        if not TABLE_NAME.match(table):
            raise HttpError(400, f"invalid table name {table!r}: use letters, digits and _, not starting with a digit, at most 63 characters")
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
        errors = validate_lines(lines.data(), lines.spans()) if lines.events else []
        pipeline = self._server.pipeline(table)
        rejected = [index for index, _ in errors]
        position = 0
        lsn = None
        while position < lines.events:
            position = pipeline.buffer.extend(lines, position, rejected)
            lsn = pipeline.appended() or lsn
        if errors:
            pipeline.rejected_at_source([lines.line(i) for i, _ in errors], [reason for _, reason in errors],
                                        f"http {self.peer} POST /v1/ingest/{table}")
        accepted = lines.events - len(errors)
        document = {
            "accepted": accepted,
            "rejected": len(errors),
            "errors": [{"line": index + 1, "error": reason} for index, reason in errors[:MAX_ERRORS_REPORTED]],
        }
        return (400 if accepted == 0 and errors else 200), document, lsn

    async def _query(self, body: bytes):
        sql = body.decode("utf-8", "replace").strip()
        if not sql:
            raise HttpError(400, "send the SQL text as the request body")
        try:
            payload = await self._server.query_arrow(sql)
        except Exception as exc:  # a user's SQL error, reported back to them
            raise HttpError(400, f"query failed: {exc}") from None
        return 200, payload, "application/vnd.apache.arrow.stream"

    @property
    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"
