"""HTTP connections: keep-alive on http.client for the thread, on asyncio
streams for the task; a pool of idle ones; and the two I/O adapters through
which the one delivery routine (written as a coroutine) either blocks or
awaits."""
from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from typing import Callable

from ingest.client.wire import Address, Request, Response

class HttpConnection:
    """A keep-alive connection on http.client; reconnects on the next request after an error."""

    def __init__(self, connection: http.client.HTTPConnection):
        self._connection = connection

    @classmethod
    def to(cls, address: Address, timeout: float) -> HttpConnection:
        return cls(http.client.HTTPConnection(address.host, address.port, timeout=timeout))

    def exchange(self, request: Request) -> Response:
        connection = self._connection
        connection.timeout = request.timeout
        if connection.sock is not None:
            connection.sock.settimeout(request.timeout)
        try:
            connection.request("POST", request.target, body=request.body, headers=request.headers)
            answer = connection.getresponse()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
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


class AsyncConnection:
    """A keep-alive connection on asyncio streams: minimal HTTP/1.1, enough for
    our server's answers (which always carry Content-Length)."""

    def __init__(self, address: Address):
        self._address = address
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(request.timeout):
                return await self._exchange(request)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise ConnectionError(f"malformed HTTP response: {exc}") from None
        except BaseException:
            self.close()
            raise

    async def _exchange(self, request: Request) -> Response:
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
        return Response(int(status), headers, body)

    def interrupt(self) -> None:
        if self._streams is not None:
            self._streams[1].transport.abort()

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Pool:
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


# The delivery routine is written once, as a coroutine; the sync client runs it
# with blocking I/O behind the awaits, so it never suspends (see run_blocking).


class BlockingIO:
    def __init__(self, connection: HttpConnection, abort: threading.Event | None = None):
        self.connection = connection
        self._abort = abort

    async def exchange(self, request: Request) -> Response:
        return self.connection.exchange(request)

    async def pause(self, seconds: float) -> bool:
        """Sleeps; False when the client is being closed and should give up."""
        if self._abort is None:
            time.sleep(seconds)
            return True
        return not self._abort.wait(seconds)


class AsyncIO:
    def __init__(self, connection: AsyncConnection, abort: asyncio.Event | None = None):
        self.connection = connection
        self._abort = abort

    async def exchange(self, request: Request) -> Response:
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


def run_blocking(coroutine):
    """Runs a coroutine whose awaits all block instead of suspending (the
    BlockingIO ones): how the sync client shares the async delivery code."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a blocking delivery tried to suspend")
