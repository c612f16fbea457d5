"""The write-ahead log: accepted events survive a crash.

Every group of lines appended to a table's buffer is first appended to the
log as one record (an Arrow batch, as one ARROW record); an HTTP request is
answered only once its records are as durable as `--wal-fsync` asks. On
start, the records whose batches did not settle (land or go to the
dead-letter store) are replayed, in order, before any new input is taken.

A segment is at most `segment_bytes` long (one record may overflow it),
and is deleted once every record in it and in every older segment has
settled (oldest first, so the segments on disk are always consecutive: a
missing one is damage, reported). The directory is fsynced when a segment
is created.

Sequence numbers (lsn) are consecutive across the whole log and never
reused: the next one comes from the last record, or from the newest
segment's header when every record has been collected, and the server also
starts above every id in the sink's ledger. A gap in the sequence is
reported as lost records.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest.core.ports import LogUnavailable
from ingest.durability import FSYNC_MODES
from ingest.durability.keys import KeysFile
from ingest.durability.wal.files import OS, Files
from ingest.durability.wal.record import KEYED, MAX_BODY, Record, batch_record_parts, is_tombstone, record_parts
from ingest.durability.wal.segment import (
    HEADER_SIZE, Damage, Gap, drop_kept_damage, scan_segment, segment_header, segment_number, segment_paths,
    sequence_gaps, truncate_torn_tail,
)

log = logging.getLogger("ingest.wal")

RETRY_SECONDS = 1.0  # after a failed append, inputs hold off this long before trying again


class WalUnavailable(LogUnavailable):
    """The log cannot be appended to; the lines stay in memory only."""


class WriteAheadLog:
    def __init__(self, directory: Path, fsync: str = "always", fsync_interval_ms: int = 20,
                 segment_bytes: int = 64 << 20, files: Files = OS, clock=time.monotonic):
        if fsync not in FSYNC_MODES:
            raise ValueError(f"wal fsync must be one of {FSYNC_MODES}")
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._interval = fsync_interval_ms / 1000
        self._files = files
        self._clock = clock
        self._keys = KeysFile(directory, files)
        self.next_lsn = 1
        self.torn_tails = 0  # counters, for /metrics
        self.corrupt_records = 0
        self.failed_appends = 0
        self._failed_at: float | None = None  # when the last append failed
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_size = 0
        self._segments: dict[Path, dict[str, int]] = {}  # segment -> table -> last lsn in it
        self._segment_tables: dict[str, int] = {}  # the current segment's entry in _segments
        self._segment_keys: dict[Path, list[bytes]] = {}  # segment -> meta of its keyed records
        self._settled: dict[str, int] = {}  # table -> every record up to this lsn has settled
        self._written_lsn = 0
        self._synced_lsn = 0
        self._waiters: list[tuple[int, Callable[[OSError | None], None]]] = []  # (lsn, told once it is durable)
        self.gaps: list[Gap] = []  # found by recover()
        self.missing_records = 0  # lsns in those gaps, for /metrics
        self.damaged_events = 0  # events that corrupt records' heads claim (unverified), for /metrics
        self._sync_running = False
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="wal-fsync")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.TimerHandle | None = None

    # recovery

    def recover(self) -> Iterator[Record | Damage]:
        """Yields every readable record and every damage, in log order, and
        mends the files: torn tails are truncated; a segment's unreadable
        records are dropped from it once the consumer has kept them (set
        `kept` on the damage). Gaps in the sequence are in `self.gaps`.
        Segments of every readable format version are replayed alike.
        Must run before `open`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        scans = []
        for path in segment_paths(self.directory):
            scan = scan_segment(path, self._files)
            scans.append(scan)
            tables: dict[str, int] = {}
            if scan.first_lsn is not None:
                self.next_lsn = max(self.next_lsn, scan.first_lsn)
            for record in scan.records:
                self.next_lsn = max(self.next_lsn, record.lsn + 1)
                if not is_tombstone(record):
                    tables[record.table] = max(tables.get(record.table, 0), record.lsn)
            for damage in scan.damage:
                if damage.torn_tail:
                    self.torn_tails += 1
                    log.warning("wal %s: %s at byte %d; truncating", path.name, damage.reason, damage.offset)
                else:
                    self.corrupt_records += 1
                    claimed = damage.claimed
                    self.damaged_events += claimed[1] if claimed and claimed[1] < MAX_BODY else 0
                    log.error("wal %s: %s at byte %d; moved to the dead-letter store", path.name, damage.reason, damage.offset)
            truncate_torn_tail(scan, self._files)
            self._segments[path] = tables
            self._segment_keys[path] = [r.meta for r in scan.records if r.keyed]
            yield from (record for record in scan.records if not is_tombstone(record))
            yield from scan.corrupt
            try:  # the consumer has kept the damage by now: drop it from the log, so it is kept once
                drop_kept_damage(scan, self._files)
            except OSError as exc:
                log.error("wal %s: cannot rewrite without its damage (%s); it is reported again next start",
                          path.name, exc)
        self.gaps = sequence_gaps(scans)
        for gap in self.gaps:
            self.missing_records += gap.last_lsn - gap.first_lsn + 1
            log.error("wal: %s", gap.reason)

    def start_above(self, lsn: int) -> None:
        """The next record gets a number above `lsn` (the highest one the
        sink's ledger or the dead-letter store knows), so a fresh or emptied
        log can never reuse an id that has landed."""
        self.next_lsn = max(self.next_lsn, lsn + 1)

    # appending

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts a fresh segment after the ones recovered. When it cannot be
        created (a full disk), the log starts unavailable: inputs hold off
        and each append tries again once RETRY_SECONDS have passed."""
        self._loop = loop
        try:
            self._rotate()
        except OSError as exc:
            self._failed(exc)
        if self.fsync != "off":  # `always` too: records nobody waits for (TCP, wait=none) are synced this soon
            self._ticker = loop.call_later(self._interval, self._tick)

    def append(self, table: str, spans: np.ndarray | memoryview, data, meta: bytes = b"", keyed: bool = False) -> int:
        """Logs one group of lines, written at once; returns its lsn. Durable
        per the fsync mode once `durable(lsn)` returns. Raises WalUnavailable,
        having written nothing, when it cannot be written: the caller must
        not acknowledge the lines. An lsn is used only by a record written.
        `keyed`: the request carried an Idempotency-Key."""
        flags = KEYED if keyed else 0
        return self._append(table, meta, keyed, lambda lsn: record_parts(lsn, table, spans, data, meta, flags))

    def append_batch(self, table: str, batch: pa.RecordBatch, meta: bytes = b"", keyed: bool = False) -> int:
        """Logs one Arrow record batch as one ARROW record; as `append`."""
        flags = KEYED if keyed else 0
        return self._append(table, meta, keyed, lambda lsn: batch_record_parts(lsn, table, batch, meta, flags))

    def _append(self, table: str, meta: bytes, keyed: bool, parts_for) -> int:
        if self.unavailable:
            raise WalUnavailable("the write-ahead log could not be written a moment ago")
        try:
            if self._fd is None or self._segment_size >= self.segment_bytes:
                self._rotate()
        except OSError as exc:
            self._failed(exc)
            raise WalUnavailable(str(exc)) from exc
        lsn = self.next_lsn
        self._write(parts_for(lsn), lsn)
        self.next_lsn += 1
        self._segment_tables[table] = lsn
        if keyed:
            self._segment_keys[self._segment].append(bytes(meta))
        return lsn

    def _write(self, parts: list, lsn: int) -> None:
        size = sum(len(part) for part in parts)
        try:
            self._files.write_all(self._fd, parts, size)
        except OSError as exc:
            parts.clear()  # the caller releases the lines' buffer as the error goes up
            # Cut the torn record off, so later records follow whole ones.
            try:
                self._files.truncate(self._fd, self._segment_size)
            except OSError:
                pass
            self.failed_appends += 1
            self._failed(exc)
            raise WalUnavailable(str(exc)) from exc
        if self._failed_at is not None:
            log.warning("wal: appending again")
            self._failed_at = None
        self._segment_size += size
        self._written_lsn = lsn

    def _failed(self, exc: OSError) -> None:
        if self._failed_at is None:
            log.error("wal: cannot append (%s); inputs are refused until it can", exc)
        self._failed_at = self._clock()

    @property
    def unavailable(self) -> bool:
        """An append failed (a full disk, say) within the last second: inputs
        hold off; after that, the next append tries again."""
        return self._failed_at is not None and self._clock() - self._failed_at < RETRY_SECONDS

    def synced(self, lsn: int) -> asyncio.Future | None:
        """A future that resolves once `lsn` is durable, or None if it already is."""
        if self._durable_already(lsn):
            return None
        future = self._loop.create_future()

        def settle(error: OSError | None) -> None:
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(None)

        self.when_synced(lsn, settle)
        return future

    def when_synced(self, lsn: int, callback: Callable[[OSError | None], None]) -> bool:
        """Calls `callback(None)` on the loop once `lsn` is durable, or
        `callback(OSError)` if the fsync that was to make it so failed; False
        (and no call) when it is durable already. A callback, not a future:
        an ack waiting on it is answered in the same loop iteration as the fsync."""
        if self._durable_already(lsn):
            return False
        self._waiters.append((lsn, callback))
        if self.fsync == "always":
            self._start_sync()
        return True

    def _durable_already(self, lsn: int) -> bool:
        return self.fsync == "off" or lsn <= self._synced_lsn

    async def durable(self, lsn: int) -> None:
        future = self.synced(lsn)
        if future is not None:
            await future

    def _tick(self) -> None:
        if self._written_lsn > self._synced_lsn:
            self._start_sync()
        self._ticker = self._loop.call_later(self._interval, self._tick)

    def _start_sync(self) -> None:
        """Group commit: one fsync covers every record written before it
        started. In `always` mode one starts as soon as an ack waits for a
        record and none is in flight, so at low load an ack costs about one
        fsync and under load fsyncs batch by themselves; records nobody waits
        for (TCP, wait=none) are synced by the timer. `interval` syncs on the
        timer only, to bound how often the disk is flushed."""
        if self._sync_running or self._fd is None:
            return
        if self._written_lsn <= self._synced_lsn:
            self._synced(self._written_lsn, None)
            return
        self._sync_running = True
        target = self._written_lsn
        # a plain pool future, handed back with call_soon_threadsafe: no asyncio future to chain per fsync
        future = self._sync_pool.submit(self._files.fsync, self._fd)
        future.add_done_callback(lambda f: self._hand_back(self._synced, target, f))

    def _hand_back(self, callback, *args) -> None:
        """From the fsync thread to the loop."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop has closed: nobody is left to tell
            pass

    def _synced(self, target: int, future) -> None:
        self._sync_running = False
        if future is not None and future.exception() is not None:
            log.error("wal fsync failed: %s", future.exception())
            error = OSError(f"write-ahead log fsync failed: {future.exception()}")
            failed = [waiter for lsn, waiter in self._waiters if lsn <= target]
            self._waiters = [(lsn, waiter) for lsn, waiter in self._waiters if lsn > target]
            for waiter in failed:
                waiter(error)
            return
        self._synced_lsn = max(self._synced_lsn, target)
        done = [waiter for lsn, waiter in self._waiters if lsn <= self._synced_lsn]
        still = self._waiters = [(lsn, waiter) for lsn, waiter in self._waiters if lsn > self._synced_lsn]
        for waiter in done:
            waiter(None)
        if still and self.fsync == "always":
            self._start_sync()  # what was waited for while this fsync ran shares the next one

    def _rotate(self) -> None:
        """Closes the current segment (fsynced) and starts the next one,
        whose header records the lsn its first record will get."""
        paths = segment_paths(self.directory)
        number = segment_number(paths[-1]) + 1 if paths else 1
        path = self.directory / f"segment-{number:010d}.wal"
        files = self._files
        fd = files.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        try:
            files.write(fd, segment_header(self.next_lsn))
            files.fsync(fd)
            files.fsync_directory(self.directory)
        except OSError:
            files.close(fd)
            files.unlink(path)
            raise
        if self._fd is not None:
            files.fsync(self._fd)
            files.close(self._fd)
            self._synced_lsn = self._written_lsn
        self._fd, self._segment, self._segment_size = fd, path, HEADER_SIZE
        self._segments[path] = self._segment_tables = {}  # the current segment's, at hand for every append
        self._segment_keys[path] = []
        self._collect()

    # settling and cleanup

    def settle(self, table: str, lsn: int) -> None:
        """Every record of `table` up to `lsn` has landed or been dead-lettered."""
        if lsn > self._settled.get(table, 0):
            self._settled[table] = lsn
            self._collect()

    def _collect(self) -> None:
        """Deletes settled segments, oldest first and never past one that is
        not settled, so the segments on disk stay consecutive."""
        for path, tables in sorted(self._segments.items(), key=lambda item: segment_number(item[0])):
            if path == self._segment or not all(self._settled.get(table, 0) >= last for table, last in tables.items()):
                return
            self._keys.save(self._segment_keys.pop(path, []))
            self._files.unlink(path)
            del self._segments[path]
            log.debug("wal: deleted %s, every record in it settled", path.name)

    # idempotency keys outlive the segments that logged them (durability/keys.py)

    def saved_keys(self) -> list[bytes]:
        """The keys file's entries (each the meta of a logged request)."""
        return self._keys.saved()

    def compact_keys(self, keep: list[bytes]) -> None:
        """Rewrites the keys file with only `keep` (the ones still in their window)."""
        self._keys.compact(keep)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._fd is not None:
            self._files.fsync(self._fd)
            self._files.close(self._fd)
            self._fd = None
        self._sync_pool.shutdown(wait=True)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:  # the close fsynced them
            waiter(None)
        self._collect()
