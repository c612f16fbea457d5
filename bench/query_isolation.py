"""Does a long query slow ingestion? The landing rate, second by second,
before, during and after a CPU-heavy POST /v1/query.

    python bench/query_isolation.py [--sink duckdb] [--query-seconds 30]

Starts a server (a real subprocess, on loopback), one sender process that
keeps POSTing 1,000-event bodies, and prints events landed per second (from
/v1/stats) for each phase; the query is sized to run about --query-seconds
on this machine without load (measured first on a smaller range), times
three, and the server's --query-timeout is --query-seconds: the query runs
that long and is interrupted (408), as a runaway query would be.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.testing.server_process import ServerProcess  # noqa: E402

BODY = b"".join(b'{"user":"u%05d","event":"page_view","path":"/pricing","ms":%d,"ok":true}\n' % (i, i)
                for i in range(1000))


def sender(host: str, port: int, stop) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    while not stop.is_set():
        connection.request("POST", "/v1/ingest/events?wait=none", BODY, {"Content-Type": "application/x-ndjson"})
        answer = connection.getresponse()
        answer.read()
        if answer.status == 429:
            time.sleep(0.05)


def landed(server: ServerProcess) -> int:
    return server.stats("events").get("landed", 0)


def run_query(server: ServerProcess, sql: str, out: dict) -> None:
    started = time.monotonic()
    connection = http.client.HTTPConnection(server.host, server.http_port, timeout=3600)
    connection.request("POST", "/v1/query", sql.encode(), {"Content-Type": "text/plain"})
    answer = connection.getresponse()
    answer.read()
    out["status"], out["seconds"] = answer.status, time.monotonic() - started


def heavy_query(rows: int) -> str:
    return f"SELECT count(*) AS n FROM range({rows}) r WHERE hash(r.range) % 1000 = 7"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sink", default="duckdb", choices=("duckdb", "parquet"))
    parser.add_argument("--query-seconds", type=float, default=30)
    parser.add_argument("--calm-seconds", type=int, default=10, help="seconds measured before and after the query")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", ["--sink", args.sink, "--batch-events", "20000",
                                                    "--flush-interval", "200", "--query-timeout",
                                                    str(int(args.query_seconds))], dict(__import__("os").environ))
        try:
            probe = {}
            run_query(server, heavy_query(200_000_000), probe)  # sized on this machine, no load yet
            rows = int(3 * 200_000_000 * args.query_seconds / max(probe["seconds"], 0.01))
            stop = multiprocessing.Event()
            send = multiprocessing.Process(target=sender, args=(server.host, server.http_port, stop))
            send.start()
            rates: dict[str, list[int]] = {"before": [], "during": [], "after": []}
            previous = landed(server)
            time.sleep(2)  # warm-up: batches start landing
            previous = landed(server)

            def sample(phase: str, seconds: float) -> None:
                nonlocal previous
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    time.sleep(1)
                    now = landed(server)
                    rates[phase].append(now - previous)
                    previous = now
                    print(f"{phase:>7}: {rates[phase][-1]:>9,} events landed in 1 s", flush=True)

            sample("before", args.calm_seconds)
            result: dict = {}
            worker = threading.Thread(target=run_query, args=(server, heavy_query(rows), result))
            worker.start()
            while worker.is_alive():
                sample("during", 1)
            sample("after", args.calm_seconds)
            stop.set()
            send.join()
        finally:
            server.stop()
    print(f"\nthe query ({heavy_query(rows)}) answered {result.get('status')} after {result.get('seconds', 0):.1f} s")
    print(f"{'phase':>7} | median events/s | min events/s | seconds")
    for phase, values in rates.items():
        if values:
            print(f"{phase:>7} | {statistics.median(values):>15,.0f} | {min(values):>12,} | {len(values)}")
    during, before = rates["during"], rates["before"]
    if during and before:
        print(f"\nlanding rate while the query ran: {statistics.median(during) / statistics.median(before):.2f}x "
              "the rate before it (median of 1 s samples)")
    print(json.dumps({phase: values for phase, values in rates.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
