"""One cap on open connections, HTTP and TCP together (one file-descriptor
table): past it a new connection is refused at once, before it costs more
than its accept."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger("ingest.server")


class ConnectionCap:
    def __init__(self, limit: int, connection_sets: tuple[set, ...], observe_refusal: Callable[[str, str], None],
                 refusal_log):
        self.limit = limit
        self._sets = connection_sets  # each listener's open connections
        self._observe_refusal = observe_refusal
        self._refusal_log = refusal_log  # RefusalLog: rate-limited warning lines

    def open(self) -> int:
        return sum(len(connections) for connections in self._sets)

    def guard(self, factory: Callable[[], asyncio.Protocol], what: str, answer: bytes) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for a listener: `factory`'s protocol while there
        is room, else one that writes `answer` (b"": nothing) and closes."""
        def admit() -> asyncio.Protocol:
            if self.open() >= self.limit:
                return TooManyConnections(self, what, answer)
            return factory()
        return admit

    def refused(self, what: str, peer: str) -> None:
        self._observe_refusal("too_many_connections", "")
        self._refusal_log.refused(what, 503, peer, f"{self.limit} connections open (--max-connections)")


class TooManyConnections(asyncio.Protocol):
    """A connection past the cap: answered (HTTP: 503 with Retry-After) and closed at once, never read."""

    def __init__(self, cap: ConnectionCap, what: str, answer: bytes):
        self._cap = cap
        self._what = what
        self._answer = answer

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        self._cap.refused(self._what, f"{peer[0]}:{peer[1]}" if peer else "?")
        if self._answer:
            transport.write(self._answer)
        transport.close()  # the answer is flushed first

    def data_received(self, data: bytes) -> None:
        pass
