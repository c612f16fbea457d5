"""`ingest import` beside what a user would run instead, on the same
NDJSON file, each as a whole command in its own process (start-up, the
final commit or checkpoint and the close included): DuckDB's read_ndjson
into a table of a database file, pyarrow.json.read_json into a Parquet
file (zstd), and `ingest import` standalone into each sink.

The file is the run's corpus written over and over up to `import_events`
events, so that start-up weighs on each figure about as it would on a
real backfill."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

IMPORT_EVENTS = (4_000_000, 200_000)  # full, quick

READ_NDJSON = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute("CREATE TABLE events AS SELECT * FROM read_ndjson(?)", [sys.argv[1]])
print(con.execute("SELECT count(*) FROM events").fetchone()[0])
con.close()
"""
PYARROW = """
import sys, pyarrow.json as pj, pyarrow.parquet as pq
table = pj.read_json(sys.argv[1], read_options=pj.ReadOptions(use_threads=True, block_size=16 << 20))
pq.write_table(table, sys.argv[2], compression="zstd")
print(table.num_rows)
"""


def import_file(corpus: bytes, events: int, wanted: int, directory: Path) -> tuple[Path, int]:
    """The corpus written out until the file holds at least `wanted` events."""
    path = directory / "import.ndjson"
    copies = max(1, -(-wanted // events))
    with open(path, "wb") as out:
        for _ in range(copies):
            out.write(corpus)
    return path, copies * events


def _command(name: str, key: str, args: list[str], events: int, directory: Path, **details) -> dict:
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=directory)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{name}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
    last = result.stdout.strip().splitlines()[-1]
    landed = json.loads(last)["events_landed"] if last.startswith("{") else int(last)
    if landed != events:
        raise RuntimeError(f"{name}: {landed:,} of {events:,} events in the result")
    if last.startswith("{"):
        details["import_seconds"] = json.loads(last)["seconds"]  # from the first batch read to the last landed
    return {"name": name, "key": key, "events": events, "seconds": round(seconds, 4),
            "events_per_second": round(events / seconds), **details}


def import_figures(corpus: bytes, corpus_events: int, sinks: tuple[str, ...], quick: bool, directory: Path) -> list[dict]:
    path, events = import_file(corpus, corpus_events, IMPORT_EVENTS[quick], directory)
    figures = []
    try:
        figures.append(_command("DuckDB read_ndjson → table (whole command)", "import-read-ndjson",
                                [sys.executable, "-c", READ_NDJSON, str(path), str(directory / "read_ndjson.duckdb")],
                                events, directory))
        figures.append(_command("pyarrow.json.read_json → Parquet (whole command)", "import-pyarrow",
                                [sys.executable, "-c", PYARROW, str(path), str(directory / "pyarrow.parquet")],
                                events, directory))
        for sink in sinks:
            data_dir = directory / f"import-{sink}"
            figures.append(_command(f"ingest import → {sink} (whole command)", f"import-{sink}",
                                    [sys.executable, "-m", "ingest", "import", str(path), "--table", "events",
                                     "--data-dir", str(data_dir), "--sink", sink, "--progress", "json",
                                     "--progress-interval", "3600"], events, directory))
            shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        path.unlink(missing_ok=True)
        for leftover in list(directory.glob("read_ndjson.duckdb*")) + list(directory.glob("pyarrow.parquet")):
            leftover.unlink()
    return figures

