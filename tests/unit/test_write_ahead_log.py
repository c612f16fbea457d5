"""The write-ahead log's writer and segment code in-process, over real files
and a file layer that fails where a disk can: a power cut mid-record, a
full disk, a failed fsync, a rename that does not happen."""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ingest.durability.wal import (
    ARROW, HEADER_SIZE, KEYED, LINES, PREFIX, RETRY_SECONDS, TOMBSTONE, Damage, Files, WalUnavailable, WriteAheadLog,
    body_parts, repair, scan_segment, segment_paths, sequence_gaps,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "wal-2feee56" / "wal"


class PowerCut(Exception):
    """The machine lost power: nothing after this reaches the disk."""


class FaultyDisk(Files):
    """The real OS, with faults a test switches on."""

    def __init__(self):
        self.full = False  # writes stop part way with ENOSPC
        self.fsync_fails = False  # fsync reports EIO
        self.cut_after: int | None = None  # bytes of the next write that reach the disk before the power goes
        self.replace_fails = False
        self.writes = 0
        self._off = False
        self._open: set[int] = set()

    def _powered(self):
        if self._off:
            raise PowerCut()

    def open(self, path, flags, mode=0o644):
        self._powered()
        fd = super().open(path, flags, mode)
        self._open.add(fd)
        return fd

    def close(self, fd):
        self._open.discard(fd)
        super().close(fd)

    def writev(self, fd, parts):
        self._powered()
        self.writes += 1
        data = b"".join(bytes(part) for part in parts)
        if self.full:
            os.write(fd, data[:len(data) // 2])  # the disk filled part way through the record
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.cut_after is not None:
            os.write(fd, data[:self.cut_after])
            self._off = True
            raise PowerCut()
        return super().writev(fd, parts)

    def fsync(self, fd):
        self._powered()
        if self.fsync_fails:
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)

    def truncate(self, fd, length):
        self._powered()
        super().truncate(fd, length)

    def replace(self, source, target):
        self._powered()
        if self.replace_fails:
            raise OSError(errno.EIO, "Input/output error")
        super().replace(source, target)

    def crash(self):
        """The process dies with the power: the kernel closes its files."""
        for fd in list(self._open):
            self.close(fd)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def spans_and_data(*lines: bytes) -> tuple[np.ndarray, bytes]:
    spans, offset = [], 0
    for line in lines:
        spans += [offset, offset + len(line)]
        offset += len(line)
    return np.array(spans, dtype=np.int64), b"".join(lines)


def event(i: int) -> bytes:
    return b'{"id":%d}' % i


def recovered(directory: Path) -> tuple[WriteAheadLog, list]:
    wal = WriteAheadLog(directory)
    return wal, list(wal.recover())


def run(coroutine_function, *args):
    return asyncio.run(coroutine_function(*args))


async def opened(directory: Path, **options) -> WriteAheadLog:
    wal = WriteAheadLog(directory, **options)
    list(wal.recover())
    wal.open(asyncio.get_running_loop())
    return wal


def test_a_power_cut_mid_record_is_truncated_on_recovery_and_the_records_before_it_survive(tmp_path):
    disk = FaultyDisk()

    async def write_then_lose_power():
        wal = await opened(tmp_path, fsync="always", files=disk)
        for i in range(3):
            await wal.durable(wal.append("t", *spans_and_data(event(i))))
        disk.cut_after = PREFIX.size + 5  # the prefix and a few bytes of the fourth record's head
        with pytest.raises(PowerCut):
            wal.append("t", *spans_and_data(event(3)))
        disk.crash()

    run(write_then_lose_power)
    (segment,) = segment_paths(tmp_path)
    torn_size = segment.stat().st_size
    wal, items = recovered(tmp_path)
    assert [(r.lsn, r.line(0)) for r in items] == [(1, event(0)), (2, event(1)), (3, event(2))]
    assert wal.torn_tails == 1 and wal.corrupt_records == 0 and not wal.gaps
    assert segment.stat().st_size == torn_size - PREFIX.size - 5
    assert not scan_segment(segment).damage
    assert wal.next_lsn == 4  # the torn record was never acknowledged: its number is free


def test_a_full_disk_refuses_the_append_writes_nothing_and_uses_no_lsn(tmp_path):
    disk, clock = FaultyDisk(), Clock()

    async def fill_the_disk():
        wal = await opened(tmp_path, fsync="always", files=disk, clock=clock)
        await wal.durable(wal.append("t", *spans_and_data(event(1))))
        await wal.durable(wal.append("t", *spans_and_data(event(2))))
        (segment,) = segment_paths(tmp_path)
        before = segment.read_bytes()
        disk.full = True
        with pytest.raises(WalUnavailable, match="No space left on device"):
            wal.append("t", *spans_and_data(event(3)))
        assert segment.read_bytes() == before  # the half-written record was cut off
        assert wal.next_lsn == 3 and wal.unavailable and wal.failed_appends == 1
        writes = disk.writes
        with pytest.raises(WalUnavailable, match="a moment ago"):  # inputs hold off: not even tried
            wal.append("t", *spans_and_data(event(3)))
        assert disk.writes == writes
        disk.full = False
        clock.now += RETRY_SECONDS
        assert not wal.unavailable
        lsn = wal.append("t", *spans_and_data(event(3)))
        await wal.durable(lsn)
        wal.close()
        return lsn

    assert run(fill_the_disk) == 3
    wal, items = recovered(tmp_path)
    assert [(r.lsn, r.line(0)) for r in items] == [(1, event(1)), (2, event(2)), (3, event(3))]
    assert not wal.torn_tails and not wal.gaps


def test_a_failed_fsync_is_reported_and_not_acknowledged_as_durable(tmp_path):
    disk = FaultyDisk()

    async def fsync_fails():
        wal = await opened(tmp_path, fsync="always", files=disk)
        disk.fsync_fails = True
        lsn = wal.append("t", *spans_and_data(event(1)))
        with pytest.raises(OSError, match="write-ahead log fsync failed: .*Input/output error"):
            await wal.durable(lsn)
        pending = wal.synced(lsn)
        assert pending is not None  # still not durable: a new wait starts another fsync
        with pytest.raises(OSError, match="fsync failed"):
            await pending
        disk.fsync_fails = False
        await wal.durable(lsn)  # the disk is back: now it is
        assert wal.synced(lsn) is None
        wal.close()

    run(fsync_fails)


def damaged_in_the_middle(directory: Path) -> Path:
    """Three records of one table, the middle one's data with a flipped byte."""
    async def write():
        wal = await opened(directory, fsync="off")
        for i in range(3):
            wal.append("t", *spans_and_data(event(10 * i), event(10 * i + 1)))
        wal.close()

    run(write)
    (segment,) = segment_paths(directory)
    content = bytearray(segment.read_bytes())
    second = HEADER_SIZE + PREFIX.size + PREFIX.unpack_from(content, HEADER_SIZE)[0]
    content[second + PREFIX.size + PREFIX.unpack_from(content, second)[0] - 1] ^= 0xFF
    segment.write_bytes(bytes(content))
    return segment


def test_crc_damage_in_the_middle_is_a_damage_and_becomes_a_tombstone_once_kept(tmp_path):
    segment = damaged_in_the_middle(tmp_path)
    scan = scan_segment(segment)
    assert [r.lsn for r in scan.records] == [1, 3]
    (damage,) = scan.damage
    assert not damage.torn_tail and damage.claimed == (2, 2)
    assert damage.reason == "record checksum mismatch (its head says lsn 2, 2 events; unverified)"
    assert not sequence_gaps([scan])  # the unreadable record accounts for lsn 2
    wal = WriteAheadLog(tmp_path)
    items = []
    for item in wal.recover():
        items.append(item)
        if isinstance(item, Damage):
            item.kept = True
    assert [type(i).__name__ for i in items] == ["Record", "Record", "Damage"] and wal.corrupt_records == 1
    assert wal.damaged_events == 2
    rewritten = scan_segment(segment)
    assert [(r.lsn, r.kind) for r in rewritten.records] == [(1, LINES), (2, TOMBSTONE), (3, LINES)]
    assert not rewritten.damage and rewritten.version == 3
    wal, items = recovered(tmp_path)
    assert [r.lsn for r in items] == [1, 3] and not wal.corrupt_records  # kept once


def test_damage_not_kept_or_not_rewritten_is_reported_again(tmp_path):
    segment = damaged_in_the_middle(tmp_path)
    before = segment.read_bytes()
    _, items = recovered(tmp_path)  # the consumer did not keep it
    assert segment.read_bytes() == before
    disk = FaultyDisk()
    disk.replace_fails = True
    wal = WriteAheadLog(tmp_path, files=disk)
    for item in wal.recover():
        if isinstance(item, Damage):
            item.kept = True
    assert segment.read_bytes() == before  # the rename failed: the segment is as it was
    assert any(isinstance(i, Damage) for i in recovered(tmp_path)[1])


def test_kinds_and_flags_round_trip_and_keys_go_by_the_flag(tmp_path):
    batch = pa.record_batch({"id": pa.array([1, 2, None], pa.int64()), "name": ["a", None, "ccc"],
                             "at": pa.array([0, 1, 2], pa.timestamp("us", tz="UTC"))})
    key_meta = b'{"key":"k1","table":"t"}'

    async def write():
        wal = await opened(tmp_path, fsync="off", segment_bytes=1)  # a segment per record, so each can go
        wal.append("t", *spans_and_data(event(1)), meta=key_meta, keyed=True)
        wal.append("t", *spans_and_data(event(2)), meta=b'{"tags":{"key":"not an idempotency key"}}', keyed=False)
        wal.append("t", *spans_and_data(event(3)), meta=b'{"key":"k3"}', keyed=True)
        wal.append_batch("b", batch, meta=b'{"key":"k4"}', keyed=True)
        wal.append_batch("b", batch.slice(0, 0))
        wal.append("t", *spans_and_data(event(6)))  # the open segment: never deleted while written to
        wal.settle("t", 6)
        wal.settle("b", 5)
        saved = wal.saved_keys()
        wal.close()
        return saved

    saved = run(write)
    assert saved == [key_meta, b'{"key":"k3"}', b'{"key":"k4"}']
    (segment,) = segment_paths(tmp_path)
    (record,) = scan_segment(segment).records
    assert (record.lsn, record.kind, record.flags) == (6, LINES, 0)


def test_arrow_records_round_trip_through_recovery_and_rewrite(tmp_path):
    batch = pa.record_batch({"id": pa.array(range(5), pa.int64()), "tags": pa.array([["x"], [], None, ["y", "z"], ["w"]])})

    async def write():
        wal = await opened(tmp_path, fsync="off")
        wal.append("t", *spans_and_data(event(1)))
        wal.append_batch("b", batch, meta=b'{"receipt":"r1"}', keyed=True)
        wal.append("t", *spans_and_data(event(3)))
        wal.close()

    run(write)
    (segment,) = segment_paths(tmp_path)
    records = scan_segment(segment).records
    assert [(r.kind, r.table, r.events) for r in records] == [(LINES, "t", 1), (ARROW, "b", 5), (LINES, "t", 1)]
    arrow = records[1]
    assert arrow.batch().equals(batch) and arrow.keyed and arrow.flags == KEYED and arrow.meta == b'{"receipt":"r1"}'
    assert arrow.lines == 0
    with pytest.raises(ValueError, match="not an arrow one"):
        records[0].batch()
    # damage the last record: the rewrite keeps the arrow record as it was
    content = bytearray(segment.read_bytes())
    content[-1] ^= 0xFF
    segment.write_bytes(bytes(content))
    found = repair(tmp_path, lambda damage: None)
    assert [d.reason.split(" (")[0] for d in found] == ["record checksum mismatch"]
    rewritten = scan_segment(segment).records
    assert [r.kind for r in rewritten] == [LINES, ARROW, TOMBSTONE]
    assert rewritten[1].batch().equals(batch) and rewritten[1].keyed


def test_an_unknown_kind_is_damage_not_a_crash(tmp_path):
    async def write():
        wal = await opened(tmp_path, fsync="off")
        wal.append("t", *spans_and_data(event(1)))
        wal.close()

    run(write)
    (segment,) = segment_paths(tmp_path)
    future = b"".join(bytes(p) for p in body_parts(2, 9, 0, "t", 0, b"", b"", b"payload"))
    segment.write_bytes(segment.read_bytes() + future)
    scan = scan_segment(segment)
    assert [r.lsn for r in scan.records] == [1]
    assert [d.reason for d in scan.damage] == ["record body unreadable: unknown record kind 9"]


# a log left behind by the code of 2feee56 (formats 1 and 2; see tests/fixtures/wal-2feee56)

def old_log(tmp_path) -> Path:
    directory = tmp_path / "wal"
    shutil.copytree(FIXTURE, directory)
    return directory


def test_segments_of_formats_1_and_2_are_read_with_kinds_and_flags(tmp_path):
    directory = old_log(tmp_path)
    scans = [scan_segment(path) for path in segment_paths(directory)]
    assert [(s.version, s.first_lsn) for s in scans] == [(1, None), (2, 3)]
    assert not any(s.damage for s in scans) and not sequence_gaps(scans)
    records = [r for s in scans for r in s.records]
    assert [(r.lsn, r.table, r.kind, r.keyed, r.lines) for r in records] == [
        (1, "clicks", LINES, False, 3), (2, "views", LINES, False, 2), (3, "clicks", LINES, True, 2),
        (4, "", TOMBSTONE, False, 0), (5, "clicks", LINES, False, 2), (6, "views", LINES, False, 2)]
    assert [records[0].line(i) for i in range(3)] == [b'{"id":0,"v":"x"}', b'{"id":1,"v":"x"}', b'{"id":2,"v":"x"}']


def test_an_old_log_is_replayed_and_continued_in_format_3(tmp_path):
    directory = old_log(tmp_path)
    wal = WriteAheadLog(directory)
    assert [(r.lsn, r.table) for r in wal.recover()] == [(1, "clicks"), (2, "views"), (3, "clicks"), (5, "clicks"),
                                                         (6, "views")]
    assert not wal.gaps and not wal.torn_tails and not wal.corrupt_records
    assert wal.saved_keys()[0].startswith(b'{"key":"landed-key-0"')

    async def continue_it():
        wal.open(asyncio.get_running_loop())
        lsn = wal.append("clicks", *spans_and_data(event(7)))
        for table in ("clicks", "views"):
            wal.settle(table, lsn)  # both old segments settle: their keyed record's meta moves to the keys file
        wal.close()
        return lsn

    assert run(continue_it) == 7
    (segment,) = segment_paths(directory)
    scan = scan_segment(segment)
    assert (scan.version, scan.first_lsn, [r.lsn for r in scan.records]) == (3, 7, [7])
    assert [m[:22] for m in wal.saved_keys()] == [b'{"key":"landed-key-0",', b'{"key":"upgrade-key-3"']


def test_an_old_segment_is_repaired_into_format_3(tmp_path):
    directory = old_log(tmp_path)
    first, second = segment_paths(directory)
    first.write_bytes(first.read_bytes()[:-7])  # a torn tail in the format-1 segment
    content = bytearray(second.read_bytes())
    content[HEADER_SIZE + PREFIX.size + 2] ^= 0x01  # lsn 3's head: a checksum mismatch
    second.write_bytes(bytes(content))
    kept = []
    found = repair(directory, kept.append)
    assert [(d.segment.name, d.torn_tail) for d in found] == [(first.name, True), (second.name, False)]
    assert kept[0].claimed is not None and kept[0].claimed[1] == 2
    one, two = scan_segment(first), scan_segment(second)
    assert (one.version, [r.lsn for r in one.records], one.damage) == (1, [1], [])  # truncated, left in format 1
    assert two.version == 3 and not two.damage
    assert [(r.lsn, r.kind) for r in two.records] == [(3, TOMBSTONE), (4, TOMBSTONE), (5, LINES), (6, LINES)]
    assert two.records[3].meta.startswith(b'{"receipt":"r-fixture-6"')


class GatedDisk(Files):
    """The real OS, whose fsyncs wait at a gate the test opens and are counted."""

    def __init__(self):
        import threading

        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Semaphore(0)  # released as each fsync begins
        self.fsyncs = 0

    def fsync(self, fd):
        self.started.release()
        self.gate.wait(10)
        self.fsyncs += 1
        super().fsync(fd)


def test_group_commit_starts_an_fsync_at_once_and_what_comes_meanwhile_shares_the_next(tmp_path):
    disk = GatedDisk()

    async def group_commit():
        wal = await opened(tmp_path, fsync="always", fsync_interval_ms=600_000, files=disk)  # no timer in the way
        loop = asyncio.get_running_loop()
        disk.fsyncs = 0
        disk.gate.clear()
        first = wal.append("t", *spans_and_data(event(1)))
        first_wait = wal.synced(first)  # an ack waits: the fsync starts now, not on a tick
        assert await loop.run_in_executor(None, disk.started.acquire, True, 10)
        later = [wal.append("t", *spans_and_data(event(i))) for i in (2, 3, 4)]
        waits = [first_wait, *(wal.synced(lsn) for lsn in later)]
        assert all(w is not None for w in waits)
        disk.gate.set()
        await asyncio.gather(*waits)
        assert disk.fsyncs == 2  # one for the first record, one shared by the three written while it ran
        assert all(wal.synced(lsn) is None for lsn in (first, *later))
        wal.close()

    run(group_commit)


def test_records_nobody_waits_for_are_synced_by_the_timer(tmp_path):
    disk = GatedDisk()

    async def unwaited():
        wal = await opened(tmp_path, fsync="always", fsync_interval_ms=1, files=disk)
        disk.fsyncs = 0
        lsn = wal.append("t", *spans_and_data(event(1)))  # a TCP read: no ack waits for it
        assert await asyncio.get_running_loop().run_in_executor(None, disk.started.acquire, True, 10)
        await wal.durable(lsn)
        wal.close()

    run(unwaited)


def test_the_keys_file_is_rewritten_with_the_newest_keys_past_twice_the_bound(tmp_path, monkeypatch):
    from ingest.durability import keys as keys_module
    from ingest.durability.keys import KeysFile
    from ingest.durability.wal.files import Files

    monkeypatch.setattr(keys_module, "MAX_KEYS", 3)
    keys = KeysFile(tmp_path, Files())
    for n in range(0, 6, 2):  # 6 entries: twice the bound, kept as they are
        keys.save([b'{"key":"k%d"}' % n, b'{"key":"k%d"}' % (n + 1)])
    assert len(keys.saved()) == 6
    keys.save([b'{"key":"k6"}'])  # one past it: the newest 3 are kept
    assert keys.saved() == [b'{"key":"k4"}', b'{"key":"k5"}', b'{"key":"k6"}']
    assert len(KeysFile(tmp_path, Files()).saved()) == 3  # on disk, not only counted
