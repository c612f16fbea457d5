"""One table's path from raw lines to the sink.

Sources append framed lines to the table's `BatchBuffer` on the event loop.
`TablePipeline` owns the single decision of when a batch is sealed (events,
bytes or age, whichever first), then runs two stages off the loop, each in
order: the encoder (GIL released, in the encode pool) and the sink (in the
sink's own pool). Encoding batch N+1 overlaps with writing batch N.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from ingest.buffer import BatchBuffer
from ingest.encoder import Encoder
from ingest.rejections import RejectionLog
from ingest.sinks import Sink

log = logging.getLogger("ingest.pipeline")

SEAL_TRIGGERS = ("events", "bytes", "age", "shutdown")
ENCODED_QUEUE_DEPTH = 2  # encoded batches waiting for the sink, per table


@dataclass
class TableCounters:
    received: int = 0  # events accepted into the buffer
    rejected: int = 0  # events the encoder refused (bad JSON, type conflict)
    landed: int = 0  # events committed in the sink
    failed: int = 0  # events whose batch the sink refused (kept in the dead-letter directory)
    batches_sealed: dict = field(default_factory=lambda: dict.fromkeys(SEAL_TRIGGERS, 0))
    batches_landed: int = 0

    def as_dict(self, buffered: int) -> dict:
        return {
            "received": self.received,
            "rejected": self.rejected,
            "landed": self.landed,
            "failed": self.failed,
            "buffered": buffered,
            "batches_sealed": dict(self.batches_sealed),
            "batches_landed": self.batches_landed,
        }


class TablePipeline:
    def __init__(
        self,
        table: str,
        sink: Sink,
        *,
        batch_events: int,
        batch_bytes: int,
        flush_interval_ms: int,
        encode_pool: Executor,
        sink_pool: Executor,
        rejections: RejectionLog,
    ):
        self.table = table
        self.buffer = BatchBuffer(batch_events, batch_bytes)
        self.counters = TableCounters()
        self._sink = sink
        self._encoder = Encoder(table)
        self._flush_interval = flush_interval_ms / 1000
        self._encode_pool = encode_pool
        self._sink_pool = sink_pool
        self._rejections = rejections
        self._loop = asyncio.get_running_loop()
        self._age_timer: asyncio.TimerHandle | None = None
        self._sealed: asyncio.Queue = asyncio.Queue()
        self._encoded: asyncio.Queue = asyncio.Queue(ENCODED_QUEUE_DEPTH)
        self._in_flight = 0  # events sealed but not yet landed or rejected
        self._buffered_before = 0
        self._tasks = [
            asyncio.create_task(self._encode_stage(), name=f"encode-{table}"),
            asyncio.create_task(self._write_stage(), name=f"write-{table}"),
        ]

    @property
    def buffered(self) -> int:
        """Events received but not yet landed, rejected or failed."""
        return self.buffer.events + self._in_flight

    def appended(self) -> None:
        """Called by a source after it appended lines to `self.buffer`."""
        events = self.buffer.events
        self.counters.received += events - self._buffered_before
        self._buffered_before = events
        if self.buffer.is_full:
            self.seal("events" if events >= self.buffer.event_limit else "bytes")
        elif events and self._age_timer is None:
            self._age_timer = self._loop.call_later(self._flush_interval, self.seal, "age")

    def rejected_at_source(self, events: int) -> None:
        """Lines a source refused before buffering (over-long, invalid JSON)."""
        self.counters.received += events
        self.counters.rejected += events

    def seal(self, trigger: str) -> None:
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
        if not self.buffer.events:
            return
        sealed = self.buffer.seal()
        self._buffered_before = 0
        self._in_flight += sealed.events
        self.counters.batches_sealed[trigger] += 1
        self._sealed.put_nowait((sealed, time.monotonic()))

    async def drain(self) -> None:
        """Seal what is buffered and wait until every sealed batch is done."""
        self.seal("shutdown")
        await self._sealed.join()
        await self._encoded.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _encode_stage(self) -> None:
        while True:
            sealed, sealed_at = await self._sealed.get()
            try:
                result = await self._loop.run_in_executor(
                    self._encode_pool, self._encoder.encode, sealed.data(), sealed.spans()
                )
                if result.errors:
                    self._reject(sealed, result.errors)
                if result.batch is not None and result.batch.num_rows:
                    await self._encoded.put((result.batch, sealed_at))
            except Exception:
                log.exception("table %s: encoding a batch of %d events failed", self.table, sealed.events)
                self._fail(sealed.events)
            finally:
                self._sealed.task_done()

    async def _write_stage(self) -> None:
        while True:
            batch, sealed_at = await self._encoded.get()
            try:
                await self._loop.run_in_executor(self._sink_pool, self._sink.write, self.table, batch)
                self._in_flight -= batch.num_rows
                self.counters.landed += batch.num_rows
                self.counters.batches_landed += 1
                log.debug(
                    "table %s: landed %d events %.1f ms after sealing",
                    self.table, batch.num_rows, (time.monotonic() - sealed_at) * 1000,
                )
            except Exception as exc:
                # Retries and poison-row bisection come with backpressure (issue 5);
                # for now the batch is kept whole in the dead-letter directory.
                reason = f"{type(exc).__name__}: {exc}"
                try:
                    kept = await self._loop.run_in_executor(
                        self._sink_pool, self._rejections.failed_batch, self.table, batch, reason)
                except Exception:
                    log.exception("table %s: could not keep a refused batch of %d events", self.table, batch.num_rows)
                    kept = "nowhere"
                log.error("table %s: the %s sink refused a batch of %d events (%s); kept in %s",
                          self.table, self._sink.name, batch.num_rows, reason, kept)
                self._fail(batch.num_rows)
            finally:
                self._encoded.task_done()

    def _reject(self, sealed, errors) -> None:
        self._in_flight -= len(errors)
        self.counters.rejected += len(errors)
        for index, reason in errors:
            self._rejections(self.table, sealed.line(index), reason)

    def _fail(self, events: int) -> None:
        self._in_flight -= events
        self.counters.failed += events
