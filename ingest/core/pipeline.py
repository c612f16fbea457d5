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
import bisect
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ingest.backoff import full_jitter
from ingest.core.budget import MemoryBudget, PausedInputs
from ingest.hotpath.buffer import BatchBuffer
from ingest.core.deadletter import DeadLetterStore
from ingest.hotpath.encoder import Encoder
from ingest.core.receipts import Receipt
from ingest.core.batch import BatchId
from ingest.core.ports import Sink
from ingest.durability.wal import WalUnavailable, WriteAheadLog

log = logging.getLogger("ingest.core.pipeline")

SEAL_TRIGGERS = ("events", "bytes", "age", "wait", "shutdown", "replay")
WAIT_SEAL_SECONDS = 0.02  # a wait=flushed request seals its batch this soon: concurrent ones share it
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


class SinkHealth:
    """Whether the sink is failing on its environment (a full disk, I/O
    errors, permission, a locked store), since when and why; shared by every
    table. Set by a failed write, cleared by the next one that succeeds.
    While it is failing, inputs pause: TCP connections register here to be
    resumed, HTTP ingest answers 503."""

    def __init__(self):
        self.failing_since: float | None = None  # unix time of the first failure
        self.error = ""
        self._paused = PausedInputs()

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    @property
    def paused_inputs(self) -> int:
        return len(self._paused)

    def failed(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
            log.error("the sink is failing (%s); inputs paused until a write succeeds", error)
        self.error = error

    def recovered(self, why: str = "a write succeeded") -> None:
        if self.failing_since is None:
            return
        log.warning("the sink was failing for %.1fs; %s: inputs resume", time.time() - self.failing_since, why)
        self.failing_since, self.error = None, ""
        self._paused.resume_all()

    def wait_for_recovery(self, owner: object, resume: Callable[[], None]) -> None:
        """`resume` runs once the sink takes writes again."""
        if self.failing:
            self._paused.add(owner, resume)
        else:
            resume()

    def forget(self, owner: object) -> None:
        self._paused.forget(owner)

    def as_dict(self) -> dict:
        if self.failing_since is None:
            return {"failing": False}
        return {"failing": True, "since": self.failing_since,
                "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failing_since)),
                "for_seconds": round(time.time() - self.failing_since, 3), "error": self.error}


@dataclass
class TableCounters:
    received: int = 0  # events accepted from a source (all of them, good or bad)
    rejected: int = 0  # bad input: invalid JSON, type conflicts, over-long lines
    landed: int = 0  # committed in the sink
    dead_lettered: int = 0  # refused by the sink, out of retries, or past the shutdown grace
    retries: int = 0  # flush attempts after a failure
    batches_sealed: dict = field(default_factory=lambda: dict.fromkeys(SEAL_TRIGGERS, 0))
    batches_landed: int = 0
    batches_already_landed: int = 0  # replayed batches the ledger had: counted landed, not written twice

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
            "batches_already_landed": self.batches_already_landed,
        }


@dataclass
class Group:
    """Lines of one request in a batch, followed by its receipt."""

    receipt: Receipt
    first_line: int  # index of its first line in the batch
    lines: int


@dataclass
class Sealed:
    """A sealed batch on its way, and what became of its lines."""

    lines: object  # the SealedBatch
    batch_id: BatchId | None
    groups: list[Group]
    rejected: list = field(default_factory=list)  # (line index, reason) from the encoder
    dead_lettered: list = field(default_factory=list)  # (row offset, rows, reason) that did not land

    def settle_receipts(self) -> None:
        """Tells each receipt what became of its lines. A group's rows are its
        lines minus the rejected ones, so they are contiguous in the batch."""
        if not self.rejected and not self.dead_lettered:  # the common case: everything landed
            for group in self.groups:
                group.receipt.settle(group.lines, 0, 0, ())
            return
        rejected_lines = [index for index, _ in self.rejected]
        for group in self.groups:
            start, end = group.first_line, group.first_line + group.lines
            lo, hi = bisect.bisect_left(rejected_lines, start), bisect.bisect_left(rejected_lines, end)
            rejected = int(hi - lo)
            reasons = [reason for _, reason in self.rejected[lo:hi]]
            row_start = start - int(lo)
            row_end = row_start + group.lines - rejected
            dead = 0
            for offset, rows, reason in self.dead_lettered:
                overlap = min(row_end, offset + rows) - max(row_start, offset)
                if overlap > 0:
                    dead += overlap
                    reasons.append(reason)
            group.receipt.settle(group.lines - rejected - dead, dead, rejected, reasons)


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
    wal: WriteAheadLog | None = None  # None: --wal off
    on_receipt_settled: object = lambda receipt: None  # callable(receipt): webhooks
    tables: dict = field(default_factory=dict)  # name -> TableConfig: declared columns
    health: SinkHealth = field(default_factory=SinkHealth)


class TablePipeline:
    def __init__(self, table: str, context: PipelineContext):
        self.table = table
        self.counters = TableCounters()
        self.buffer = BatchBuffer(context.batch_events, context.batch_bytes)
        self._context = context
        declared = context.tables.get(table)
        self._encoder = (Encoder(table, schema=declared.schema, strict=declared.strict)
                         if declared is not None and declared.schema is not None else Encoder(table))
        self._loop = asyncio.get_running_loop()
        self._age_timer: asyncio.TimerHandle | None = None
        self._expedited: asyncio.TimerHandle | None = None  # an early seal a waiting client asked for
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
        return self.buffer.events + self._in_flight

    # on the event loop, called by sources

    def appended(self, lsn: int | None = None, receipt: Receipt | None = None, meta: bytes = b"") -> int | None:
        """Called by a source after it appended lines to `self.buffer`: logs
        them to the write-ahead log (unless they come from it: `lsn`) and
        seals the batch when it is full. Returns the lines' lsn, if logged.
        `receipt` follows these lines to the sink; `meta` is logged with them."""
        buffer = self.buffer
        events, nbytes = buffer.events, buffer.nbytes
        if receipt is not None:
            self._groups.append(Group(receipt, self._buffer_events, events - self._buffer_events))
        if events > self._buffer_events and self._context.wal is not None:
            if lsn is None:
                try:
                    lsn = self._log(self._buffer_events, events, meta)
                except WalUnavailable:
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
        if buffer.is_full:
            self.seal("events" if events >= buffer.event_limit else "bytes")
        elif events and self._age_timer is None:
            self._age_timer = self._loop.call_later(self._context.flush_interval, self.seal, "age")
        return lsn

    def append_request(self, lines, rejected: list[int], receipt: Receipt | None, meta: bytes) -> int | None:
        """Appends one HTTP request's accepted lines as a whole: logged first
        (WalUnavailable, with nothing buffered, when the log cannot take
        them: the request must be refused), then buffered; the batch is
        sealed first if they would not fit, so a request is never split
        across batches (nor across write-ahead-log records)."""
        buffer = self.buffer
        count = lines.events - len(rejected)
        lsn = self._log_request(lines, rejected, meta) if self._context.wal is not None else None
        if buffer.events and (buffer.events + count > buffer.event_limit or buffer.nbytes + lines.nbytes > buffer.byte_limit):
            self.seal("events" if buffer.events + count > buffer.event_limit else "bytes")
        event_limit, byte_limit = buffer.event_limit, buffer.byte_limit
        buffer.event_limit = buffer.byte_limit = 0  # no limit while the request goes in whole
        try:
            buffer.extend(lines, 0, rejected)
        finally:
            buffer.event_limit, buffer.byte_limit = event_limit, byte_limit
        return self.appended(lsn=lsn, receipt=receipt)

    def _log_request(self, lines, rejected: list[int], meta: bytes) -> int:
        """Logs a request's lines but the rejected ones, as one record."""
        spans_view, data_view = lines.spans(), lines.data()
        spans = None
        try:
            spans = np.frombuffer(spans_view, np.int64, 2 * lines.events).reshape(-1, 2)
            if rejected:
                spans = np.delete(spans, rejected, axis=0)
            spans = spans.reshape(-1)
            return self._context.wal.append(self.table, spans, data_view, meta)
        finally:
            del spans
            spans_view.release()
            data_view.release()

    def expedite(self) -> None:
        """A client waits for the buffered lines to land: seal shortly, not
        after the whole flush interval."""
        if not self.buffer.events or self._expedited is not None:
            return
        self._expedited = self._loop.call_later(WAIT_SEAL_SECONDS, self.seal, "wait")

    def _log(self, first: int, end: int, meta: bytes = b"") -> int:
        """Appends lines first..end-1 of the buffer to the write-ahead log."""
        spans_view, data_view = self.buffer.spans(), self.buffer.data()
        try:
            spans = np.frombuffer(spans_view, np.int64, 2 * (end - first), 16 * first)
            start, stop = int(spans[0]), int(spans[-1])
            relative = spans - start
            del spans
            lines = data_view[start:stop]
            try:
                return self._context.wal.append(self.table, relative, lines, meta)
            finally:
                lines.release()
        finally:
            spans_view.release()
            data_view.release()

    def rejected_at_source(self, lines: list[bytes], errors: list[str], source: str) -> None:
        """Lines a source refused before buffering; they go to the dead-letter store."""
        self.counters.received += len(lines)
        self.counters.rejected += len(lines)
        log.warning("table %s: rejected %d line(s) from %s; first: %s", self.table, len(lines), source, errors[0])
        task = asyncio.ensure_future(self._keep_rejected(lines, errors, source, None, False))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def seal(self, trigger: str) -> None:
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
        if self._expedited is not None:
            self._expedited.cancel()
            self._expedited = None
        if not self.buffer.events:
            return
        sealed = self.buffer.seal()
        batch_id = None if self._first_lsn is None else BatchId(self._first_lsn, self._last_lsn)
        self._first_lsn = self._last_lsn = None
        groups, self._groups = self._groups, []
        self._buffer_events = self._buffer_bytes = 0
        self._in_flight += sealed.events
        self.counters.batches_sealed[trigger] += 1
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
                                              "batch", batch_id, rows == 0)
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
        if item.batch_id is not None:
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
                             batch_id: BatchId | None, settles: bool) -> None:
        await self._store(self._context.dead_letters.put_rejected, self.table, lines, errors, source,
                          "rejected input", batch_id, settles)
