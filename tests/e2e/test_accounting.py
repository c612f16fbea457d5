"""Metrics and readiness: every event's fate is visible, and adds up."""
from ingest.testing.corpus import ndjson


def test_metrics_show_each_events_fate_and_the_invariant_holds(start_server):
    server = start_server("--batch-events", 50, "--flush-interval", 100, "--max-line-bytes", 500)
    server.send_tcp(ndjson(120) + b'{"broken": \n' + b'{"pad":"' + b"x" * 600 + b'"}\n')
    status, reply = server.ingest("web", b'{"a":1}\n{"a":"conflict"}\nnope\n{"a":2}\n')
    assert status == 200 and reply["rejected"] == 1  # the type conflict shows when the batch is encoded
    server.wait_landed("events", 120)
    server.wait_landed("web", 2)
    tables = server.assert_accounted()
    assert tables["events"] == {"received": 122, "landed": 120, "rejected": 2, "dead_lettered": 0, "buffered": 0}
    # "conflict" is refused by the encoder when the batch is sealed, "nope" at the door
    assert tables["web"] == {"received": 4, "landed": 2, "rejected": 2, "dead_lettered": 0, "buffered": 0}
    scraped = server.metrics()
    assert scraped[("ingest_batches_sealed_total", frozenset({("table", "events"), ("trigger", "events")}))] == 2
    assert scraped[("ingest_flush_duration_seconds_count", frozenset({("table", "events")}))] >= 3
    assert scraped[("ingest_buffer_limit_bytes", frozenset())] > 0
    assert server.http("GET", "/ready")[0] == 200 and server.http("GET", "/health")[0] == 200
    assert server.stop() == 0


def test_rejected_lines_are_kept_in_the_dead_letter_store(start_server):
    server = start_server("--flush-interval", 100)
    server.ingest("web", b'{"a":1}\n{"a":\n')
    server.wait_landed("web", 1)
    assert server.stop() == 0
    from ingest.core.deadletter import DeadLetterStore

    store = DeadLetterStore(server.data_dir / "deadletter")
    (entry,) = store.entries("web")
    assert (entry.kind, entry.rows, entry.table) == ("rejected", 1, "web")
    assert entry.source.startswith("http 127.0.0.1:") and "/v1/ingest/web" in entry.source
    assert store.read(entry.path).to_pylist()[0]["line"] == b'{"a":'
