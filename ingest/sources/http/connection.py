"""HTTP/1.1 over httptools: one asyncio.Protocol per client connection.

It owns what is HTTP about a request: the limits on a request's head, body
and time, the Content-Encoding handoff, the memory budget a body holds while
it is read, answering pipelined requests in the order they came, keep-alive,
backpressure on answers and the linger before closing. What a request means
is its route's business.

Limits on the request head (HttpLimits, from the settings):
  the URL over max_url_bytes                      414, closed (uri_too_long)
  URL and headers over max_header_bytes           431, closed (header_too_large)
  more than max_headers header fields             431, closed (too_many_headers)
They are counted as the parser hands over the URL (in pieces) and each header;
a single header still arriving is counted by the reads it spans, so no more
than the limit and one read is ever buffered.

Time, checked once a second by a ConnectionSweep over the connection set (a
request costs a few attribute stores, no timer):
  a head not complete header_timeout s after its first byte    408, closed
  no body byte for body_timeout s while a body is incomplete    408, closed
  a keep-alive connection idle for idle_timeout s               closed quietly
  answers not drained for idle_timeout s (a client not reading) aborted
A wait that is the server's (an answer being computed, reading held back by
us) is never held against the client.

Backpressure: while the transport's write buffer is above its high-water mark
(pause_writing), or MAX_PIPELINED requests await their answers, or one read
has dispatched MAX_PIPELINED requests (fairness between connections), the
connection is not read and the requests already parsed are held back, in
order, each with its place in the answer queue; they are dispatched once
there is room again, then reading resumes.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import NamedTuple

import httptools

from ingest.sources.auth import CHALLENGE, Token, Unauthenticated
from ingest.sources.base import IntakeContext
from ingest.sources.refusals import RefusalLog
from ingest.sources.formats.compression import CorruptBody, UnsupportedEncoding, decompressor
from ingest.sources.http.responses import (RETRY_LATER, HttpError, Reply, error_reply, refusal_reason, render,
                                           token_refusal)
from ingest.sources.http.router import Match, Request, Router

log = logging.getLogger("ingest.http")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # the interim answer to Expect: 100-continue
LINGER_SECONDS = 5  # how long a refused client may go on sending before we close
MAX_PIPELINED = 64  # requests of one connection awaiting their answers (and dispatched per read) before it is not read
SWEEP_SECONDS = 1  # how often the timeouts are checked
HEAD_OVERHEAD = 4  # ": " and CRLF of a header line, counted in the head's size

# where a connection is in its current request
IDLE, HEAD, BODY = 0, 1, 2


class HttpLimits(NamedTuple):
    """What one client may take of the server: sizes of a request's head, and time."""

    max_url_bytes: int = 16 << 10
    max_header_bytes: int = 64 << 10  # the URL and every header line
    max_headers: int = 100
    header_timeout: float = 10  # seconds from a request's first byte until its headers are complete
    body_timeout: float = 30  # seconds without a body byte while a body is incomplete
    idle_timeout: float = 60  # seconds a keep-alive connection may wait for its next request (or a client to read)


class Refusal(HttpError):
    """A request refused for what it is, with the short word it is counted under."""

    def __init__(self, status: int, message: str, reason: str, headers: tuple = ()):
        super().__init__(status, message, headers)
        self.reason = reason


REFUSALS = RefusalLog(log, explain=refusal_reason)  # an answer's JSON "error" is what its line says


class HttpIngestProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in the order they came,
    even when a later one (an ingest) finishes before an earlier one (a query)."""

    def __init__(self, router: Router, intake: IntakeContext, connections: set, limits: HttpLimits = HttpLimits()):
        self._router = router
        self._intake = intake
        self._connections = connections
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._responses: deque[list] = deque()  # [rendered answer, or None while it is awaited; route template]
        self._held: deque[tuple] = deque()  # requests parsed while there was no room: (their slot in _responses, request)
        self._holding = False  # reading paused by us: no room for more requests
        self._write_paused = False  # the transport's write buffer is above its high-water mark
        self._pumping = False  # _pump is running (it is re-entered through the answers it writes)
        self._pump_scheduled = False
        self._burst = 0  # requests dispatched in the current read
        self._abandonable: set[asyncio.Task] = set()  # answers nobody needs once the client has gone (queries)
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"  # host:port of the client, once connected
        self._routed: tuple | None = None  # (method, URL, parsed URL, match) of the last request: clients repeat theirs
        self._tokens = intake.tokens if intake.tokens.enabled else None  # None: no auth
        # the last Authorization header and the token it named: a client sends the same one on every request
        self._identified: tuple[str, Token] | None = None
        self._phase = IDLE
        self._begun = 0  # requests begun on this connection: the sweep sees a new one by it
        self._received = 0  # bytes read: the sweep sees a body progress by it
        self._head_began = False  # a request began during the current read
        self._stall: tuple | None = None  # what the sweep saw last, and since when
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0  # the URL and the header lines handed over so far
        self._head_reads = 0  # bytes of the reads that were head from end to end (a header still arriving)
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
        self._held.clear()  # nobody is left to answer
        self._connections.discard(self)
        for task in list(self._abandonable):  # nobody is left to read the result
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._received += len(data)
        in_head = self._phase == HEAD
        self._head_began = False
        self._burst = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer_and_close(HttpError(400, "protocol upgrades are not supported"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refusal):  # a limit a callback found exceeded: it stopped the parser
                if not self._closing:
                    self._refuse(cause)
                return
            # a bug of ours in a callback, not the client's request
            log.error("internal error in an HTTP request to %s from %s", self._path() or "?", self.peer,
                      exc_info=cause or exc)
            if not self._closing:
                self._answer_and_close(HttpError(500, "internal error"))
        except httptools.HttpParserError as exc:
            if not self._closing:
                self._answer_and_close(HttpError(400, f"malformed HTTP request: {exc}"))
        if self._phase == HEAD and in_head and not self._head_began and not self._closing:
            # this whole read was one head, still incomplete: the parser holds a header we have not been given
            self._head_reads += len(data)
            if self._head_reads > self._limits.max_header_bytes:
                self._refuse(self._head_too_large())

    def pause_writing(self) -> None:
        self._write_paused = True
        self._hold()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()
        self._phase = HEAD
        self._begun += 1
        self._head_began = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if len(self._url) > self._limits.max_url_bytes:
            raise Refusal(414, f"URL longer than {self._limits.max_url_bytes} bytes (--max-url-bytes); "
                               "send long parameters in the request body", "uri_too_long")
        if self._head_bytes > self._limits.max_header_bytes:
            raise self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        self._head_bytes += len(name) + len(value) + HEAD_OVERHEAD
        if self._head_bytes > self._limits.max_header_bytes:
            raise self._head_too_large()
        if len(headers) >= self._limits.max_headers:
            raise Refusal(431, f"more than {self._limits.max_headers} header fields (--max-headers)",
                          "too_many_headers")
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def _head_too_large(self) -> Refusal:
        return Refusal(431, f"request head (URL and headers) larger than {self._limits.max_header_bytes} bytes "
                            "(--max-header-bytes)", "header_too_large")

    def on_headers_complete(self) -> None:
        self._phase = BODY
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
        table = self._match.params.get(route.table_param, "") if route.table_param is not None else None
        refusal = token_refusal(token, route.scopes, (table,), f"call {self._match.template}", observe)
        if refusal is None:
            self._token = token
        return refusal

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
        self._phase = IDLE
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
        if not keep_alive:
            self._closing = True
        self._burst += 1
        if self._holding or self._burst > MAX_PIPELINED:
            # no room now: the request keeps its place in the answers and waits, the connection is not read
            slot = [None, self._template()]
            self._responses.append(slot)
            self._held.append((slot, self._early_error, self._match, self._url_parts, self._headers, body, keep_alive,
                               self._token))
            self._hold()
            self._schedule_pump()
            return
        self._answer(None, self._early_error, self._match, self._url_parts, self._headers, body, keep_alive,
                     self._token)
        if len(self._responses) >= MAX_PIPELINED:
            self._hold()

    # requests

    def _answer(self, slot: list | None, early_error, match, url_parts, headers, body: bytes, keep_alive: bool,
                token: Token | None) -> None:
        """Dispatches a request and writes its answer when it is ready; `slot`
        is its place in the answers when it has one already (a held request)."""
        answer = (error_reply(early_error) if early_error is not None
                  else self._dispatch(match, url_parts, headers, body, token))
        if isinstance(answer, Reply):
            if slot is None:
                self._responses.append([render(answer, keep_alive), self._template()])
            else:
                slot[0] = render(answer, keep_alive)
            self._write_ready()
            return
        if slot is None:
            slot = [None, self._template()]
            self._responses.append(slot)
        answer.add_done_callback(lambda done: self._answered(slot, done, keep_alive))

    def _template(self) -> str:
        """The request's route template, its label in the metrics."""
        return self._match.template if self._match is not None else self._router.template(self._path())

    def _path(self) -> str:
        return self._url.split(b"?", 1)[0].decode("latin-1")

    def _dispatch(self, match: Match, url, headers: dict, body: bytes, token: Token | None) -> Reply | asyncio.Future:
        """The route's answer: a Reply now, or a future of one. An HttpError
        is the client's answer; any other exception is a bug (answered 500)."""
        try:
            if match.error is not None:
                raise match.error
            route = match.route
            answer = route.handler(Request(route.method, url.path.decode("latin-1"), match.params, url.query,
                                           headers, body, self.peer, token))
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
        if self._holding:
            self._pump()
        if self._closing and not self._responses and self.transport is not None:
            self._linger_close()

    # backpressure

    def _room(self) -> bool:
        """Whether another request may be dispatched: the answers drain and
        not too many are awaited."""
        return not self._write_paused and len(self._responses) - len(self._held) < MAX_PIPELINED

    def _hold(self) -> None:
        """Stop reading: the requests parsed from here on wait for room."""
        if not self._holding:
            self._holding = True
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        """Dispatches the requests held back, in order, while there is room
        (at most MAX_PIPELINED before other connections get the loop); then
        reads again."""
        if self._pumping or self.transport is None:
            return
        self._pumping = True
        try:
            dispatched = 0
            while self._held and self._room():
                if dispatched == MAX_PIPELINED:
                    self._schedule_pump()
                    return
                dispatched += 1
                self._answer(*self._held.popleft())
            if self._holding and not self._held and self._room():
                self._holding = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()
        finally:
            self._pumping = False

    # closing

    def _linger_close(self) -> None:
        """Close our side but keep reading (and discarding) for a while, so a
        client still sending a refused body gets to read our answer instead of
        a connection reset."""
        transport = self.transport
        if transport.is_closing():
            return
        if self._holding:  # reading must go on to discard what the client still sends
            self._holding = False
            transport.resume_reading()
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

    def _refuse(self, refusal: Refusal) -> None:
        """Answers a refusal of ours and closes; counted by its reason."""
        self._intake.observe_refusal(refusal.reason, "")
        self._answer_and_close(refusal)

    def check_timeouts(self, now: float) -> None:
        """Called by the sweep: closes the connection when its client has made
        no progress for the time its state allows. A wait that is the server's
        (an answer being computed, reading held back) is not held against it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        limits = self._limits
        buffered = transport.get_write_buffer_size()
        if buffered:  # answers written but not taken by the client
            seen, limit = ("unread", buffered, len(self._responses)), limits.idle_timeout
        elif self._closing or self._holding:
            self._stall = None
            return
        elif self._phase == HEAD:  # the head's first byte came: trickling bytes do not reset this
            seen, limit = ("head", self._begun), limits.header_timeout
        elif self._phase == BODY:
            seen, limit = ("body", self._begun, self._received), limits.body_timeout
        elif self._responses:  # answers being computed
            self._stall = None
            return
        else:
            seen, limit = ("idle", self._begun), limits.idle_timeout
        stall = self._stall
        if stall is None or stall[0] != seen:
            self._stall = (seen, now)
            return
        if now - stall[1] < limit:
            return
        what = seen[0]
        if what == "idle":
            transport.close()  # a keep-alive connection nobody uses: no answer is owed
        elif what == "unread":
            self._intake.observe_refusal("write_timeout", "")
            REFUSALS.refused("connection", 408, self.peer, f"answers not read for {limit:g} s (--idle-timeout); aborted")
            transport.abort()  # what is buffered would never be read
        elif what == "head":
            self._refuse(Refusal(408, f"request headers not complete within {limit:g} s of the request's first byte "
                                      "(--header-timeout)", "header_timeout"))
        else:
            self._refuse(Refusal(408, f"no body byte for {limit:g} s while the body was incomplete (--body-timeout)",
                                 "body_timeout"))

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


class ConnectionSweep:
    """Once a second, asks every connection of a set whether its client has
    stalled past its timeouts: one timer for all of them, nothing per request."""

    def __init__(self, connections: set, interval: float = SWEEP_SECONDS):
        self._connections = connections
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self._interval, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        now = self._loop.time()
        for connection in list(self._connections):
            try:
                connection.check_timeouts(now)
            except Exception:  # one broken connection must not end the sweep for all
                log.exception("checking the timeouts of %s", connection.peer)
        self._timer = self._loop.call_later(self._interval, self._sweep)
