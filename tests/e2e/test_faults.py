"""Real faults, no mocks: a missing target, a full disk, a sink that cannot
keep up, a shutdown that outlasts its grace. After each, every event is
accounted for and none is missing."""
import os
import shutil
import subprocess
import sys
import threading

import pytest
from conftest import poll

from ingest.testing.corpus import ndjson
from ingest.core.deadletter import DeadLetterStore

FAST_RETRIES = ["--retry-base-ms", 20, "--retry-max-ms", 200]


def parquet_server_with_its_target_missing(start_server, *args):
    """A Parquet server whose events directory is a file: every write fails."""
    server = start_server("--sink", "parquet", "--batch-events", 100, *FAST_RETRIES, *args)
    target = server.data_dir / "parquet" / "events"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("a file where the table's directory should be")
    return server, target


def test_flush_retries_while_the_parquet_target_is_missing_then_lands(start_server):
    server, target = parquet_server_with_its_target_missing(start_server)  # retried for --retry-timeout (24 h)
    server.send_tcp(ndjson(300))
    poll(lambda: server.stats("events")["retries"] >= 3, what="flush retries")
    assert server.stats("events")["landed"] == 0
    server.assert_accounted()
    target.unlink()
    server.wait_landed("events", 300)
    assert server.assert_accounted()["events"]["dead_lettered"] == 0
    assert server.stop() == 0
    assert server.query_after_stop("SELECT count(DISTINCT id) AS n FROM events") == [{"n": 300}]


def test_batches_past_the_retry_timeout_are_dead_lettered_and_replayed_once(start_server):
    server, target = parquet_server_with_its_target_missing(start_server, "--retry-timeout", 1)
    server.send_tcp(ndjson(250))
    counters = poll(lambda: (c := server.stats("events"))["dead_lettered"] == 250 and c, what="dead-lettering")
    assert counters["retries"] >= 3 and counters["landed"] == 0
    server.assert_accounted()
    entries = DeadLetterStore(server.data_dir / "deadletter").entries("events")
    assert {(e.kind, e.reason) for e in entries} == {("failed", "retry timeout of 1s expired")}
    assert all(e.attempts >= 2 for e in entries)  # the last try comes when the timeout is up
    assert sum(e.rows for e in entries) == 250 and all("FileExistsError" in e.error for e in entries)

    target.unlink()
    replay = [sys.executable, "-m", "ingest", "deadletter", "replay", "--data-dir", str(server.data_dir)]
    first = subprocess.run(replay, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "3 file(s) replayed" in first.stdout
    server.wait_landed("events", 250)
    again = subprocess.run(replay, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 file(s) replayed" in again.stdout and "already replayed" in again.stdout
    assert server.stop() == 0
    rows = server.query_after_stop("SELECT count(*) AS n, count(DISTINCT id) AS ids, count(ts) AS ts FROM events")
    assert rows == [{"n": 250, "ids": 250, "ts": 250}]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs, mounted for the test (root only, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory, leave_bytes: int):
    """A filler file that leaves about `leave_bytes` free."""
    filler = directory / "filler"
    free = shutil.disk_usage(directory).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_disk_full_flushes_retry_and_land_once_space_is_freed(start_server, small_tmpfs, sink):
    data_dir = small_tmpfs / "data"
    server = start_server("--sink", sink, "--batch-events", 5000, *FAST_RETRIES, data_dir=data_dir)
    server.send_tcp(ndjson(100))  # creates the table and its files while there is room
    server.wait_landed("events", 100)
    filler = fill(small_tmpfs, 16 << 10)
    server.send_tcp(ndjson(5000, start=100))
    poll(lambda: server.stats("events")["retries"] >= 2, what="flushes failing on the full disk")
    server.assert_accounted()
    filler.unlink()
    server.wait_landed("events", 5100)
    assert server.assert_accounted()["events"]["dead_lettered"] == 0
    assert server.stop() == 0
    assert server.query_after_stop("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events") == [{"n": 5100, "ids": 5100}]


def process_memory(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure in bytes: VmHWM (peak RSS) or VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_overload_pauses_inputs_within_the_budget_and_everything_lands(start_server):
    budget = 4 << 20
    # The sink takes about 10,000 events/s; the sender offers far more than ten times that.
    server = start_server("--batch-events", 1000, "--flush-interval", 50, "--sink-delay-ms", 100,
                          "--max-buffer-bytes", budget)
    server.http("GET", "/metrics")  # warm up what a scrape loads before the baseline
    baseline = process_memory(server.proc.pid, "VmRSS")
    corpus = ndjson(60_000)
    sender_done = threading.Event()

    def send():
        with server.tcp_connect() as sock:
            sock.sendall(corpus)
        sender_done.set()

    sender = threading.Thread(target=send)
    sender.start()
    poll(lambda: server.stats()["inputs_paused"] >= 1, what="the TCP input to be paused")
    answers = []

    def refused_over_http():
        status, headers, _ = server.http("POST", "/v1/ingest/web", b'{"a":1}\n', {"Content-Type": "application/x-ndjson"})
        answers.append(status)
        return status == 429 and headers["Retry-After"] == "1"

    poll(refused_over_http, what="HTTP ingest to answer 429")
    accepted_over_http = answers.count(200)
    server.assert_accounted()
    sender.join(timeout=120)
    assert sender_done.is_set(), "the paused input never resumed"
    server.wait_landed("events", 60_000)
    assert server.stats()["inputs_paused"] == 0
    assert server.ingest("web", b'{"a":1}\n')[0] == 200  # room again
    server.wait_landed("web", accepted_over_http + 1)
    tables = server.assert_accounted()
    assert tables["events"] == {"received": 60_000, "landed": 60_000, "rejected": 0, "dead_lettered": 0, "buffered": 0}
    margin = 64 << 20  # encoder output, socket buffers, allocator slack
    assert process_memory(server.proc.pid, "VmHWM") - baseline < budget + margin
    assert server.stop() == 0
    assert server.query_after_stop("SELECT count(DISTINCT id) AS n FROM events") == [{"n": 60_000}]


def test_shutdown_past_its_grace_dead_letters_the_rest_and_exits_zero(start_server):
    server = start_server("--batch-events", 500, "--sink-delay-ms", 400, "--shutdown-grace", 1)
    server.send_tcp(ndjson(10_000))
    server.wait_received("events", 10_000)
    assert server.stop() == 0
    counts = server.final_counts()["events"]
    assert counts["received"] == 10_000 and counts["buffered"] == 0
    assert counts["landed"] + counts["dead_lettered"] == 10_000 and counts["dead_lettered"] > 0
    store = DeadLetterStore(server.data_dir / "deadletter")
    entries = store.entries("events")
    assert {e.reason for e in entries} == {"shutdown grace period expired"}
    kept = [i for e in entries for i in store.read(e.path).column("id").to_pylist()]
    landed = [r["id"] for r in server.query_after_stop("SELECT id FROM events")]
    assert sorted(kept + landed) == list(range(10_000))  # nothing lost, nothing twice


def test_draining_server_answers_503_and_is_not_ready(start_server):
    server = start_server("--batch-events", 200, "--sink-delay-ms", 300, "--shutdown-grace", 60)
    server.send_tcp(ndjson(2000))
    server.wait_received("events", 2000)
    server.proc.terminate()
    poll(lambda: server.http("GET", "/ready")[0] == 503, what="/ready to report draining")
    status, headers, _ = server.http("POST", "/v1/ingest/late", b'{"a":1}\n', {"Content-Type": "application/x-ndjson"})
    assert status == 503 and headers["Retry-After"] == "1"
    assert server.http("GET", "/health")[0] == 200
    assert server.stop() == 0
    assert server.final_counts()["events"]["landed"] == 2000
