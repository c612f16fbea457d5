"""kill -9 at random moments under load: every acknowledged event is in the
sink exactly once after restart."""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import poll

KILLS = int(os.environ.get("INGEST_CRASH_KILLS", "20"))  # a longer run: INGEST_CRASH_KILLS=200
LOAD = str(Path(__file__).with_name("crash_load.py"))


def acknowledged(path: Path) -> set[int]:
    ids: set[int] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            start, stop = map(int, line.split())
            ids.update(range(start, stop))
    return ids


@pytest.mark.parametrize("sink", ["duckdb", "parquet", "delta"])
def test_acknowledged_events_survive_kill_9_exactly_once(start_server, tmp_path, sink):
    rng = random.Random(sink)
    data_dir = tmp_path / "data"
    acked_path = tmp_path / "acked.txt"
    next_id = 0
    for kill in range(KILLS):
        server = start_server("--sink", sink, "--batch-events", rng.choice([300, 1000, 5000]),
                              "--flush-interval", rng.choice([20, 100, 500]), data_dir=data_dir)
        before = len(acknowledged(acked_path))
        load = subprocess.Popen([sys.executable, LOAD, server.host, str(server.http_port), "crash",
                                 str(next_id), "1000000", str(acked_path)])
        # kill once a random number of requests have been acknowledged in this round
        threshold = before + rng.randrange(1, 15) * 200
        poll(lambda: len(acknowledged(acked_path)) >= threshold or load.poll() is not None, what="acknowledgements")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        load.wait(timeout=60)
        next_id += 1_000_000
    server = start_server("--sink", sink, "--flush-interval", 20, data_dir=data_dir)
    # replay happens before the server listens; no "crash" table means nothing needed replaying
    poll(lambda: server.stats("crash").get("buffered", 0) == 0, what="the replay to land")
    acked = acknowledged(acked_path)
    assert len(acked) >= KILLS * 200
    duplicates = server.query("SELECT id, count(*) AS n FROM crash GROUP BY id HAVING count(*) > 1 LIMIT 5")
    assert duplicates.num_rows == 0, duplicates.to_pylist()
    landed = set(server.query("SELECT id FROM crash").column("id").to_pylist())
    missing = acked - landed
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert server.stop() == 0
    segments = list((data_dir / "wal").glob("segment-*.wal"))
    assert len(segments) <= 1, segments  # every settled segment was deleted; only the last, empty one stays
