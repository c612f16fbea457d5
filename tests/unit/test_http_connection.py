"""The HTTP connection driven in-process: bytes in through data_received,
bytes out through a fake transport, against routes defined here."""
from __future__ import annotations

import asyncio
import gzip
import json
import logging

import pytest


from ingest.core.budget import MemoryBudget
from ingest.sources.base import IntakeContext
from ingest.sources.http.connection import MAX_PIPELINED, HttpIngestProtocol, HttpLimits
from ingest.sources.http.responses import HttpError, Reply, json_reply
from ingest.sources.http.router import Route, Router

MAX_BODY_BYTES = 1 << 16


class FakeTransport(asyncio.Transport):
    """Keeps what the connection writes; closing only records that it was asked to."""

    def __init__(self):
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof_written = False
        self.reading = True
        self.buffered = 0  # what get_write_buffer_size answers

    def write(self, data) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def answers(data: bytes) -> list[Answer]:
    """The complete HTTP responses in `data`, in order (each has a Content-Length)."""
    found: list[Answer] = []
    rest = bytes(data)
    while b"\r\n\r\n" in rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, _, value in (f.partition(": ") for f in fields)}
        length = int(headers["content-length"])
        if len(rest) < length:
            break
        found.append(Answer(int(status_line.split()[1]), headers, rest[:length]))
        rest = rest[length:]
    return found


def echo(request) -> Reply:
    return json_reply(200, {"method": request.method, "path": request.path, "params": request.params,
                            "body": request.body.decode()})


class Connection:
    """A connection on a fake transport, with the routes given and what it counted."""

    def __init__(self, routes: list[Route], budget: MemoryBudget | None = None, limits: HttpLimits = HttpLimits()):
        self.counted: list[tuple[str, int]] = []
        self.refusals: list[str] = []
        intake = IntakeContext(
            pipeline=None, budget=budget or MemoryBudget(1 << 20), wal=None, sink_health=None, receipts=None,
            idempotency=None, webhooks=None, draining=lambda: False, max_body_bytes=MAX_BODY_BYTES,
            max_line_bytes=1024, observe_http=lambda route, status: self.counted.append((route, status)),
            observe_refusal=lambda reason, token="": self.refusals.append(reason))
        self.connections: set = set()
        self.protocol = HttpIngestProtocol(Router(routes, "try GET /echo"), intake, self.connections, limits)
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def answers(self) -> list[Answer]:
        return answers(self.transport.written)

    async def answered(self, count: int) -> list[Answer]:
        """The answers once `count` of them are written (answers are written from loop callbacks)."""
        for _ in range(10_000):
            found = self.answers()
            if len(found) >= count:
                return found
            await asyncio.sleep(0)
        raise AssertionError(f"{len(self.answers())} answers written, not {count}")


def request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def run(scenario):
    asyncio.run(scenario())


def test_pipelined_requests_are_answered_in_the_order_they_came():
    async def scenario():
        release = asyncio.Event()

        async def slow(request) -> Reply:
            await release.wait()
            return json_reply(200, {"slow": request.body.decode()})

        connection = Connection([Route("POST", "/slow", slow), Route("POST", "/echo", echo)])
        connection.send(request("POST", "/slow", b"first") + request("POST", "/echo", b"second")
                        + request("POST", "/echo", b"third"))
        await asyncio.sleep(0)  # let the slow handler start and block
        assert connection.answers() == []  # the fast answers wait behind the slow one
        release.set()
        first, second, third = await connection.answered(3)
        assert first.json() == {"slow": "first"}
        assert second.json()["body"] == "second" and third.json()["body"] == "third"
        assert all(a.headers["connection"] == "keep-alive" for a in (first, second, third))
        assert not connection.transport.closed and not connection.transport.eof_written
        assert connection.counted == [("/slow", 200), ("/echo", 200), ("/echo", 200)]
    run(scenario)


def test_a_request_split_across_reads_is_one_request():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        data = request("POST", "/echo", b"a body in pieces")
        for i in range(0, len(data), 7):
            connection.send(data[i:i + 7])
        [answer] = await connection.answered(1)
        assert answer.json()["body"] == "a body in pieces"
    run(scenario)


def test_a_handler_that_raises_is_answered_500_and_its_traceback_logged(caplog):
    def broken_handler(request):
        raise KeyError("a bug in the handler")

    async def scenario():
        connection = Connection([Route("POST", "/broken", broken_handler), Route("POST", "/echo", echo)])
        connection.send(request("POST", "/echo", b"before") + request("POST", "/broken", b"x")
                        + request("POST", "/echo", b"after"))
        before, failed = await connection.answered(2)  # nothing after the failure: the connection closes
        assert before.json()["body"] == "before"
        assert failed.status == 500
        assert failed.json() == {"error": "internal error"}
        assert failed.headers["connection"] == "close"
        assert connection.transport.eof_written
        assert connection.counted == [("/echo", 200), ("/broken", 500)]

    with caplog.at_level(logging.ERROR, logger="ingest.http"):
        run(scenario)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.name == "ingest.http"
    assert isinstance(record.exc_info[1], KeyError)
    assert "broken_handler" in caplog.text and "a bug in the handler" in caplog.text  # the traceback is there


def test_a_route_check_that_raises_before_the_body_is_answered_500(caplog):
    def broken_admit():
        raise RuntimeError("admit is broken")

    async def scenario():
        connection = Connection([Route("POST", "/echo", echo, admit=broken_admit)])
        connection.send(request("POST", "/echo", b"x"))
        [answer] = await connection.answered(1)
        assert answer.status == 500 and answer.json() == {"error": "internal error"}

    with caplog.at_level(logging.ERROR, logger="ingest.http"):
        run(scenario)
    assert "broken_admit" in caplog.text and "admit is broken" in caplog.text


def test_an_async_handler_that_raises_is_answered_500_with_its_traceback_logged(caplog):
    async def broken_later(request):
        raise ValueError("broken after a wait")

    async def scenario():
        connection = Connection([Route("POST", "/later", broken_later), Route("POST", "/echo", echo)])
        connection.send(request("POST", "/later") + request("POST", "/echo", b"next"))
        failed, following = await connection.answered(2)
        assert failed.status == 500 and failed.json()["error"].startswith("internal error")
        assert following.json()["body"] == "next"  # the connection goes on

    with caplog.at_level(logging.ERROR, logger="ingest.http"):
        run(scenario)
    assert "broken_later" in caplog.text


def test_malformed_http_is_answered_400_and_closed():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        connection.send(b"NOT HTTP AT ALL\r\n\r\n")
        [answer] = await connection.answered(1)
        assert answer.status == 400
        assert answer.json()["error"].startswith("malformed HTTP request")
        assert answer.headers["connection"] == "close"
        assert connection.transport.eof_written
        connection.send(request("POST", "/echo", b"ignored"))  # nothing more is read
        assert len(connection.answers()) == 1
    run(scenario)


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo), Route("GET", "/items/{id}", echo),
                                 Route("DELETE", "/items/{id}", echo)])
        connection.send(request("GET", "/nowhere") + request("GET", "/echo") + request("PUT", "/items/7")
                        + request("GET", "/items/a/b"))
        missing, wrong, wrong_item, item = await connection.answered(4)
        assert missing.status == 404
        assert missing.json() == {"error": "no such endpoint '/nowhere'; try GET /echo"}
        assert wrong.status == 405 and wrong.json() == {"error": "use POST"} and wrong.headers["allow"] == "POST"
        assert wrong_item.status == 405 and wrong_item.headers["allow"] == "GET, DELETE"
        assert wrong_item.json() == {"error": "use GET or DELETE"}
        assert item.json()["params"] == {"id": "a/b"}  # a trailing placeholder takes the rest of the path
        assert connection.counted == [("other", 404), ("/echo", 405), ("/items/{id}", 405), ("/items/{id}", 200)]
        assert not connection.transport.closed  # refusals keep the connection
    run(scenario)


def test_http_error_from_a_handler_is_the_clients_answer():
    def refuse(request):
        raise HttpError(422, "not like that", headers=(("X-Why", "because"),))

    async def scenario():
        connection = Connection([Route("POST", "/refuse", refuse)])
        connection.send(request("POST", "/refuse"))
        [answer] = await connection.answered(1)
        assert answer.status == 422 and answer.json() == {"error": "not like that"}
        assert answer.headers["x-why"] == "because"
    run(scenario)


def test_gzip_bodies_reach_the_handler_inflated_and_bad_ones_are_400():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        body = gzip.compress(b"one ") + gzip.compress(b"two")  # members back to back are one body
        connection.send(request("POST", "/echo", body, "Content-Encoding: gzip")
                        + request("POST", "/echo", b"not gzip", "Content-Encoding: gzip")
                        + request("POST", "/echo", b"x", "Content-Encoding: br"))
        inflated, corrupt, unsupported = await connection.answered(3)
        assert inflated.json()["body"] == "one two"
        assert corrupt.status == 400 and corrupt.json()["error"].startswith("invalid gzip body")
        assert unsupported.status == 415
        assert unsupported.json() == {"error": "unsupported Content-Encoding 'br'; send gzip, deflate or identity"}
    run(scenario)


def test_a_body_over_the_limit_is_413_before_it_is_read():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        connection.send(f"POST /echo HTTP/1.1\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        [answer] = await connection.answered(1)
        assert answer.status == 413 and answer.headers["connection"] == "close"
    run(scenario)


def test_an_admit_refusal_discards_the_body_and_keeps_the_connection():
    async def scenario():
        refusal = HttpError(503, "not now", headers=(("Retry-After", "1"),))
        connection = Connection([Route("POST", "/guarded", echo, admit=lambda: refusal), Route("POST", "/echo", echo)])
        connection.send(request("POST", "/guarded", b"x" * 100) + request("POST", "/echo", b"ok"))
        refused, ok = await connection.answered(2)
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert ok.json()["body"] == "ok"
    run(scenario)


def test_a_budgeted_body_holds_the_memory_budget_only_while_it_is_read():
    async def scenario():
        budget = MemoryBudget(1000)
        seen = []

        def record(request):
            seen.append(budget.used)
            return echo(request)

        connection = Connection([Route("POST", "/in", record, budgeted=True)], budget)
        data = request("POST", "/in", b"y" * 400)
        connection.send(data[:-100])
        assert budget.used == 400  # reserved from Content-Length before the body arrived
        connection.send(data[-100:])
        assert seen == [0] and budget.used == 0  # given back once the body is read
        connection.send(request("POST", "/in", b"z" * 2000))
        assert (await connection.answered(2))[-1].status == 413
    run(scenario)


def test_a_request_asking_to_close_is_answered_then_closed():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        connection.send(request("POST", "/echo", b"last", "Connection: close"))
        [answer] = await connection.answered(1)
        assert answer.headers["connection"] == "close" and connection.transport.eof_written
        assert connection.protocol in connection.connections
        connection.protocol.connection_lost(None)
        assert connection.protocol not in connection.connections
    run(scenario)


def test_a_router_refuses_two_routes_for_one_method_and_path():
    with pytest.raises(ValueError, match="two routes for GET /echo"):
        Router([Route("GET", "/echo", echo), Route("GET", "/echo", echo)], "")
    with pytest.raises(ValueError, match="only a trailing"):
        Router([Route("GET", "/items/{id}/parts", echo)], "")


def test_expect_100_continue_is_answered_before_the_body_is_sent():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        body = b"x" * 100
        head, _, _ = request("POST", "/echo", body, "Expect: 100-continue").partition(b"\r\n\r\n")
        connection.send(head + b"\r\n\r\n")
        assert bytes(connection.transport.written) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.send(body)
        connection.transport.written = connection.transport.written[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        (answer,) = await connection.answered(1)
        assert answer.status == 200 and answer.json()["body"] == body.decode()
        assert not connection.transport.closed
    run(scenario)


def test_expect_100_continue_gets_the_refusal_at_once_instead_of_waiting_for_the_body():
    async def scenario():
        refusal = HttpError(503, "not now", headers=(("Retry-After", "1"),))
        for path, status in (("/guarded", 503), ("/nowhere", 404)):
            connection = Connection([Route("POST", "/guarded", echo, admit=lambda: refusal)])
            head, _, _ = request("POST", path, b"x" * 100, "Expect: 100-continue").partition(b"\r\n\r\n")
            connection.send(head + b"\r\n\r\n")
            (answer,) = await connection.answered(1)
            assert answer.status == status and b"100 Continue" not in connection.transport.written
            assert connection.transport.eof_written  # the body will not come: the connection ends
    run(scenario)


def test_an_absolute_form_url_is_routed_checked_and_counted_like_its_path():
    async def scenario():
        refusal = HttpError(503, "not now", headers=(("Retry-After", "1"),))
        connection = Connection([Route("POST", "/guarded", echo, admit=lambda: refusal), Route("POST", "/echo", echo)])
        connection.send(request("POST", "http://test/guarded", b"x" * 100)
                        + request("POST", "http://test/echo?x=1", b"ok"))
        refused, ok = await connection.answered(2)
        assert refused.status == 503  # the route's check before the body applies whatever the URL's form
        assert ok.json() == {"method": "POST", "path": "/echo", "params": {}, "body": "ok"}
        assert connection.counted == [("/guarded", 503), ("/echo", 200)]
    run(scenario)


def test_while_writes_are_paused_requests_are_held_in_order_and_reading_stops():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)])
        connection.protocol.pause_writing()
        assert not connection.transport.reading
        connection.send(b"".join(request("POST", "/echo", b"%d" % i) for i in range(10)))
        await asyncio.sleep(0)
        assert connection.answers() == []  # parsed, held, not answered
        connection.protocol.resume_writing()
        answered = await connection.answered(10)
        assert [a.json()["body"] for a in answered] == [str(i) for i in range(10)]
        assert connection.transport.reading
    run(scenario)


def test_past_the_pipelining_cap_the_connection_is_not_read_and_nothing_is_lost():
    async def scenario():
        release = asyncio.Event()
        started = []

        async def slow(request) -> Reply:
            started.append(request.body)
            await release.wait()
            return json_reply(200, {"body": request.body.decode()})

        connection = Connection([Route("POST", "/slow", slow), Route("POST", "/echo", echo)])
        count = MAX_PIPELINED * 3
        connection.send(b"".join(request("POST", "/slow" if i % 2 else "/echo", b"%d" % i) for i in range(count)))
        for _ in range(100):
            await asyncio.sleep(0)
        assert not connection.transport.reading
        assert len(started) <= MAX_PIPELINED  # the rest wait, parsed but not dispatched
        release.set()
        answered = await connection.answered(count)
        assert [a.json()["body"] for a in answered] == [str(i) for i in range(count)]
        assert connection.transport.reading
    run(scenario)


def test_a_head_over_the_limit_is_431_even_while_one_header_is_still_arriving():
    async def scenario():
        connection = Connection([Route("POST", "/echo", echo)], limits=HttpLimits(max_header_bytes=4096))
        connection.send(b"POST /echo HTTP/1.1\r\nX-Big: ")
        for _ in range(3):
            connection.send(b"a" * 2000)  # httptools holds it until the line ends: counted by the reads
        [answer] = await connection.answered(1)
        assert answer.status == 431 and connection.transport.eof_written
        assert connection.refusals == ["header_too_large"]
    run(scenario)


def test_a_long_url_is_414_as_its_pieces_arrive():
    async def scenario():
        connection = Connection([Route("GET", "/echo", echo)], limits=HttpLimits(max_url_bytes=100))
        connection.send(b"GET /echo?" + b"a" * 60)
        connection.send(b"a" * 60)
        [answer] = await connection.answered(1)
        assert answer.status == 414 and "--max-url-bytes" in answer.json()["error"]
        assert connection.refusals == ["uri_too_long"]
    run(scenario)


def test_timeouts_close_stalled_clients_but_not_a_wait_that_is_the_servers():
    async def scenario():
        limits = HttpLimits(header_timeout=10, body_timeout=30, idle_timeout=60)
        head = Connection([Route("POST", "/echo", echo)], limits=limits)
        head.send(b"POST /echo HTTP/1.1\r\nHost: x")
        head.protocol.check_timeouts(100)
        head.send(b"x")  # trickling does not reset the header timeout
        head.protocol.check_timeouts(109)
        assert head.answers() == []
        head.protocol.check_timeouts(110)
        [answer] = await head.answered(1)
        assert answer.status == 408 and head.refusals == ["header_timeout"]

        budget = MemoryBudget(1 << 20)
        body = Connection([Route("POST", "/in", echo, budgeted=True)], budget, limits=limits)
        body.send(request("POST", "/in", b"x" * 100)[:-50])
        assert budget.used == 100
        body.protocol.check_timeouts(0)
        body.send(b"x" * 10)  # a body byte resets it
        body.protocol.check_timeouts(29)
        body.protocol.check_timeouts(58)
        assert body.answers() == []
        body.protocol.check_timeouts(59)
        [answer] = await body.answered(1)
        assert answer.status == 408 and budget.used == 0 and body.refusals == ["body_timeout"]

        release = asyncio.Event()

        async def slow(request) -> Reply:
            await release.wait()
            return json_reply(200, {})

        waiting = Connection([Route("POST", "/slow", slow)], limits=limits)
        waiting.send(request("POST", "/slow"))
        waiting.protocol.check_timeouts(0)
        waiting.protocol.check_timeouts(1000)  # the answer is being computed: not the client's stall
        assert not waiting.transport.closed
        release.set()
        await waiting.answered(1)
        waiting.protocol.check_timeouts(2000)
        waiting.protocol.check_timeouts(2059)
        assert not waiting.transport.closed
        waiting.protocol.check_timeouts(2060)  # idle: closed quietly
        assert waiting.transport.closed and waiting.refusals == []
    run(scenario)
