"""What an acknowledgement promises across restarts and refusals: lsns never
reused, a refusal lands nothing, a gap in the log is reported."""
import gzip
import json
import signal

import pytest
from conftest import poll
from test_faults import fill, small_tmpfs  # noqa: F401 (a fixture)
from test_wal import kill, lines_body, wal_tool

from ingest.durability.wal import scan_segment, segment_paths


def ingest_flushed(server, table, first, count):
    status, _, body = server.http("POST", f"/v1/ingest/{table}?wait=flushed", lines_body(first, count),
                                  {"Content-Type": "application/x-ndjson"})
    assert status == 200, body
    assert json.loads(body)["status"] == "landed"


@pytest.mark.parametrize("stop", ["sigterm", "kill-9"])
@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_events_acknowledged_after_idle_restarts_are_in_the_table(start_server, tmp_path, sink, stop):
    """The second restart used to empty the log, start lsns again at 1 and
    skip every new batch as a duplicate of one in the ledger."""
    data_dir = tmp_path / "data"

    def restart():
        server = start_server("--sink", sink, data_dir=data_dir)
        return server

    def end(server):
        if stop == "sigterm":
            assert server.stop() == 0
        else:
            kill(server)

    server = restart()
    ingest_flushed(server, "t", 0, 5)
    end(server)
    for _ in range(2):  # start and stop with nothing to do
        end(restart())
    server = restart()
    ingest_flushed(server, "t", 5, 5)
    assert server.stats("t")["batches_already_landed"] == 0
    assert server.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t").to_pylist() == [{"n": 10, "ids": 10}]
    assert server.stop() == 0


def test_a_deleted_middle_segment_is_reported_as_lost_records(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--wal-segment-bytes", 1024, "--flush-interval", 600_000, "--batch-events", 1_000_000,
                          data_dir=data_dir)
    for first in range(0, 400, 40):  # about one record per 1 KiB segment
        assert server.ingest("t", lines_body(first, 40))[0] == 200
    kill(server)
    segments = segment_paths(data_dir / "wal")
    assert len(segments) >= 4
    middle = segments[len(segments) // 2]
    lost = scan_segment(middle).records
    middle.unlink()
    check = wal_tool(data_dir, "check")
    assert check.returncode == 1
    assert f"lsn {lost[0].lsn}..{lost[-1].lsn}" in check.stdout and "missing" in check.stdout
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    missing = server.metrics()[("ingest_wal_missing_records_total", frozenset())]
    assert missing == len(lost)
    assert "record(s) lost from the log" in server.log()
    server.wait_landed("t", 400 - 40 * len(lost))
    assert server.stop() == 0


def test_a_request_refused_because_the_log_cannot_be_written_lands_nothing(start_server, small_tmpfs):  # noqa: F811
    data_dir = small_tmpfs / "data"
    server = start_server("--flush-interval", 20, "--sink", "parquet", data_dir=data_dir)
    assert server.ingest("t", lines_body(0, 10))[0] == 200
    server.wait_landed("t", 10)
    filler = fill(small_tmpfs, 0)
    status, headers, body = server.http("POST", "/v1/ingest/t", lines_body(10, 100) * 20,
                                        {"Content-Type": "application/x-ndjson"})
    assert status == 503, body
    assert "Retry-After" in headers
    filler.unlink()
    poll(lambda: server.ingest("t", lines_body(5000, 1))[0] == 200, what="the log to take records again")
    server.wait_landed("t", 11)
    assert server.stats("t")["received"] == 11
    assert server.stop() == 0
    assert server.query_after_stop("SELECT count(*) AS n FROM t WHERE id BETWEEN 10 AND 109") == [{"n": 0}]


def test_a_full_disk_at_start_starts_with_intake_refused_until_there_is_room(start_server, small_tmpfs):  # noqa: F811
    data_dir = small_tmpfs / "data"
    server = start_server("--flush-interval", 20, "--sink", "parquet", data_dir=data_dir)
    assert server.ingest("t", lines_body(0, 10))[0] == 200
    server.wait_landed("t", 10)
    assert server.stop() == 0
    filler = fill(small_tmpfs, 0)
    server = start_server("--flush-interval", 20, "--sink", "parquet", data_dir=data_dir)
    status, headers, _ = server.http("POST", "/v1/ingest/t", lines_body(10, 1000), {"Content-Type": "application/x-ndjson"})
    assert status == 503 and "Retry-After" in headers
    filler.unlink()
    poll(lambda: server.ingest("t", lines_body(10, 1000))[0] == 200, what="intake once the disk has room")
    server.wait_landed("t", 1000)
    assert server.stop() == 0
    assert server.query_after_stop("SELECT count(*) AS n FROM t") == [{"n": 1010}]


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "soon"])
def test_a_bad_timeout_is_refused_before_anything_is_accepted(start_server, timeout):
    server = start_server("--flush-interval", 20)
    status, _, body = server.http("POST", f"/v1/ingest/t?wait=flushed&timeout={timeout}", lines_body(0, 3),
                                  {"Content-Type": "application/x-ndjson"})
    assert status == 400 and b"timeout" in body
    assert server.stats("t").get("received", 0) == 0
    assert server.stop() == 0


def test_concatenated_gzip_members_are_one_body(start_server):
    server = start_server("--flush-interval", 20)
    body = gzip.compress(lines_body(0, 50)) + gzip.compress(lines_body(50, 50))
    status, _, reply = server.http("POST", "/v1/ingest/t", body,
                                   {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert status == 200 and json.loads(reply)["accepted"] == 100
    server.wait_landed("t", 100)
    assert server.stop() == 0


def test_bytes_after_a_gzip_stream_are_an_error(start_server):
    server = start_server("--flush-interval", 20)
    body = gzip.compress(lines_body(0, 50)) + b"garbage"
    status, _, reply = server.http("POST", "/v1/ingest/t", body,
                                   {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert status == 400 and b"trailing bytes after the gzip stream" in reply
    assert server.stats("t").get("received", 0) == 0
    assert server.stop(signal.SIGTERM) == 0
