"""Each seal trigger observed on its own: events, bytes, age; and drain on SIGTERM."""
from ingest.testing.corpus import ndjson

NEVER = 600_000  # ms: a flush interval that does not fire during a test
HUGE = 1 << 40


def test_batch_seals_at_event_count(start_server):
    server = start_server("--batch-events", 10, "--batch-bytes", HUGE, "--flush-interval", NEVER)
    server.send_tcp(ndjson(25))
    counters = server.wait_landed("events", 20)
    assert counters["batches_sealed"] == {"events": 2, "bytes": 0, "age": 0, "wait": 0, "shutdown": 0, "replay": 0}
    assert counters["buffered"] == 5 and counters["received"] == 25
    assert server.stop() == 0


def test_batch_seals_at_byte_size(start_server):
    lines = ndjson(30)
    per_line = len(lines) // 30
    server = start_server("--batch-events", 1_000_000, "--batch-bytes", per_line * 10, "--flush-interval", NEVER)
    server.send_tcp(lines)
    counters = server.wait_received("events", 30)
    counters = server.wait_landed("events", counters["received"] - counters["buffered"])
    assert counters["batches_sealed"]["bytes"] >= 2
    assert counters["batches_sealed"]["events"] == counters["batches_sealed"]["age"] == 0
    assert server.stop() == 0


def test_batch_seals_by_age(start_server):
    server = start_server("--batch-events", 1_000_000, "--batch-bytes", HUGE, "--flush-interval", 100)
    server.send_tcp(ndjson(3))
    counters = server.wait_landed("events", 3)
    assert counters["batches_sealed"] == {"events": 0, "bytes": 0, "age": 1, "wait": 0, "shutdown": 0, "replay": 0}
    assert server.stop() == 0


def test_sigterm_drains_every_buffer(start_server):
    server = start_server("--batch-events", 1_000_000, "--flush-interval", NEVER)
    server.send_tcp(ndjson(500))
    assert server.ingest("other", ndjson(40, start=500))[0] == 200
    server.wait_received("events", 500)
    assert server.stats("events")["landed"] == 0
    assert server.stop() == 0
    from ingest.cli import run_query

    counts = run_query(server.data_dir, "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM other) AS other")
    assert counts.to_pylist() == [{"events": 500, "other": 40}]
    assert "stopped" in server.log()
