"""NDJSON over raw TCP: every line of every connection goes to one table.

TCP is fire-and-forget. Backpressure is TCP's own: while the memory budget is
exhausted the connection is not read, so the sender's socket buffer fills
and its writes block; reading resumes below the low-water mark (or later,
when HTTP requests were refused: see ingest.core.budget). While the
write-ahead log cannot be appended to (a full disk), reading pauses too and
is tried again every second; while the sink is failing, reading pauses until
it takes writes again.

Once tokens are configured, a TCP sender needs a client certificate (TLS
with --tls-client-ca) whose common name is the name of a token with the
write scope on the TCP table; other connections are closed at once.
"""
from __future__ import annotations

import asyncio
import logging

from ingest.durability.wal import RETRY_SECONDS as WAL_RETRY_SECONDS
from ingest.hotpath.buffer import LineFramer
from ingest.sources.base import IntakeContext
from ingest.sources.refusals import RefusalLog
from ingest.sources.tls import peer_common_name

log = logging.getLogger("ingest.tcp")
REFUSALS = RefusalLog(log)


class TcpIngestProtocol(asyncio.Protocol):
    """Hands one connection's bytes to the table's pipeline, which frames them straight into its batch buffer."""

    def __init__(self, intake: IntakeContext, table: str, connections: set):
        self._intake = intake
        self._table = table
        self._refused = False  # a connection without the token it needs: closed, its bytes dropped
        self._pipeline = intake.pipeline(table)
        self._sink_health = intake.sink_health
        self._wal = intake.wal
        self._framer = LineFramer(intake.max_line_bytes)
        self._budget = intake.budget
        self._connections = connections
        self._too_long_counted = 0
        self.transport: asyncio.Transport | None = None
        self.peer = ""

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"tcp {peer[0]}:{peer[1]}" if peer else "tcp"
        self._connections.add(self)
        if self._intake.tokens.enabled:
            self._authorize(transport)

    def _authorize(self, transport) -> None:
        """Under tokens, a TCP sender is who its client certificate's common
        name says (--tls-client-ca); that token must write to this table."""
        name = peer_common_name(transport)
        token = self._intake.tokens.by_name(name) if name else None
        if token is None:
            reason, why = "unauthenticated", (f"its certificate names no token ({name!r})" if name else
                                              "it presented no client certificate (--tls-client-ca)")
        else:
            why = token.forbids(("write",), self._table, "send over TCP")
            if why is None:
                return
            reason = "forbidden"
        self._refused = True
        status = 401 if reason == "unauthenticated" else 403
        self._intake.observe_refusal(reason, token.name if token is not None else "")
        REFUSALS.refused("tcp connection", status, self.peer, why)
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._pipeline.append_stream(self._framer, data)
        self._count_too_long()
        if self._budget.streams_paused:
            self.transport.pause_reading()
            self._budget.wait_for_room(self, self._resume)
        elif self._sink_health.failing:
            self.transport.pause_reading()
            self._sink_health.wait_for_recovery(self, self._resume)
        elif self._wal is not None and self._wal.unavailable:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(WAL_RETRY_SECONDS, self._resume)

    def _resume(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        if self._refused:
            self._connections.discard(self)
            return
        self._finish()
        self._forget()
        self._connections.discard(self)

    def close(self) -> None:
        """Stop reading; an unterminated last line still counts as an event."""
        self._finish()
        self._forget()
        self.transport.close()

    def _forget(self) -> None:
        self._budget.forget(self)
        self._sink_health.forget(self)

    def _finish(self) -> None:
        self._pipeline.finish_stream(self._framer)
        self._count_too_long()

    def _count_too_long(self) -> None:
        too_long = self._framer.too_long
        if too_long != self._too_long_counted:
            count = too_long - self._too_long_counted
            self._too_long_counted = too_long
            limit = self._framer.max_line_bytes
            # the line itself was never buffered: it is kept as its first bytes only
            self._pipeline.rejected_at_source(
                [b""] * count, [f"line longer than {limit} bytes (--max-line-bytes); dropped"] * count, self.peer)
