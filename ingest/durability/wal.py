"""The write-ahead log: accepted lines survive a crash.

Every group of lines appended to a table's buffer is first appended to the
log as one record; an HTTP request is answered only once its records are as
durable as `--wal-fsync` asks. On start, the records whose batches did not
settle (land or go to the dead-letter store) are replayed, in order, before
any new input is taken.

Layout: DIR/wal/segment-{n}.wal, n counted up from 1 (ordered by its number,
not by string). A segment is at most `segment_bytes` long (one record may
overflow it), starts with a header naming the format version and the lsn its
first record gets, and is deleted once every record in it and in every older
segment has settled (oldest first, so the segments on disk are always
consecutive: a missing one is damage, reported). The directory is fsynced
when a segment is created.

Sequence numbers (lsn) are consecutive across the whole log and never reused:
the next one comes from the last record, or from the newest segment's header
when every record has been collected, and the server also starts above every
id in the sink's ledger. A gap in the sequence is reported as lost records.

Record: u32 body length | u32 CRC-32 of the body | body, where the body is
u64 lsn | u16 table length | u32 line count | u32 meta length | table | meta
(JSON: the request's idempotency key, receipt and reply, when it has them) |
line count × 2 int64 spans (start, end, relative to the data) | data (lines
back to back). An HTTP request is always one record, whole.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.core.ports import LogUnavailable

log = logging.getLogger("ingest.durability.wal")

MAGIC = b"INGESTWAL"
VERSION = 2  # 2: the header carries the segment's first lsn
VERSION_1_HEADER = 16  # magic, version, padding: segments written before lsns went into the header
HEADER_TAIL = struct.Struct("<6xQ")  # padding, the first lsn of the segment
HEADER_SIZE = len(MAGIC) + 1 + HEADER_TAIL.size  # 24 bytes
PREFIX = struct.Struct("<II")  # body length, CRC-32 of the body
BODY_HEAD = struct.Struct("<QHII")  # lsn, table length, line count, meta length
MAX_BODY = 1 << 31
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024  # pieces one writev takes
FSYNC_MODES = ("always", "interval", "off")
KEYS_FILE = "idempotency-keys.jsonl"
KEY_MARK = b'"key":'  # in a record's meta when its request carried an Idempotency-Key
RETRY_SECONDS = 1.0  # after a failed append, inputs hold off this long before trying again


def segment_header(first_lsn: int) -> bytes:
    return MAGIC + bytes([VERSION]) + HEADER_TAIL.pack(first_lsn)


def segment_number(path: Path) -> int:
    return int(path.stem.removeprefix("segment-"))


def segment_paths(directory: Path) -> list[Path]:
    """Segments in log order: by their number, never by string."""
    found = [p for p in directory.glob("segment-*.wal") if p.stem.removeprefix("segment-").isdigit()]
    return sorted(found, key=segment_number)


class WalUnavailable(LogUnavailable):
    """The log cannot be appended to; the lines stay in memory only."""


@dataclass
class Record:
    lsn: int
    table: str
    spans: np.ndarray  # int64 [start0, end0, ...] into data
    data: bytes
    meta: bytes = b""  # JSON about the request the lines came in, or empty

    @property
    def lines(self) -> int:
        return len(self.spans) // 2

    def line(self, i: int) -> bytes:
        return self.data[self.spans[2 * i]:self.spans[2 * i + 1]]


def record_parts(lsn: int, table: str, spans: np.ndarray, data, meta: bytes = b"") -> list:
    """A record as the pieces to write, with the CRC computed across them."""
    name = table.encode()
    head = BODY_HEAD.pack(lsn, len(name), len(spans) // 2, len(meta)) + name + meta
    spans_bytes = spans.astype("<i8", copy=False).tobytes()
    data = memoryview(data).cast("B")
    crc = zlib.crc32(data, zlib.crc32(spans_bytes, zlib.crc32(head)))
    length = len(head) + len(spans_bytes) + len(data)
    return [PREFIX.pack(length, crc), head, spans_bytes, data]


def encode_record(lsn: int, table: str, spans: np.ndarray, data, meta: bytes = b"") -> bytes:
    return b"".join(bytes(part) for part in record_parts(lsn, table, spans, data, meta))


def write_all(fd: int, parts: list, size: int) -> None:
    """os.writev until every byte is written, at most IOV_MAX pieces a call."""
    if len(parts) > IOV_MAX:
        for start in range(0, len(parts), IOV_MAX):
            chunk = parts[start:start + IOV_MAX]
            write_all(fd, chunk, sum(len(part) for part in chunk))
        return
    written = os.writev(fd, parts)
    while written < size:  # a short write: finish the rest piece by piece
        size -= written
        remaining, skip = [], written
        for part in parts:
            if skip >= len(part):
                skip -= len(part)
                continue
            remaining.append(memoryview(part)[skip:])
            skip = 0
        parts = remaining
        written = os.writev(fd, parts)


def decode_body(body: bytes) -> Record:
    lsn, name_length, lines, meta_length = BODY_HEAD.unpack_from(body)
    offset = BODY_HEAD.size
    table = body[offset:offset + name_length].decode()
    offset += name_length
    meta = body[offset:offset + meta_length]
    offset += meta_length
    spans = np.frombuffer(body, "<i8", 2 * lines, offset)
    offset += 16 * lines
    if offset > len(body):
        raise ValueError("record shorter than its header says")
    return Record(lsn, table, spans, body[offset:], meta)


@dataclass
class Damage:
    """What reading a segment found wrong."""

    segment: Path
    offset: int
    reason: str
    raw: bytes = b""  # the bytes that could not be read as records (corrupt records only)
    torn_tail: bool = False
    kept: bool = False  # set once the damage is safe in the dead-letter store


@dataclass
class SegmentScan:
    path: Path
    records: list[Record] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    good_length: int = 0  # bytes up to the end of the last good record
    first_lsn: int | None = None  # from the header (version 2): the lsn its first record got


def scan_segment(path: Path) -> SegmentScan:
    """Reads every record it can; never raises on bad content."""
    scan = SegmentScan(path)
    content = path.read_bytes()
    if len(content) < VERSION_1_HEADER or content[:len(MAGIC)] != MAGIC:
        if content.strip(b"\0"):
            scan.damage.append(Damage(path, 0, "segment header missing or not an ingest WAL", raw=content))
        else:
            scan.damage.append(Damage(path, 0, "empty segment (created, never written)", torn_tail=True))
        return scan
    version = content[len(MAGIC)]
    if version == VERSION and len(content) >= HEADER_SIZE:
        scan.first_lsn = HEADER_TAIL.unpack_from(content, len(MAGIC) + 1)[0]
        offset = HEADER_SIZE
    elif version == 1:
        offset = VERSION_1_HEADER
    else:
        scan.damage.append(Damage(path, 0, f"segment format version {version} is not {VERSION}", raw=content))
        return scan
    scan.good_length = offset
    size = len(content)
    while offset < size:
        if size - offset < PREFIX.size:
            scan.damage.append(Damage(path, offset, "torn record prefix at the end", torn_tail=True))
            break
        length, crc = PREFIX.unpack_from(content, offset)
        end = offset + PREFIX.size + length
        if length < BODY_HEAD.size or length > MAX_BODY:
            scan.damage.append(Damage(path, offset, f"record length {length} is impossible; rest of segment unreadable",
                                      raw=content[offset:]))
            break
        if end > size:
            scan.damage.append(Damage(path, offset, "torn record at the end", torn_tail=True))
            break
        body = content[offset + PREFIX.size:end]
        if zlib.crc32(body) != crc:
            scan.damage.append(Damage(path, offset, "record checksum mismatch" + events_in(body), raw=body))
        else:
            try:
                scan.records.append(decode_body(body))
            except (struct.error, UnicodeDecodeError, ValueError) as exc:
                scan.damage.append(Damage(path, offset, f"record body unreadable: {exc}", raw=body))
        offset = scan.good_length = end
    return scan


def claimed_events(body: bytes) -> tuple[int, int] | None:
    """(lsn, events) that a damaged record's head still says it held, unverified."""
    try:
        lsn, _, lines, _ = BODY_HEAD.unpack_from(body)
    except struct.error:
        return None
    return lsn, lines


def events_in(body: bytes) -> str:
    claimed = claimed_events(body)
    return "" if claimed is None else f" (its head says lsn {claimed[0]}, {claimed[1]} events; unverified)"


@dataclass
class Gap:
    """Sequence numbers missing from the log: a deleted or truncated segment,
    records that could not be read."""

    after: Path  # the segment the gap follows
    first_lsn: int
    last_lsn: int
    missing_segments: tuple = ()  # segment numbers absent between two present ones

    @property
    def reason(self) -> str:
        count = self.last_lsn - self.first_lsn + 1
        segments = (f"; segment(s) {', '.join(map(str, self.missing_segments))} are missing"
                    if self.missing_segments else "")
        return (f"{count} record(s) lost from the log, lsn {self.first_lsn}..{self.last_lsn}, after "
                f"{self.after.name}{segments}: a segment was deleted or cut short")


def sequence_gaps(scans: list[SegmentScan]) -> list[Gap]:
    """Where the log's consecutive lsns jump, across and within segments.
    A record whose checksum failed accounts for one missing lsn; the
    records after a torn tail were never acknowledged (an ack waits for the
    fsync), but a later segment that starts further on shows a cut."""
    gaps: list[Gap] = []
    expected = None  # the lsn the next record must have
    previous: SegmentScan | None = None
    for scan in scans:
        unreadable = sum(1 for d in scan.damage if not d.torn_tail)
        lsns = ([scan.first_lsn] if scan.first_lsn is not None else []) + [r.lsn for r in scan.records]
        for index, lsn in enumerate(lsns):
            if expected is not None and lsn > expected:
                explained = min(unreadable, lsn - expected)
                unreadable -= explained
                if lsn - expected > explained:
                    absent = ()
                    if previous is not None and index == 0:
                        absent = tuple(range(segment_number(previous.path) + 1, segment_number(scan.path)))
                    gaps.append(Gap((previous or scan).path if index == 0 else scan.path,
                                    expected + explained, lsn - 1, absent))
            is_header = index == 0 and scan.first_lsn is not None
            expected = max(expected or 0, lsn if is_header else lsn + 1)
        previous = scan
    return gaps


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TOMBSTONE_META = b'{"damaged":true}'  # a record standing for one that was unreadable and moved out


def is_tombstone(record: Record) -> bool:
    return not record.table


def rewrite_segment(scan: SegmentScan) -> None:
    """Replaces a segment, atomically, by one holding only its readable
    records, and a tombstone (no table, no lines) in place of each record
    that was not, so the sequence stays whole and only real losses show."""
    damaged = sum(1 for d in scan.damage if not d.torn_tail)
    first_lsn = scan.first_lsn if scan.first_lsn is not None else (scan.records[0].lsn if scan.records else 0)
    records, expected = [], first_lsn
    for record in scan.records:
        while damaged and expected < record.lsn:
            records.append(Record(expected, "", np.zeros(0, np.int64), b"", TOMBSTONE_META))
            expected += 1
            damaged -= 1
        records.append(record)
        expected = record.lsn + 1
    records.extend(Record(expected + i, "", np.zeros(0, np.int64), b"", TOMBSTONE_META) for i in range(damaged))
    temporary = scan.path.with_name("." + scan.path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(segment_header(first_lsn))
        for record in records:
            f.write(encode_record(record.lsn, record.table, record.spans, record.data, record.meta))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, scan.path)
    fsync_directory(scan.path.parent)


def repair(directory: Path, keep_damage) -> list[Damage]:
    """Mends a log offline: torn tails are truncated, unreadable records are
    handed to `keep_damage(damage)` and dropped. Returns what was found."""
    found = []
    for path in segment_paths(directory):
        scan = scan_segment(path)
        found.extend(scan.damage)
        corrupt = [d for d in scan.damage if not d.torn_tail]
        for damage in corrupt:
            keep_damage(damage)
        if corrupt:
            rewrite_segment(scan)
        elif scan.damage and scan.good_length >= VERSION_1_HEADER:
            with open(path, "r+b") as f:
                f.truncate(scan.good_length)
                os.fsync(f.fileno())
    return found


class WriteAheadLog:
    def __init__(self, directory: Path, fsync: str = "interval", fsync_interval_ms: int = 20,
                 segment_bytes: int = 64 << 20):
        if fsync not in FSYNC_MODES:
            raise ValueError(f"wal fsync must be one of {FSYNC_MODES}")
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._interval = fsync_interval_ms / 1000
        self.next_lsn = 1
        self.torn_tails = 0  # counters, for /metrics
        self.corrupt_records = 0
        self.failed_appends = 0
        self._failed_at: float | None = None  # when the last append failed
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_size = 0
        self._segments: dict[Path, dict[str, int]] = {}  # segment -> table -> last lsn in it
        self._segment_keys: dict[Path, list[bytes]] = {}  # segment -> meta of its records with an idempotency key
        self._settled: dict[str, int] = {}  # table -> every record up to this lsn has settled
        self._written_lsn = 0
        self._synced_lsn = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []
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
        Must run before `open`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        scans = []
        for path in segment_paths(self.directory):
            scan = scan_segment(path)
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
                    claimed = claimed_events(damage.raw)
                    self.damaged_events += claimed[1] if claimed and claimed[1] < MAX_BODY else 0
                    log.error("wal %s: %s at byte %d; moved to the dead-letter store", path.name, damage.reason, damage.offset)
            if any(d.torn_tail for d in scan.damage) and scan.good_length >= VERSION_1_HEADER:
                with open(path, "r+b") as f:
                    f.truncate(scan.good_length)
                    os.fsync(f.fileno())
            self._segments[path] = tables
            self._segment_keys[path] = [r.meta for r in scan.records if KEY_MARK in r.meta]
            yield from (record for record in scan.records if not is_tombstone(record))
            corrupt = [d for d in scan.damage if not d.torn_tail]
            yield from corrupt
            if corrupt and all(d.kept for d in corrupt):
                # the consumer has kept the damage by now: drop it from the log, so it is kept once
                try:
                    rewrite_segment(scan)
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
        if self.fsync == "interval":
            self._ticker = loop.call_later(self._interval, self._tick)

    def append(self, table: str, spans: np.ndarray, data, meta: bytes = b"") -> int:
        """Logs one group of lines, written at once; returns its lsn. Durable
        per the fsync mode once `durable(lsn)` returns. Raises WalUnavailable,
        having written nothing, when it cannot be written: the caller must
        not acknowledge the lines. An lsn is used only by a record written."""
        if self._failed_at is not None and self.unavailable:
            raise WalUnavailable("the write-ahead log could not be written a moment ago")
        try:
            if self._fd is None or self._segment_size >= self.segment_bytes:
                self._rotate()
        except OSError as exc:
            self._failed(exc)
            raise WalUnavailable(str(exc)) from exc
        lsn = self.next_lsn
        parts = record_parts(lsn, table, spans, data, meta)
        self._write(parts, lsn)
        self.next_lsn += 1
        self._segments[self._segment][table] = lsn
        if KEY_MARK in meta:
            self._segment_keys[self._segment].append(bytes(meta))
        return lsn

    def _write(self, parts: list, lsn: int) -> None:
        size = sum(len(part) for part in parts)
        try:
            write_all(self._fd, parts, size)
        except OSError as exc:
            parts.clear()  # the caller releases the lines' buffer as the error goes up
            # Cut the torn record off, so later records follow whole ones.
            try:
                os.ftruncate(self._fd, self._segment_size)
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
        if self.fsync == "off":
            self._synced_lsn = lsn

    def _failed(self, exc: OSError) -> None:
        if self._failed_at is None:
            log.error("wal: cannot append (%s); inputs are refused until it can", exc)
        self._failed_at = time.monotonic()

    @property
    def unavailable(self) -> bool:
        """An append failed (a full disk, say) within the last second: inputs
        hold off; after that, the next append tries again."""
        return self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_SECONDS

    def synced(self, lsn: int) -> asyncio.Future | None:
        """A future that resolves once `lsn` is durable, or None if it already is."""
        if self.fsync == "off" or lsn <= self._synced_lsn:
            return None
        future = self._loop.create_future()
        self._waiters.append((lsn, future))
        if self.fsync == "always":
            self._start_sync()
        return future

    async def durable(self, lsn: int) -> None:
        future = self.synced(lsn)
        if future is not None:
            await future

    def _tick(self) -> None:
        if self._written_lsn > self._synced_lsn:
            self._start_sync()
        self._ticker = self._loop.call_later(self._interval, self._tick)

    def _start_sync(self) -> None:
        """Group commit: one fsync covers every record written before it started."""
        if self._sync_running or self._fd is None:
            return
        if self._written_lsn <= self._synced_lsn:
            self._synced(self._written_lsn, None)
            return
        self._sync_running = True
        target = self._written_lsn
        future = self._loop.run_in_executor(self._sync_pool, os.fsync, self._fd)
        future.add_done_callback(lambda f: self._synced(target, f))

    def _synced(self, target: int, future) -> None:
        self._sync_running = False
        if future is not None and future.exception() is not None:
            log.error("wal fsync failed: %s", future.exception())
            for lsn, waiter in self._waiters:
                if lsn <= target and not waiter.done():
                    waiter.set_exception(OSError(f"write-ahead log fsync failed: {future.exception()}"))
            self._waiters = [(lsn, w) for lsn, w in self._waiters if not w.done()]
            return
        self._synced_lsn = max(self._synced_lsn, target)
        still = []
        for lsn, waiter in self._waiters:
            if lsn <= self._synced_lsn:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((lsn, waiter))
        self._waiters = still
        if still and self.fsync == "always":
            self._start_sync()

    def _rotate(self) -> None:
        """Closes the current segment (fsynced) and starts the next one,
        whose header records the lsn its first record will get."""
        paths = segment_paths(self.directory)
        number = segment_number(paths[-1]) + 1 if paths else 1
        path = self.directory / f"segment-{number:010d}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            os.write(fd, segment_header(self.next_lsn))
            os.fsync(fd)
            fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._synced_lsn = self._written_lsn
        self._fd, self._segment, self._segment_size = fd, path, HEADER_SIZE
        self._segments[path] = {}
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
            self._save_keys(self._segment_keys.pop(path, []))
            path.unlink(missing_ok=True)
            del self._segments[path]
            log.debug("wal: deleted %s, every record in it settled", path.name)

    # idempotency keys outlive the segments that logged them

    @property
    def keys_path(self) -> Path:
        return self.directory / KEYS_FILE

    def _save_keys(self, metas: list[bytes]) -> None:
        """Moves a segment's idempotency keys to the keys file, durably,
        before the segment goes."""
        if not metas:
            return
        with open(self.keys_path, "ab") as f:
            f.write(b"".join(meta + b"\n" for meta in metas))
            f.flush()
            os.fsync(f.fileno())

    def saved_keys(self) -> list[bytes]:
        """The keys file's entries (each the meta of a logged request)."""
        if not self.keys_path.exists():
            return []
        return [line for line in self.keys_path.read_bytes().split(b"\n") if line.strip()]

    def compact_keys(self, keep: list[bytes]) -> None:
        """Rewrites the keys file with only `keep` (the ones still in their window)."""
        if not self.keys_path.exists():
            return
        temporary = self.keys_path.with_name("." + KEYS_FILE + ".tmp")
        with open(temporary, "wb") as f:
            f.write(b"".join(meta + b"\n" for meta in keep))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.keys_path)
        fsync_directory(self.directory)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self._sync_pool.shutdown(wait=True)
        for waiter in (w for _, w in self._waiters if not w.done()):
            waiter.set_result(None)
        self._collect()
