"""The write-ahead log on real files: replay, torn and corrupt segments,
cleanup, and the offline tools."""
import signal
import subprocess
import sys

import numpy as np
from conftest import poll

from ingest.core.deadletter import DeadLetterStore
from ingest.durability.wal import HEADER_SIZE, PREFIX, decode_body, encode_record, scan_segment, segment_header, segment_paths

NEVER = ["--flush-interval", 600_000, "--batch-events", 1_000_000]


def lines_body(first: int, count: int) -> bytes:
    return b"".join(b'{"id":%d,"v":"x"}\n' % i for i in range(first, first + count))


def kill(server):
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()


def logged_then_killed(start_server, data_dir, *requests: tuple[int, int]):
    """Acknowledged requests (first id, count) that are in the log but not
    landed, then kill -9; returns the log's last segment."""
    server = start_server(*NEVER, data_dir=data_dir)
    for first, count in requests:
        assert server.ingest("t", lines_body(first, count))[0] == 200
    assert server.stats("t")["landed"] == 0
    kill(server)
    return segment_paths(data_dir / "wal")[-1]


def wal_tool(data_dir, action):
    return subprocess.run([sys.executable, "-m", "ingest", "wal", action, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def test_record_round_trip_and_numeric_segment_order(tmp_path):
    spans = np.array([0, 3, 3, 5], dtype=np.int64)
    record = encode_record(42, "t", spans, b"abcde")
    length, _ = PREFIX.unpack_from(record)
    decoded = decode_body(record[PREFIX.size:])
    assert (decoded.lsn, decoded.table, decoded.lines, decoded.line(0), decoded.line(1)) == (42, "t", 2, b"abc", b"de")
    assert length == len(record) - PREFIX.size
    for n in (9, 10, 100, 2):
        (tmp_path / f"segment-{n}.wal").write_bytes(segment_header(1))
    assert [p.name for p in segment_paths(tmp_path)] == ["segment-2.wal", "segment-9.wal", "segment-10.wal", "segment-100.wal"]


def test_torn_tail_is_truncated_with_a_warning(start_server, tmp_path):
    data_dir = tmp_path / "data"
    segment = logged_then_killed(start_server, data_dir, (0, 50), (50, 50))
    content = segment.read_bytes()
    segment.write_bytes(content[:-10])  # the last record torn, as by a crash mid-write
    check = wal_tool(data_dir, "check")
    assert check.returncode == 1 and "torn record at the end" in check.stdout
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    server.wait_landed("t", 50)
    assert "torn record at the end" in server.log()
    assert server.metrics()[("ingest_wal_torn_tails_total", frozenset())] == 1
    assert server.query("SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM t").to_pylist() == [{"lo": 0, "hi": 49, "n": 50}]
    assert server.stop() == 0
    assert wal_tool(data_dir, "check").returncode == 0


def test_corrupt_record_in_the_middle_goes_to_the_dead_letter_store_once(start_server, tmp_path):
    data_dir = tmp_path / "data"
    segment = logged_then_killed(start_server, data_dir, (0, 100), (100, 100), (200, 100))
    content = bytearray(segment.read_bytes())
    scan = scan_segment(segment)
    assert len(scan.records) == 3
    first_body_end = HEADER_SIZE + PREFIX.size + PREFIX.unpack_from(content, HEADER_SIZE)[0]
    content[first_body_end - 5] ^= 0xFF  # flip a byte inside the first record's data
    segment.write_bytes(bytes(content))
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    server.wait_landed("t", 200)
    assert server.metrics()[("ingest_wal_damaged_events_total", frozenset())] == 100
    assert server.stop() == 0
    server = start_server(data_dir=data_dir)  # the log was mended: nothing new to keep, nothing to replay
    assert server.stats("t").get("received", 0) == 0
    assert server.stop() == 0
    assert server.query_after_stop("SELECT min(id) AS lo, count(*) AS n FROM t") == [{"lo": 100, "n": 200}]
    (entry,) = DeadLetterStore(data_dir / "deadletter").entries("_wal")
    assert entry.reason == "write-ahead log damage" and entry.error.startswith("record checksum mismatch (its head says lsn 1, 100 events")


def test_wal_repair_tool_mends_a_damaged_log(start_server, tmp_path):
    data_dir = tmp_path / "data"
    segment = logged_then_killed(start_server, data_dir, (0, 10), (10, 10))
    content = bytearray(segment.read_bytes())
    content[HEADER_SIZE + PREFIX.size + 3] ^= 0x01
    segment.write_bytes(bytes(content) + b"\x07\x00")
    repaired = wal_tool(data_dir, "repair")
    assert repaired.returncode == 0 and "repaired 2 damaged place(s)" in repaired.stdout
    assert wal_tool(data_dir, "check").returncode == 0
    assert [r.table for r in scan_segment(segment).records] == ["", "t"]  # a tombstone stands for the bad one


def test_settled_segments_are_deleted(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--wal-segment-bytes", 4096, "--batch-events", 100, "--flush-interval", 20, data_dir=data_dir)
    for start in range(0, 2000, 100):
        server.ingest("t", lines_body(start, 100))
    server.wait_landed("t", 2000)
    # each ~2.5 KiB request fills most of a 4 KiB segment: about ten were written, all but the open one go
    poll(lambda: len(segment_paths(data_dir / "wal")) == 1, what="settled segments to be deleted")
    assert server.stop() == 0


def test_thousands_of_records_in_one_loop_iteration_are_written_together(tmp_path):
    """More pending records than one writev takes (IOV_MAX) must still land."""
    import asyncio

    from ingest.durability.wal import WriteAheadLog

    async def log_many() -> int:
        wal = WriteAheadLog(tmp_path / "wal", fsync="interval", fsync_interval_ms=5)
        list(wal.recover())
        wal.open(asyncio.get_running_loop())
        last = 0
        for i in range(3000):
            last = wal.append("t", np.array([0, 6], dtype=np.int64), b'{"a":%d}' % (i % 10))
        await wal.durable(last)
        wal.close()
        return last

    assert asyncio.run(log_many()) == 3000
    (segment,) = segment_paths(tmp_path / "wal")
    scan = scan_segment(segment)
    assert not scan.damage and [r.lsn for r in scan.records] == list(range(1, 3001))
