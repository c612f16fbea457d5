"""HTTP/1.1 over httptools: one asyncio.Protocol per client connection.

It owns what is HTTP about a request: the header and body limits, the
Content-Encoding handoff, the memory budget a body holds while it is read,
answering pipelined requests in the order they came, keep-alive and the
linger before closing. What a request means is its route's business.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import httptools

from ingest.sources.auth import CHALLENGE, Token, Unauthenticated
from ingest.sources.base import IntakeContext
from ingest.sources.formats.compression import CorruptBody, UnsupportedEncoding, decompressor
from ingest.sources.http.responses import RETRY_LATER, HttpError, Reply, error_reply, refusal_reason, render
from ingest.sources.http.router import Match, Request, Router

log = logging.getLogger("ingest.http")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # the interim answer to Expect: 100-continue
LINGER_SECONDS = 5  # how long a refused client may go on sending before we close
REFUSAL_LOG_INTERVAL = 10  # seconds: at most one log line per route and status in that time


class RefusalLog:
    """A warning line per refused request, at most one per route and status
    every `interval` seconds; the ones left out are counted in the next line."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL):
        self._interval = interval
        self._last: dict[tuple, float] = {}
        self._suppressed: dict[tuple, int] = {}

    def refused(self, route: str, status: int, peer: str, response: bytes) -> None:
        key = (route, status)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return  # a flood of refusals is counted, not parsed for a line nobody sees
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        reason = " ".join(refusal_reason(response).split())[:300]  # one line, whatever the error text holds
        log.warning("refused %d %s from %s: %s%s", status, route, peer, reason,
                    f" (and {suppressed} more like it not logged)" if suppressed else "")


REFUSALS = RefusalLog()


class HttpIngestProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in the order they came,
    even when a later one (an ingest) finishes before an earlier one (a query)."""

    def __init__(self, router: Router, intake: IntakeContext, connections: set):
        self._router = router
        self._intake = intake
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._responses: deque[list] = deque()  # [rendered answer, or None while it is awaited; route template]
        self._abandonable: set[asyncio.Task] = set()  # answers nobody needs once the client has gone (queries)
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"  # host:port of the client, once connected
        self._routed: tuple | None = None  # (method, URL, parsed URL, match) of the last request: clients repeat theirs
        self._tokens = intake.tokens if intake.tokens.enabled else None  # None: no auth
        # the last Authorization header and the token it named: a client sends the same one on every request
        self._identified: tuple[str, Token] | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._inflate = None
        self._early_error: HttpError | None = None
        self._reserved: int | None = None  # bytes of the memory budget this body holds while it is read
        self._url_parts = None  # the URL parsed once the headers are in: path and query
        self._match: Match | None = None  # the route, found from that path
        self._token: Token | None = None  # the request's token, once authorized

    # asyncio.Protocol

    def connection_made(self, transport):
        self._loop = asyncio.get_running_loop()
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._connections.add(self)

    def connection_lost(self, exc):
        self._closing = True
        self._release()
        self._connections.discard(self)
        for task in list(self._abandonable):  # nobody is left to read the result
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer_and_close(HttpError(400, "protocol upgrades are not supported"))
        except httptools.HttpParserCallbackError as exc:  # a bug of ours in a callback, not the client's request
            log.error("internal error in an HTTP request to %s from %s", self._path() or "?", self.peer,
                      exc_info=exc.__context__ or exc)
            if not self._closing:
                self._answer_and_close(HttpError(500, "internal error"))
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
        method, routed = self._parser.get_method(), self._routed
        if routed is not None and routed[0] == method and routed[1] == self._url:
            self._url_parts, self._match = routed[2], routed[3]
        else:
            try:
                self._url_parts = httptools.parse_url(self._url)
            except httptools.HttpParserInvalidURLError as exc:
                self._answer_and_close(HttpError(400, f"malformed HTTP request: {exc}"))
                return
            # origin-form ("/v1/...") and absolute-form ("http://host/v1/...") alike: routed by the path
            self._match = self._router.match(method.decode("latin-1"), self._url_parts.path.decode("latin-1"))
            self._routed = (method, self._url, self._url_parts, self._match)
        self._check_before_body()
        if self._closing or self._headers.get("expect", "").lower() != "100-continue":
            return
        # The client waits for our word before it sends the body (curl does for bodies over 1 MB).
        refusal = self._early_error or self._match.error
        if refusal is not None:
            self._answer_and_close(refusal)  # its body never comes: the answer ends the connection
        elif not self._responses:  # an interim answer may not overtake earlier requests' answers
            self.transport.write(CONTINUE)

    def _check_before_body(self) -> None:
        """What can be refused before the body is read: the token, the
        route's own check, the declared length, the encoding, the memory budget."""
        route = self._match.route
        if self._tokens is not None and route is not None:
            self._early_error = self._authorize(route)
            if self._early_error is not None:
                return
        if route is not None and route.admit is not None:
            # Refuse before the body is read into memory: it is discarded as it arrives.
            self._early_error = route.admit()
            if self._early_error is not None:
                return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._intake.max_body_bytes:
            # Refuse before reading the body: the client may stop sending.
            self._answer_and_close(self._too_large())
            return
        try:
            self._inflate = decompressor(self._headers.get("content-encoding"))
        except UnsupportedEncoding as exc:
            self._early_error = HttpError(415, str(exc))
        if self._early_error is None and route is not None and route.budgeted:
            # The body counts against the memory budget while it is read: refused before it is, when it does not fit.
            self._reserved = 0
            self._reserve(int(length) if length is not None and length.isdigit() else 0)

    def _authorize(self, route) -> HttpError | None:
        """Who is calling, and whether they may: 401, 403 or 429, else None
        (the token kept for the handler)."""
        if not route.scopes or (route.probe and self._tokens.open_probes):
            return None
        observe = self._intake.observe_refusal
        authorization, identified = self._headers.get("authorization"), self._identified
        if identified is not None and identified[0] == authorization:
            token = identified[1]
        else:
            try:
                token = self._tokens.identify(authorization)
            except Unauthenticated as exc:
                observe("unauthenticated", "")
                return HttpError(401, str(exc), headers=CHALLENGE)
            self._identified = (authorization, token)
        if not any(token.has(scope) for scope in route.scopes):
            observe("forbidden", token.name)
            return HttpError(403, f"token {token.name!r} may not call {self._match.template}: it needs the "
                                  f"{' or '.join(route.scopes)} scope")
        if route.table_param is not None:
            table = self._match.params.get(route.table_param, "")
            if not token.may_use(table):
                observe("forbidden", token.name)
                return HttpError(403, f"token {token.name!r} may not use table {table!r}")
        limited = token.rate_limited()
        if limited is not None:
            observe("rate_limited", token.name)
            return HttpError(429, limited.message(token), headers=limited.headers())
        self._token = token
        return None

    def on_body(self, chunk: bytes) -> None:
        if self._closing or self._early_error is not None:
            return
        limit = self._intake.max_body_bytes
        if self._inflate is not None:
            try:
                chunk = self._inflate.feed(chunk, limit - self._body_size + 1)
            except CorruptBody as exc:
                self._early_error = HttpError(400, str(exc))
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

    def on_message_complete(self) -> None:
        if self._closing:
            return
        keep_alive = self._parser.should_keep_alive()
        if self._inflate is not None and self._early_error is None:
            try:
                self._inflate.finish()
            except CorruptBody as exc:
                self._early_error = HttpError(400, str(exc))
        body = b"".join(self._body)
        self._body = []
        self._release()  # the body is read: once buffered, the pipeline counts its lines
        answer = error_reply(self._early_error) if self._early_error is not None else self._dispatch(body)
        if not keep_alive:
            self._closing = True
        if isinstance(answer, Reply):
            self._responses.append([render(answer, keep_alive), self._template()])
            self._write_ready()
            return
        slot = [None, self._template()]
        self._responses.append(slot)
        answer.add_done_callback(lambda done: self._answered(slot, done, keep_alive))

    # requests

    def _template(self) -> str:
        """The request's route template, its label in the metrics."""
        return self._match.template if self._match is not None else self._router.template(self._path())

    def _path(self) -> str:
        return self._url.split(b"?", 1)[0].decode("latin-1")

    def _dispatch(self, body: bytes) -> Reply | asyncio.Future:
        """The route's answer: a Reply now, or a future of one. An HttpError
        is the client's answer; any other exception is a bug (answered 500)."""
        match, url = self._match, self._url_parts
        try:
            if match.error is not None:
                raise match.error
            route = match.route
            answer = route.handler(Request(route.method, url.path.decode("latin-1"), match.params, url.query,
                                           self._headers, body, self.peer, self._token))
        except HttpError as exc:
            return error_reply(exc)
        if isinstance(answer, Reply):
            return answer
        task = answer if isinstance(answer, asyncio.Future) else asyncio.ensure_future(answer)  # a coroutine: a task
        if route.cancel_on_disconnect:
            self._abandonable.add(task)
            task.add_done_callback(self._abandonable.discard)
        return task

    def _reserve(self, size: int) -> bool:
        """Grows this body's share of the memory budget to `size` bytes; when
        it does not fit, the request is refused (its body discarded as it
        arrives) and what it held is given back."""
        budget = self._intake.budget
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
                                      headers=RETRY_LATER)
        return False

    def _release(self) -> None:
        if self._reserved:
            self._intake.budget.give_back(self._reserved)
        self._reserved = None

    def _too_large(self) -> HttpError:
        return HttpError(413, f"body exceeds the limit of {self._intake.max_body_bytes} bytes; split it into smaller requests")

    # responses

    def _answered(self, slot: list, done: asyncio.Future, keep_alive: bool) -> None:
        slot[0] = self._async_result(done, keep_alive)
        self._write_ready()

    def _write_ready(self) -> None:
        """Writes the answers that are ready, in the order their requests came."""
        while self._responses and self._responses[0][0] is not None:
            response, route = self._responses.popleft()
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
            self._loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _answer_and_close(self, error: HttpError) -> None:
        self._release()
        self._responses.append([render(error_reply(error), keep_alive=False), self._template()])
        self._closing = True
        self._write_ready()

    def _count(self, route: str, response: bytes) -> None:
        """Every answer in ingest_http_requests_total; refusals in the log too."""
        status = int(response[9:12])  # "HTTP/1.1 200 ..."
        self._intake.observe_http(route, status)
        if status >= 400:
            REFUSALS.refused(route, status, self.peer, response)

    @staticmethod
    def _async_result(task: asyncio.Future, keep_alive: bool) -> bytes:
        if task.cancelled():
            return render(error_reply(HttpError(503, "server is shutting down")), keep_alive)
        exc = task.exception()
        if isinstance(exc, HttpError):
            return render(error_reply(exc), keep_alive)
        if exc is not None:
            log.error("request failed: %r", exc, exc_info=exc)
            return render(error_reply(HttpError(500, f"internal error: {exc}")), keep_alive)
        return render(task.result(), keep_alive)


