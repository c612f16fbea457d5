"""A sink whose environment fails (a full disk, a deleted directory) for longer
than the old retry schedule: good data waits, intake pauses, readiness and the
metrics say the sink is failing and since when, and everything lands once the
environment is back. Only data errors and an expired --retry-timeout
dead-letter (see test_faults.py for the latter)."""
import json
import shutil
import time

import pytest
from conftest import poll

from ingest.testing.corpus import ndjson
from test_faults import FAST_RETRIES, fill, small_tmpfs  # noqa: F401 (small_tmpfs is a fixture)

OLD_RETRY_ATTEMPTS = 5  # the schedule after which a full disk used to dead-letter good batches


def ready(server) -> tuple[int, dict]:
    status, _, body = server.http("GET", "/ready")
    return status, json.loads(body)


def settled(server, table: str, received: int) -> dict:
    """Polls until every received event has landed or been dead-lettered."""
    return poll(lambda: (c := server.stats(table)).get("received") == received and c["buffered"] == 0 and c,
                what=f"{received} events of {table} to settle")


@pytest.mark.parametrize("sink", ["parquet", "duckdb"])
def test_a_full_target_pauses_intake_dead_letters_nothing_and_lands_everything_once_space_returns(
        start_server, small_tmpfs, tmp_path, sink):
    if sink == "parquet":
        # Only the Parquet files are on the small disk; the write-ahead log and the dead-letter store are not.
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (small_tmpfs / "parquet").mkdir()
        (data_dir / "parquet").symlink_to(small_tmpfs / "parquet")
        args = []
    else:  # DuckDB keeps its files together: the whole data dir is on the small disk, without our own log
        data_dir = small_tmpfs / "data"
        args = ["--wal", "off"]
    server = start_server("--sink", sink, "--batch-events", 5000, "--flush-interval", 50, *FAST_RETRIES, *args,
                          data_dir=data_dir)
    server.send_tcp(ndjson(100))  # creates the table and its files while there is room
    server.wait_landed("events", 100)
    assert ready(server) == (200, {"status": "ready"})
    filler = fill(small_tmpfs, 16 << 10)

    server.send_tcp(ndjson(5000, start=100))
    status, failing = poll(lambda: (r := ready(server))[0] == 503 and r, what="/ready to say the sink is failing")
    assert failing["status"] == "sink failing" and failing["sink"] == sink and failing["failing"] is True
    assert "No space left on device" in failing["error"] and failing["since"] <= time.time()
    metrics = server.metrics()
    assert metrics[("ingest_sink_failing", frozenset())] == 1
    assert metrics[("ingest_sink_failing_since_seconds", frozenset())] == pytest.approx(failing["since"])

    # HTTP ingest is refused before its body is read, and nothing of it is taken
    status, headers, body = server.http("POST", "/v1/ingest/events", b'{"id": -1}\n',
                                        {"Content-Type": "application/x-ndjson"})
    assert status == 503 and headers["Retry-After"] == "1" and b"the sink is failing" in body
    # a TCP sender is paused until the sink is back
    with server.tcp_connect() as sock:
        sock.sendall(ndjson(1000, start=5100))
        poll(lambda: server.stats()["inputs_paused"] >= 1, what="the TCP input to pause")
        # outlast the old schedule: it would have dead-lettered the batch by now
        counters = poll(lambda: ((c := server.stats("events"))["retries"] > OLD_RETRY_ATTEMPTS or c["dead_lettered"])
                        and c, what="more retries than the old schedule allowed")
        assert counters["dead_lettered"] == 0 and counters["landed"] == 100
        assert ready(server)[0] == 503
        server.assert_accounted()

        filler.unlink()
        server.wait_landed("events", 6100)
    counters = settled(server, "events", 6100)
    assert counters["landed"] == 6100 and counters["dead_lettered"] == 0
    assert ready(server) == (200, {"status": "ready"})
    assert server.stats()["inputs_paused"] == 0 and server.stats()["sink_health"] == {"failing": False}
    metrics = server.metrics()
    assert metrics[("ingest_sink_failing", frozenset())] == 0
    assert metrics[("ingest_sink_failing_since_seconds", frozenset())] == 0
    assert server.ingest("events", b'{"id": 6100}\n')[0] == 200  # HTTP takes events again
    server.wait_landed("events", 6101)
    assert server.stop() == 0
    rows = server.query_after_stop("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events")
    assert rows == [{"n": 6101, "ids": 6101}]


def test_the_parquet_root_deleted_while_running_is_recreated_and_the_batch_lands(start_server):
    server = start_server("--sink", "parquet", "--flush-interval", 50, *FAST_RETRIES)
    server.send_tcp(ndjson(100))
    server.wait_landed("events", 100)
    root = server.data_dir / "parquet"
    shutil.rmtree(root)

    server.send_tcp(ndjson(100, start=100))
    counters = settled(server, "events", 200)
    assert counters["landed"] == 200 and counters["dead_lettered"] == 0
    assert root.is_dir()
    assert server.stop() == 0
    # the first 100 went with the deleted directory; the second 100 are in the new one
    assert server.query_after_stop("SELECT min(id) AS lo, count(*) AS n FROM events") == [{"lo": 100, "n": 100}]
