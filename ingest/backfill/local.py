"""A standalone import (`--data-dir D`): the server's own pipeline, in this
process, with no listeners. It locks D as a server does (so no server may
run on it meanwhile), lands what D's write-ahead log still holds, then
hands each chunk of each file to the table's pipeline as a batch of its
own, under an id naming the file and the stretch of it: the same encoder,
schema rules, dead-letter store and sink ledger as the server, without
the write-ahead log (the files are their own log).

Resuming: each file's landed stretch ends where the sink's ledger (and
the dead-letter store, for batches that went there whole) says; a batch
of which only some bisected slices landed is read again exactly, so its
landed slices are recognised. Dead-letter entries of batches that had not
landed are removed first: reading those lines again puts them back."""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from ingest.backfill.inputs import InputError
from ingest.backfill.job import Job
from ingest.backfill.progress import Progress, Summary
from ingest.backfill.readers import ReadOptions, chunks
from ingest.core.batch import BatchId
from ingest.sinks.delta.sink import ROW_BITS
from ingest.sinks.identity import fold

log = logging.getLogger("ingest.import")

DELTA_POSITION_LIMIT = 1 << (63 - ROW_BITS)  # a Delta watermark holds a position below this


class MaxErrors(Exception):
    pass


def resume_point(complete: list, settled: list, partial: list) -> tuple[int, int | None]:
    """Where a file's landed stretch ends, from the (first, last) places of
    its batches: `complete` (the sink's ledger), `settled` (batches the
    dead-letter store finished: rejected or dead-lettered whole) and
    `partial` (some bisected slices landed). A table's batches are written
    one at a time and in order, but a batch rejected whole is settled by the
    encoder, which runs ahead of the writes: only batches that continue the
    stretch from the file's start count. Delta's ledger gives its watermark
    as (1, last) and a partial batch's predecessors as (1, first - 1), hence
    the slack of one. Returns (start, end of the batch to read again exactly
    at start, or None)."""
    start = 0
    for first, last in sorted(complete + settled):
        if first <= start + 1 and last > start:
            start = last
    frontier = sorted((first, last) for first, last in partial if first <= start + 1 and last > start)
    return frontier[0] if frontier else (start, None)


class Standalone:
    def __init__(self, server, job: Job, options: ReadOptions, progress: Progress, max_errors: int | None,
                 stdin_stream=None):
        self.server = server
        self.job = job
        self.options = options
        self.progress = progress
        self.max_errors = max_errors
        self.stdin_stream = stdin_stream
        self.summary = Summary(job.table, resumable=job.resumable)
        self._stop = asyncio.Event()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="import-read")

    async def run(self) -> Summary:
        loop = asyncio.get_running_loop()
        server = self.server
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupted, sig)
        for pipeline in list(server.pipelines.values()):  # what the write-ahead log replayed lands first
            await pipeline.drain()
        pipeline = server.pipeline(self.job.table)
        before = pipeline.counters.landed, pipeline.counters.rejected, pipeline.counters.dead_lettered
        entries = await loop.run_in_executor(self._reader, server.dead_letters.batch_entries)
        read_whole: list[int] = []
        ticker = asyncio.ensure_future(self._report_landed(pipeline, before))
        try:
            for index, file in self.job.to_read(self.summary, self.progress):
                if self._stop.is_set():
                    break
                if await self._import_file(index, file, pipeline, entries, before):
                    read_whole.append(index)
        except MaxErrors:
            pass  # over_max_errors, below, says so
        finally:
            self._reader.shutdown(wait=False)
            await pipeline.drain()
            ticker.cancel()
            counters = pipeline.counters
            self.summary.events_landed = counters.landed - before[0]
            self.summary.events_rejected = counters.rejected - before[1]
            self.summary.events_dead_lettered = counters.dead_lettered - before[2]
            self.summary.seconds = time.monotonic() - self.progress.started  # as the bar counts it
        self.summary.over_max_errors(self.max_errors)
        if read_whole and self.job.resumable:
            self.job.complete.update(read_whole)
            self.job.save()
        return self.summary

    async def _report_landed(self, pipeline, before) -> None:
        """What lands meanwhile, for the progress bar or lines (also while the last batches drain)."""
        while True:
            await asyncio.sleep(self.progress.tick_seconds)
            self.progress.landed(pipeline.counters.landed - before[0], pipeline.counters.rejected - before[1])

    def _interrupted(self, sig: int) -> None:
        if not self._stop.is_set():
            self.summary.stopped = f"{signal.Signals(sig).name} received; what was read has landed"
            self._stop.set()

    async def _import_file(self, index: int, file, pipeline, entries, before) -> bool:
        """Reads one file from where it had landed to its end; False if stopped before its end."""
        loop = asyncio.get_running_loop()
        log_name = self.job.log(index)
        start, partial = await self._landed_to(log_name, entries)
        await loop.run_in_executor(self._reader, self._drop_unlanded_entries, log_name, start, entries)
        self.summary.files += 1
        if start:
            self.summary.files_resumed += 1
        self.progress.file_started(index, file.name, file.size, start)
        iterator = chunks(file, start, self.options, self.stdin_stream, first_end=partial)
        delta = self.server.settings.sink == "delta"
        ahead = loop.run_in_executor(self._reader, next, iterator, None)
        try:
            while True:
                chunk = await ahead
                if chunk is None:
                    break
                if self._stop.is_set():
                    return False
                ahead = loop.run_in_executor(self._reader, next, iterator, None)  # read on while this one lands
                if delta and chunk.end >= DELTA_POSITION_LIMIT:
                    raise InputError(f"{file.name}: the Delta sink records positions below {DELTA_POSITION_LIMIT:,} "
                                     "bytes; split the file")
                await self.server.budget.room()
                batch_id = BatchId(chunk.start, chunk.end, log=log_name)
                if chunk.rows is not None:
                    try:
                        rows = pipeline.conform(chunk.rows)
                    except ValueError as exc:  # a declared column its rows cannot fill
                        raise InputError(f"{file.name}: {exc}") from None
                    pipeline.append_batch(rows, batch_id=batch_id)
                else:
                    pipeline.append_placed(chunk.lines, batch_id, chunk.origin)
                self.summary.events_read += chunk.events
                counters = pipeline.counters
                rejected = counters.rejected - before[1]
                self.progress.advance(chunk.read_bytes, chunk.events, counters.landed - before[0], rejected)
                if self.max_errors is not None and rejected > self.max_errors:
                    raise MaxErrors()
        finally:
            if not ahead.done():
                await asyncio.wait([ahead])
            iterator.close()
        self.progress.file_done(file.size)
        self.summary.bytes_read += max(file.size, 0)
        return True

    async def _landed_to(self, log_name: str, entries) -> tuple[int, int | None]:
        """Where the file's landed stretch ends, and the end of a batch
        beginning there of which only some slices landed (None if none)."""
        loop = asyncio.get_running_loop()
        server = self.server
        ledger = await loop.run_in_executor(server.sink_pool, server.sink.ledger, log_name)
        table = fold(self.job.table)
        complete = [r for name, ranges in ledger.complete.items() if fold(name) == table for r in ranges]
        partial = [r for name, ranges in ledger.partial.items() if fold(name) == table for r in ranges]
        settled = [(b.first_lsn, b.last_lsn) for _, name, b, settles in entries
                   if settles and b.log == log_name and fold(name) == table]
        return resume_point(complete, settled, partial)

    def _drop_unlanded_entries(self, log_name: str, start: int, entries) -> None:
        """Dead-letter entries of this file's batches past its landed stretch
        (settling ones too: the encoder settles a batch it rejected whole
        ahead of the writes before it): reading those batches again keeps
        their lines again."""
        for path, _, batch_id, _ in entries:
            if batch_id.log == log_name and batch_id.first_lsn >= start:
                log.info("removing %s: its batch %s had not landed and is read again", path, batch_id)
                self.server.dead_letters.remove(self.server.dead_letters.entry(path))
