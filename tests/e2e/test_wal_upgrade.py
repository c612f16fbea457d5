"""An upgraded server replays the write-ahead log an older version left
behind (2feee56: segment formats 1 and 2, no record kinds), exactly once,
with its receipts and idempotency keys."""
import json
import shutil
from pathlib import Path

from test_wal import lines_body

from ingest.durability.wal import scan_segment, segment_paths

FIXTURE = Path(__file__).parent.parent / "fixtures" / "wal-2feee56" / "wal"
LONG = 10 * 365 * 86400  # the fixture's requests carry a fixed time in 2026: keep their keys and receipts
OPTIONS = ["--flush-interval", 20, "--idempotency-window", LONG, "--receipt-retention", LONG]


def retry(server, table: str, first: int, count: int, key: str):
    status, headers, payload = server.http("POST", f"/v1/ingest/{table}", lines_body(first, count),
                                           {"Content-Type": "application/x-ndjson", "Idempotency-Key": key})
    return status, headers.get("Idempotent-Replayed"), json.loads(payload)


def ids(server, table: str) -> list:
    return server.query(f"SELECT id, count(*) AS n FROM {table} GROUP BY id ORDER BY id").to_pylist()


def test_a_log_written_by_2feee56_is_replayed_exactly_once(start_server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copytree(FIXTURE, data_dir / "wal")
    server = start_server(*OPTIONS, data_dir=data_dir)
    server.wait_landed("clicks", 7)
    server.wait_landed("views", 4)
    assert "replayed 11 events" in server.log()
    clicks = [{"id": i, "n": 1} for i in range(7)]
    views = [{"id": i, "n": 1} for i in (100, 101, 105, 106)]  # 102..104 were the record the old repair tombstoned
    assert ids(server, "clicks") == clicks and ids(server, "views") == views
    status, _, receipt = server.http("GET", "/v1/receipts/r-fixture-1")
    assert status == 200 and json.loads(receipt)["status"] == "landed" and json.loads(receipt)["landed"] == 3
    # the keyed request in the old log, and the key in the old keys file, still answer a retry
    assert retry(server, "clicks", 3, 2, "upgrade-key-3") == (200, "true", {
        "accepted": 2, "rejected": 0, "errors": [], "receipt": "r-fixture-3"})
    assert retry(server, "clicks", 900, 2, "landed-key-0")[1:] == ("true", {
        "accepted": 2, "rejected": 0, "errors": [], "receipt": "r-fixture-0"})
    assert server.stats("clicks")["received"] == 7
    assert server.stop() == 0
    # everything settled: the old segments are gone, the log goes on in format 3
    assert [scan_segment(p).version for p in segment_paths(data_dir / "wal")] == [3]

    server = start_server(*OPTIONS, data_dir=data_dir)
    assert retry(server, "clicks", 3, 2, "upgrade-key-3")[:2] == (200, "true")
    assert server.stats("clicks").get("received", 0) == 0  # nothing replayed twice, the retry not ingested
    assert ids(server, "clicks") == clicks and ids(server, "views") == views
    assert server.stop() == 0
