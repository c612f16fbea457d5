"""One table's path from raw lines to the sink, and the fate of every event.

Sources append framed lines to the table's `BatchBuffer` on the event loop.
`TablePipeline` owns the one decision of when a batch is sealed (events,
bytes or age, whichever first), then runs two stages off the loop, each in
order: the encoder (GIL released, in the encode pool) and the sink (in the
sink's pool, at most `max_flushes_in_flight` writes at a time per sink).
Encoding batch N+1 overlaps with writing batch N.

Every event received ends up counted exactly once as landed, rejected
(bad input, kept in the dead-letter store) or dead-lettered (could not land);
until then it is buffered. All counters change on the event loop, so any
scrape sees `received = landed + rejected + dead_lettered + buffered`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import pyarrow as pa

from ingest.budget import MemoryBudget
from ingest.buffer import BatchBuffer
from ingest.deadletter import DeadLetterStore
from ingest.encoder import Encoder
from ingest.sinks import Sink

log = logging.getLogger("ingest.pipeline")

SEAL_TRIGGERS = ("events", "bytes", "age", "shutdown")
ENCODED_QUEUE_DEPTH = 2  # encoded batches waiting for the sink, per table
DEAD_LETTER_RETRY_SECONDS = 1.0  # a dead-letter write that fails is tried again after this


@dataclass
class RetryPolicy:
    attempts: int  # retries after the first try
    base: float  # seconds
    ceiling: float  # seconds

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.base * 2 ** attempt, self.ceiling))


@dataclass
class TableCounters:
    received: int = 0  # events accepted from a source (all of them, good or bad)
    rejected: int = 0  # bad input: invalid JSON, type conflicts, over-long lines
    landed: int = 0  # committed in the sink
    dead_lettered: int = 0  # refused by the sink, out of retries, or past the shutdown grace
    retries: int = 0  # flush attempts after a failure
    batches_sealed: dict = field(default_factory=lambda: dict.fromkeys(SEAL_TRIGGERS, 0))
    batches_landed: int = 0

    def as_dict(self, buffered: int) -> dict:
        return {
            "received": self.received,
            "rejected": self.rejected,
            "landed": self.landed,
            "dead_lettered": self.dead_lettered,
            "buffered": buffered,
            "retries": self.retries,
            "batches_sealed": dict(self.batches_sealed),
            "batches_landed": self.batches_landed,
        }


@dataclass
class PipelineContext:
    """What every table's pipeline shares."""

    sink: Sink
    encode_pool: Executor
    sink_pool: Executor
    store_pool: Executor  # dead-letter writes, apart from a sink that may be stuck
    sink_slots: asyncio.Semaphore  # bound on flushes in flight into the sink
    budget: MemoryBudget
    dead_letters: DeadLetterStore
    retry: RetryPolicy
    batch_events: int
    batch_bytes: int
    flush_interval: float  # seconds
    observe_flush: object  # callable(table, seconds)


class TablePipeline:
    def __init__(self, table: str, context: PipelineContext):
        self.table = table
        self.counters = TableCounters()
        self.buffer = BatchBuffer(context.batch_events, context.batch_bytes)
        self._context = context
        self._encoder = Encoder(table)
        self._loop = asyncio.get_running_loop()
        self._age_timer: asyncio.TimerHandle | None = None
        self._sealed: asyncio.Queue = asyncio.Queue()
        self._encoded: asyncio.Queue = asyncio.Queue(ENCODED_QUEUE_DEPTH)
        self._in_flight = 0  # events sealed but not yet landed, rejected or dead-lettered
        self._buffer_events = 0  # buffer.events when last counted
        self._buffer_bytes = 0  # buffer.nbytes when last counted against the budget
        self._abandoned = asyncio.Event()  # set when the shutdown grace runs out
        self._tasks = [
            asyncio.create_task(self._encode_stage(), name=f"encode-{table}"),
            asyncio.create_task(self._write_stage(), name=f"write-{table}"),
        ]

    @property
    def buffered(self) -> int:
        """Events received but not yet landed, rejected or dead-lettered."""
        return self.buffer.events + self._in_flight

    # on the event loop, called by sources

    def appended(self) -> None:
        """Called by a source after it appended lines to `self.buffer`."""
        buffer = self.buffer
        events, nbytes = buffer.events, buffer.nbytes
        self.counters.received += events - self._buffer_events
        self._context.budget.take(nbytes - self._buffer_bytes)
        self._buffer_events, self._buffer_bytes = events, nbytes
        if buffer.is_full:
            self.seal("events" if events >= buffer.event_limit else "bytes")
        elif events and self._age_timer is None:
            self._age_timer = self._loop.call_later(self._context.flush_interval, self.seal, "age")

    def rejected_at_source(self, lines: list[bytes], errors: list[str], source: str) -> None:
        """Lines a source refused before buffering; they go to the dead-letter store."""
        self.counters.received += len(lines)
        self.counters.rejected += len(lines)
        self._keep_rejected(lines, errors, source)

    def seal(self, trigger: str) -> None:
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
        if not self.buffer.events:
            return
        sealed = self.buffer.seal()
        self._buffer_events = self._buffer_bytes = 0
        self._in_flight += sealed.events
        self.counters.batches_sealed[trigger] += 1
        self._sealed.put_nowait(sealed)

    # shutdown

    async def drain(self) -> None:
        """Seal what is buffered and wait until every sealed batch has landed
        or been dead-lettered."""
        self.seal("shutdown")
        await self._sealed.join()
        await self._encoded.join()

    def abandon(self) -> None:
        """The grace period is over: what has not landed yet is dead-lettered
        instead of written or retried."""
        self._abandoned.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # the stages

    async def _encode_stage(self) -> None:
        context = self._context
        while True:
            sealed = await self._sealed.get()
            try:
                result = await self._loop.run_in_executor(
                    context.encode_pool, self._encoder.encode, sealed.data(), sealed.spans())
                if result.errors:
                    self._in_flight -= len(result.errors)
                    self.counters.rejected += len(result.errors)
                    self._keep_rejected([sealed.line(i) for i, _ in result.errors],
                                        [reason for _, reason in result.errors], "batch")
                batch = result.batch
                if batch is not None and batch.num_rows:
                    context.budget.take(batch.nbytes)
                    await self._encoded.put(batch)
            except Exception as exc:
                log.exception("table %s: encoding a batch of %d events failed", self.table, sealed.events)
                self._in_flight -= sealed.events
                self.counters.rejected += sealed.events
                self._keep_rejected([sealed.line(i) for i in range(sealed.events)],
                                    [f"encoder failed: {exc}"] * sealed.events, "batch")
            finally:
                context.budget.give_back(sealed.nbytes)
                self._sealed.task_done()

    async def _write_stage(self) -> None:
        while True:
            batch = await self._encoded.get()
            try:
                await self._land(batch)
            finally:
                self._context.budget.give_back(batch.nbytes)
                self._encoded.task_done()

    async def _land(self, batch: pa.RecordBatch) -> None:
        """Writes `batch`, retrying with backoff; bisects it when the sink
        refuses its data, so one poison row cannot sink the rest."""
        context = self._context
        attempt = 0
        while True:
            if self._abandoned.is_set():
                await self._dead_letter(batch, "shutdown grace period expired", "", attempt)
                return
            started = time.monotonic()
            try:
                async with context.sink_slots:
                    # shielded: a write that has started finishes even if we are cancelled
                    await asyncio.shield(self._loop.run_in_executor(
                        context.sink_pool, context.sink.write, self.table, batch))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if context.sink.is_data_error(exc):
                    if batch.num_rows > 1:
                        half = batch.num_rows // 2
                        await self._land(batch.slice(0, half))
                        await self._land(batch.slice(half))
                    else:
                        await self._dead_letter(batch, "refused by the sink", error, attempt + 1)
                    return
                if attempt >= context.retry.attempts:
                    await self._dead_letter(batch, "retries exhausted", error, attempt + 1)
                    return
                attempt += 1
                self.counters.retries += 1
                delay = context.retry.delay(attempt)
                log.warning("table %s: flush of %d events failed (%s); retry %d of %d in %.2fs",
                            self.table, batch.num_rows, error, attempt, context.retry.attempts, delay)
                try:
                    await asyncio.wait_for(self._abandoned.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            else:
                context.observe_flush(self.table, time.monotonic() - started)
                self._in_flight -= batch.num_rows
                self.counters.landed += batch.num_rows
                self.counters.batches_landed += 1
                return

    async def _dead_letter(self, batch: pa.RecordBatch, reason: str, error: str, attempts: int) -> None:
        store = self._context.dead_letters
        while True:
            try:
                path = await self._loop.run_in_executor(
                    self._context.store_pool, store.put_failed, self.table, batch, reason, error, attempts)
                break
            except Exception as exc:
                log.error("table %s: cannot write %d events to the dead-letter store (%s); trying again",
                          self.table, batch.num_rows, exc)
                await asyncio.sleep(DEAD_LETTER_RETRY_SECONDS)
        log.error("table %s: %d events dead-lettered (%s%s) in %s", self.table, batch.num_rows, reason,
                  f": {error}" if error else "", path)
        self._in_flight -= batch.num_rows
        self.counters.dead_lettered += batch.num_rows

    def _keep_rejected(self, lines: list[bytes], errors: list[str], source: str) -> None:
        reason = "rejected input"
        task = self._loop.run_in_executor(
            self._context.store_pool, self._context.dead_letters.put_rejected, self.table, lines, errors, source, reason)
        task.add_done_callback(self._log_rejected_write)
        log.warning("table %s: rejected %d line(s) from %s; first: %s", self.table, len(lines), source, errors[0])

    def _log_rejected_write(self, future) -> None:
        if future.exception() is not None:
            log.error("table %s: could not keep rejected lines in the dead-letter store: %s",
                      self.table, future.exception())
