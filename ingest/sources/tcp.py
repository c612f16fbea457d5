"""NDJSON over raw TCP: every line of every connection goes to one table."""
from __future__ import annotations

import asyncio
import logging

from ingest.buffer import LineFramer
from ingest.pipeline import TablePipeline

log = logging.getLogger("ingest.tcp")


class TcpIngestProtocol(asyncio.Protocol):
    """Frames one connection's bytes straight into the table's batch buffer."""

    def __init__(self, pipeline: TablePipeline, max_line_bytes: int, connections: set):
        self._pipeline = pipeline
        self._framer = LineFramer(max_line_bytes)
        self._connections = connections
        self._too_long_counted = 0
        self.transport: asyncio.Transport | None = None
        self.peer = ""

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        pipeline, framer, buffer = self._pipeline, self._framer, self._pipeline.buffer
        position, size = 0, len(data)
        while position < size:
            position = framer.feed(data, position, buffer)
            pipeline.appended()
        self._count_too_long()

    def connection_lost(self, exc) -> None:
        self._finish()
        self._connections.discard(self)

    def close(self) -> None:
        """Stop reading; an unterminated last line still counts as an event."""
        self._finish()
        self.transport.close()

    def _finish(self) -> None:
        self._framer.finish(self._pipeline.buffer)
        self._pipeline.appended()
        self._count_too_long()

    def _count_too_long(self) -> None:
        too_long = self._framer.too_long
        if too_long != self._too_long_counted:
            self._pipeline.rejected_at_source(too_long - self._too_long_counted)
            log.warning("tcp %s: dropped %d line(s) longer than %d bytes", self.peer,
                        too_long - self._too_long_counted, self._framer.max_line_bytes)
            self._too_long_counted = too_long
