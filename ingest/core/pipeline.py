"""One table's path from intake to the sink, and the fate of every event.

Sources hand intake to `TablePipeline` through one API, on the event loop:
`append_lines` (one request's lines, whole), `append_stream` /
`finish_stream` (a connection's bytes framed straight into the batch
buffer), `append_batch` (rows already structured, as Arrow), and recovery
hands logged records back through `replay`. Each is logged first (the
`Log` port), then buffered; the `Batcher` decides when the batch seals.
An import hands over stretches of its files through `append_placed` /
`append_batch(batch_id=...)`: each is a batch of its own, under an id
naming the file and its place in it, and not logged (the file is its log).
Two stages then run off the loop, each in order: the encoder (GIL
released, in the encode pool) and the sink (in the sink's pool, at most
`max_flushes_in_flight` writes at a time per sink). Encoding batch N+1
overlaps with writing batch N. What becomes of every event is counted in
`core.accounting`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ingest.backoff import full_jitter
from ingest.core.accounting import ARROW_TRIGGER, PLACED_TRIGGER, TableCounters
from ingest.core.batch import BatchId, Group, Sealed
from ingest.core.batcher import Batcher, BatchLimits, Clock
from ingest.core.budget import MemoryBudget
from ingest.core.health import SinkHealth
from ingest.core.deadletter import DeadLetterStore
from ingest.core.ports import Log, LogUnavailable, Sink
from ingest.core.receipts import Receipt
from ingest.hotpath.buffer import BatchBuffer
from ingest.hotpath.encoder import Encoder
from ingest.schema import conform_batch

log = logging.getLogger("ingest.pipeline")

ENCODED_QUEUE_DEPTH = 2  # encoded batches waiting for the sink, per table
DEAD_LETTER_RETRY_SECONDS = 1.0  # a dead-letter write that fails is tried again after this


@dataclass
class RetryPolicy:
    attempts: int  # retries after the first try, for a failure of unknown cause
    base: float  # seconds
    ceiling: float  # seconds
    timeout: float = 86400.0  # seconds a batch failing on the environment is retried


    def delay(self, attempt: int) -> float:
        return full_jitter(attempt, self.base, self.ceiling)


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
    wal: Log | None = None  # None: --wal off
    on_receipt_settled: object = lambda receipt: None  # callable(receipt): webhooks
    tables: dict = field(default_factory=dict)  # name -> TableConfig: declared columns
    health: SinkHealth = field(default_factory=SinkHealth)
    clock: Clock | None = None  # what times a batch's age; None: the event loop


class TablePipeline:
    def __init__(self, table: str, context: PipelineContext):
        self.table = table
        self.counters = TableCounters()
        self._buffer = BatchBuffer(context.batch_events, context.batch_bytes)
        self._context = context
        declared = context.tables.get(table)
        self._encoder = (Encoder(table, schema=declared.schema, strict=declared.strict)
                         if declared is not None and declared.schema is not None else Encoder(table))
        self._loop = asyncio.get_running_loop()
        self._batcher = Batcher(BatchLimits(context.batch_events, context.batch_bytes, context.flush_interval),
                                context.clock or self._loop, self.seal)
        self._sealed: asyncio.Queue = asyncio.Queue()
        self._encoded: asyncio.Queue = asyncio.Queue(ENCODED_QUEUE_DEPTH)
        self._in_flight = 0  # events sealed but not yet landed, rejected or dead-lettered
        self._buffer_events = 0  # buffer.events when last counted
        self._buffer_bytes = 0  # buffer.nbytes when last counted against the budget
        self._first_lsn: int | None = None  # write-ahead-log records in the buffer, first and last
        self._last_lsn: int | None = None
        self._groups: list[Group] = []  # lines in the buffer that a receipt follows
        self._abandoned = asyncio.Event()  # set when the shutdown grace runs out
        self._side_tasks: set[asyncio.Future] = set()  # dead-letter writes of lines refused at the door
        self._tasks = [
            asyncio.create_task(self._encode_stage(), name=f"encode-{table}"),
            asyncio.create_task(self._write_stage(), name=f"write-{table}"),
        ]

    @property
    def buffered(self) -> int:
        """Events received but not yet landed, rejected or dead-lettered."""
        return self._buffer.events + self._in_flight

    # intake, on the event loop: every source and recovery come in here

    def append_lines(self, lines, rejected=(), *, receipt: Receipt | None = None, meta: bytes = b"",
                     keyed: bool = False) -> int | None:
        """Appends one request's lines (a SealedBatch or BatchBuffer) but the
        sorted `rejected` indexes, as a whole: logged first as one record
        (LogUnavailable, with nothing buffered, when the log cannot take
        them: the request must be refused), then buffered; the open batch is
        sealed first if they would not fit, so a request is never split
        across batches. `receipt` follows them to the sink; `meta` is logged
        with them; `keyed`: it carries an idempotency key. Returns the lsn,
        if logged."""
        buffer = self._buffer
        lsn = self._log_lines(lines, rejected, meta, keyed) if self._context.wal is not None else None
        trigger = self._batcher.overflows(buffer.events, buffer.nbytes, lines.events - len(rejected), lines.nbytes)
        if trigger is not None:
            self.seal(trigger)
        event_limit, byte_limit = buffer.event_limit, buffer.byte_limit
        buffer.event_limit = buffer.byte_limit = 0  # no limit while the request goes in whole
        try:
            buffer.extend(lines, 0, rejected)
        finally:
            buffer.event_limit, buffer.byte_limit = event_limit, byte_limit
        return self._count_appended(lsn, receipt)

    def append_stream(self, framer, data: bytes) -> None:
        """A stream source's bytes, framed by its `framer` straight into the
        batch buffer (no copy); sealed as the batch fills. Each stretch is
        logged as one record; while the log cannot take records the lines
        are kept in memory only (the source pauses: `Log.unavailable`)."""
        buffer, position, size = self._buffer, 0, len(data)
        while position < size:
            position = framer.feed(data, position, buffer)
            self._count_appended(None, None)

    def finish_stream(self, framer) -> None:
        """The stream ended: its unterminated last line still counts as an event."""
        framer.finish(self._buffer)
        self._count_appended(None, None)

    def append_batch(self, batch: pa.RecordBatch, *, receipt: Receipt | None = None, meta: bytes = b"",
                     keyed: bool = False, batch_id: BatchId | None = None) -> int | None:
        """Appends rows that are already structured (Arrow IPC, OTLP) as a
        batch of their own that skips the encoder: logged first
        (LogUnavailable, nothing buffered), then landed after the lines
        buffered before them (the open batch seals first) and before any
        that come after. Counted and settled like lines. Returns the lsn, if
        logged. With `batch_id` (an import's rows: its place in another
        log) nothing is logged and the batch lands under that id."""
        lsn = None
        if batch_id is None:
            lsn = self._log_batch(batch, meta, keyed) if self._context.wal is not None else None
            batch_id = None if lsn is None else BatchId(lsn, lsn)
        self._append_structured(batch, batch_id, receipt)
        return lsn

    def append_placed(self, lines, batch_id: BatchId, origin=None) -> None:
        """Lines whose place is known in a log of their own (`batch_id`: an
        import's file and the stretch of it they fill), as one batch under
        that id, so the sink records the place in the same commit as the
        rows. `lines` (a BatchBuffer of their own) are handed over, not
        copied, and not logged: the file is their log. Lines buffered
        before them seal first. `origin(i)` names where line i came from
        ("file:line"), which the dead-letter store keeps for a rejected
        line."""
        if self._buffer.events:
            self.seal(PLACED_TRIGGER)
        sealed = lines.seal()
        if not sealed.events:
            return
        self.counters.received += sealed.events
        self.counters.sealed(PLACED_TRIGGER)
        self._in_flight += sealed.events
        self._context.budget.take(sealed.nbytes)
        self._sealed.put_nowait(Sealed(sealed, batch_id, [], origin=origin))

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Structured rows made to fit this table (its declared columns, the
        types sinks take) before they are logged; ValueError naming the
        column that does not fit."""
        declared = self._context.tables.get(self.table)
        if declared is None:
            return conform_batch(batch)
        return conform_batch(batch, declared.schema, declared.strict)

    def replay(self, record, receipt: Receipt | None = None) -> None:
        """A write-ahead-log record of lines handed back by recovery,
        buffered under its own lsn (not logged again); `receipt` is its request's."""
        for i in range(record.lines):
            self._buffer.append_line(record.line(i))
        self._count_appended(record.lsn, receipt)

    def replay_batch(self, lsn: int, batch: pa.RecordBatch, receipt: Receipt | None = None) -> None:
        """An Arrow record's rows handed back by recovery, under its own lsn."""
        self._append_structured(batch, BatchId(lsn, lsn), receipt)

    def expedite(self) -> None:
        """A client waits for the buffered lines to land: seal shortly, not
        after the whole flush interval."""
        self._batcher.expedite(self._buffer.events)

    def _count_appended(self, lsn: int | None, receipt: Receipt | None) -> int | None:
        """Takes in the lines added to the buffer since the last call: logs
        them unless they were logged already (`lsn`), counts them, charges
        the budget and lets the batcher seal. Returns their lsn, if logged."""
        buffer = self._buffer
        events, nbytes = buffer.events, buffer.nbytes
        if receipt is not None:
            self._groups.append(Group(receipt, self._buffer_events, events - self._buffer_events))
        if events > self._buffer_events and self._context.wal is not None:
            if lsn is None:
                try:
                    lsn = self._log_buffered(self._buffer_events, events)
                except LogUnavailable:
                    pass  # kept in memory only; the sources pause until the log takes records again
            if lsn is not None:
                if self._first_lsn is None:
                    self._first_lsn = lsn
                self._last_lsn = lsn
        else:
            lsn = None
        self.counters.received += events - self._buffer_events
        self._context.budget.take(nbytes - self._buffer_bytes)
        self._buffer_events, self._buffer_bytes = events, nbytes
        self._batcher.push(events, nbytes)
        return lsn

    def _append_structured(self, batch: pa.RecordBatch, batch_id: BatchId | None, receipt: Receipt | None) -> None:
        """Queues structured rows as their own sealed batch, behind the lines buffered before them."""
        if self._buffer.events:
            self.seal(ARROW_TRIGGER)
        rows = batch.num_rows
        groups = [Group(receipt, 0, rows)] if receipt is not None else []
        self.counters.received += rows
        self.counters.sealed(ARROW_TRIGGER)
        self._in_flight += rows
        self._context.budget.take(batch.nbytes)
        self._sealed.put_nowait(Sealed(None, batch_id, groups, structured=batch))

    # logging to the write-ahead log

    def _log_lines(self, lines, rejected, meta: bytes, keyed: bool) -> int:
        """Logs a request's lines but the rejected ones, as one record."""
        spans_view, data_view = lines.spans(), lines.data()
        spans = None
        try:
            if len(rejected):  # the kept lines' spans, a copy
                spans = np.delete(np.frombuffer(spans_view, np.int64, 2 * lines.events).reshape(-1, 2), rejected,
                                  axis=0).reshape(-1)
            else:  # the spans as the buffer holds them
                spans = spans_view[:2 * lines.events]
            return self._context.wal.append(self.table, spans, data_view, meta, keyed=keyed)
        finally:
            del spans
            spans_view.release()
            data_view.release()

    def _log_buffered(self, first: int, end: int) -> int:
        """Logs lines first..end-1 of the buffer as one record."""
        spans_view, data_view = self._buffer.spans(), self._buffer.data()
        try:
            spans = np.frombuffer(spans_view, np.int64, 2 * (end - first), 16 * first)
            start, stop = int(spans[0]), int(spans[-1])
            relative = spans - start
            del spans
            lines = data_view[start:stop]
            try:
                return self._context.wal.append(self.table, relative, lines)
            finally:
                lines.release()
        finally:
            spans_view.release()
            data_view.release()

    def _log_batch(self, batch: pa.RecordBatch, meta: bytes, keyed: bool) -> int:
        return self._context.wal.append_batch(self.table, batch, meta, keyed)

    def rejected_at_source(self, lines: list[bytes], errors: list[str], source: str) -> None:
        """Lines a source refused before buffering; they go to the dead-letter store."""
        self.counters.received += len(lines)
        self.counters.rejected += len(lines)
        log.warning("table %s: rejected %d line(s) from %s; first: %s", self.table, len(lines), source, errors[0])
        task = asyncio.ensure_future(self._keep_rejected(lines, errors, source, None, False))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def seal(self, trigger: str) -> None:
        """Seals the open batch of lines, if any, and queues it for the encoder."""
        self._batcher.taken()
        if not self._buffer.events:
            return
        sealed = self._buffer.seal()
        batch_id = None if self._first_lsn is None else BatchId(self._first_lsn, self._last_lsn)
        self._first_lsn = self._last_lsn = None
        groups, self._groups = self._groups, []
        self._buffer_events = self._buffer_bytes = 0
        self._in_flight += sealed.events
        self.counters.sealed(trigger)
        self._sealed.put_nowait(Sealed(sealed, batch_id, groups))

    # shutdown

    async def drain(self) -> None:
        """Seal what is buffered and wait until every sealed batch has landed
        or been dead-lettered."""
        self.seal("shutdown")
        await self._sealed.join()
        await self._encoded.join()
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks))

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
            item = await self._sealed.get()
            if item.structured is not None:
                try:
                    await self._pass_structured(item)
                finally:
                    self._sealed.task_done()
                continue
            sealed, batch_id = item.lines, item.batch_id
            try:
                try:
                    result = await self._loop.run_in_executor(
                        context.encode_pool, self._encoder.encode, sealed.data(), sealed.spans())
                    batch, errors = result.batch, result.errors
                except Exception as exc:
                    log.exception("table %s: encoding a batch of %d events failed", self.table, sealed.events)
                    batch, errors = None, [(i, f"encoder failed: {exc}") for i in range(sealed.events)]
                rows = batch.num_rows if batch is not None else 0
                item.rejected = errors
                if errors:
                    log.warning("table %s: rejected %d line(s) of a batch; first: %s", self.table, len(errors), errors[0][1])
                    # kept before the batch lands, so a replay after a crash cannot miss them
                    await self._keep_rejected([sealed.line(i) for i, _ in errors], [reason for _, reason in errors],
                                              "batch", batch_id, rows == 0,
                                              item.origin and [item.origin(i) for i, _ in errors])
                    self._in_flight -= len(errors)
                    self.counters.rejected += len(errors)
                if rows:
                    context.budget.take(batch.nbytes)
                    await self._encoded.put((batch, item))
                else:
                    self._settle(item)
            finally:
                context.budget.give_back(sealed.nbytes)
                self._sealed.task_done()

    async def _pass_structured(self, item: Sealed) -> None:
        """Rows that came structured go to the sink as they are; the budget
        was charged their size when they were appended."""
        batch = item.structured
        if batch.num_rows:
            await self._encoded.put((batch, item))
        else:
            self._context.budget.give_back(batch.nbytes)
            self._settle(item)

    async def _write_stage(self) -> None:
        while True:
            batch, item = await self._encoded.get()
            try:
                await self._land(batch, item.batch_id, 0, item.dead_lettered)
                self._settle(item)
            finally:
                self._context.budget.give_back(batch.nbytes)
                self._encoded.task_done()

    def _settle(self, item: "Sealed") -> None:
        """The batch is done: every line landed, rejected or dead-lettered."""
        if item.batch_id is not None and not item.batch_id.log:  # an import's batch: its file is its log
            self._context.wal.settle(self.table, item.batch_id.last_lsn)
        if item.groups:
            item.settle_receipts()
            for group in item.groups:
                self._context.on_receipt_settled(group.receipt)

    async def _land(self, batch: pa.RecordBatch, batch_id: BatchId | None, offset: int, dead: list) -> None:
        """Writes `batch`; bisects it at once when the sink refuses its data,
        so one poison row cannot sink the rest. An environmental failure (a
        full disk, permission, a locked store) is retried with backoff for
        --retry-timeout seconds; any other failure --retry-attempts times."""
        context = self._context
        sink, health, retry = context.sink, context.health, context.retry
        attempt = 0  # retries so far, of any kind: the backoff's exponent
        unknown = 0  # failures of unknown cause
        outage_began: float | None = None  # monotonic time of this batch's first environmental failure
        while True:
            if self._abandoned.is_set():
                await self._dead_letter(batch, batch_id, "shutdown grace period expired", "", attempt)
                dead.append((offset, batch.num_rows, "shutdown grace period expired"))
                return
            started = time.monotonic()
            try:
                async with context.sink_slots:
                    # shielded: a write that has started finishes even if we are cancelled
                    written = await asyncio.shield(self._loop.run_in_executor(
                        context.sink_pool, sink.write, self.table, batch, batch_id))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if sink.is_data_error(exc):
                    if outage_began is not None:  # the sink answers again, if only to refuse these rows
                        health.recovered("the sink answered")
                    if batch.num_rows > 1:
                        half = batch.num_rows // 2
                        await self._land(batch.slice(0, half), batch_id and batch_id.slice(0, half), offset, dead)
                        await self._land(batch.slice(half), batch_id and batch_id.slice(half, batch.num_rows - half),
                                         offset + half, dead)
                        if batch_id is not None and batch_id.whole:
                            await self._mark_settled(batch_id)
                    else:
                        await self._dead_letter(batch, batch_id, "refused by the sink", error, attempt + 1)
                        dead.append((offset, 1, f"refused by the sink: {error}"))
                    return
                delay = retry.delay(attempt + 1)
                if sink.is_environment_error(exc):
                    health.failed(error)
                    if outage_began is None:
                        outage_began = started
                    left = retry.timeout - (time.monotonic() - outage_began)
                    if left <= 0:
                        reason = f"retry timeout of {retry.timeout:g}s expired"
                        await self._dead_letter(batch, batch_id, reason, error, attempt + 1)
                        dead.append((offset, batch.num_rows, f"{reason}: {error}"))
                        # nothing of this batch probes the sink any more: let intake try new batches
                        health.recovered(f"gave up on a batch of {self.table}")
                        return
                    delay = min(delay, left)
                    plan = f"sink failing for {time.monotonic() - outage_began:.1f}s of --retry-timeout {retry.timeout:g}s"
                else:
                    if unknown >= retry.attempts:
                        await self._dead_letter(batch, batch_id, "retries exhausted", error, attempt + 1)
                        dead.append((offset, batch.num_rows, f"retries exhausted: {error}"))
                        if outage_began is not None:
                            health.recovered(f"gave up on a batch of {self.table}")
                        return
                    unknown += 1
                    plan = f"{unknown} of {retry.attempts}"
                attempt += 1
                self.counters.retries += 1
                log.warning("table %s: flush of %d events failed (%s); retry %d (%s) in %.2fs",
                            self.table, batch.num_rows, error, attempt, plan, delay)
                try:
                    await asyncio.wait_for(self._abandoned.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            else:
                health.recovered()
                context.observe_flush(self.table, time.monotonic() - started)
                self._in_flight -= batch.num_rows
                self.counters.landed += batch.num_rows
                self.counters.batches_landed += 1
                if not written:  # only a replayed batch can be in the ledger already: lsns are never reused
                    self.counters.batches_already_landed += 1
                    log.info("table %s: batch %s was already in the sink's ledger; skipped", self.table, batch_id)
                return

    async def _mark_settled(self, batch_id: BatchId) -> None:
        """Records in the sink that a bisected batch is finished."""
        try:
            await self._loop.run_in_executor(self._context.sink_pool, self._context.sink.mark_settled, self.table, batch_id)
        except Exception as exc:  # a replay would find its slices landed and skip them
            log.error("table %s: could not record bisected batch %s as settled: %s", self.table, batch_id, exc)

    async def _store(self, write, *args):
        """Runs a dead-letter write, trying again until it succeeds."""
        while True:
            try:
                return await self._loop.run_in_executor(self._context.store_pool, write, *args)
            except Exception as exc:
                log.error("table %s: cannot write to the dead-letter store (%s); trying again", self.table, exc)
                await asyncio.sleep(DEAD_LETTER_RETRY_SECONDS)

    async def _dead_letter(self, batch: pa.RecordBatch, batch_id: BatchId | None, reason: str, error: str,
                           attempts: int) -> None:
        settles = batch_id is not None and batch_id.whole
        path = await self._store(self._context.dead_letters.put_failed, self.table, batch, reason, error, attempts,
                                 batch_id, settles)
        log.error("table %s: %d events dead-lettered (%s%s) in %s", self.table, batch.num_rows, reason,
                  f": {error}" if error else "", path)
        self._in_flight -= batch.num_rows
        self.counters.dead_lettered += batch.num_rows

    async def _keep_rejected(self, lines: list[bytes], errors: list[str], source: str,
                             batch_id: BatchId | None, settles: bool, sources: list[str] | None = None) -> None:
        await self._store(self._context.dead_letters.put_rejected, self.table, lines, errors,
                          sources[0] if sources else source, "rejected input", batch_id, settles, sources)
