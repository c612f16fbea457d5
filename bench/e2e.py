"""End-to-end throughput: a real server subprocess, a corpus sent over one TCP
connection (or HTTP in 1,000-event requests), timed from the first byte sent
until /v1/stats shows every event landed.

    .venv/bin/python bench/e2e.py --events 1000000 --sink parquet
    .venv/bin/python bench/e2e.py --events 100000 --source http --sink duckdb
"""
from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ingest.testing.corpus import ndjson
from ingest.testing.server_process import parse_listening



def stats(host: str, port: int, table: str) -> dict:
    conn = http.client.HTTPConnection(host, port)
    conn.request("GET", "/v1/stats")
    document = json.loads(conn.getresponse().read())
    conn.close()
    return document["tables"].get(table, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sink", choices=("duckdb", "parquet"), default="duckdb")
    parser.add_argument("--source", choices=("tcp", "http"), default="tcp")
    parser.add_argument("--per-request", type=int, default=1000)
    parser.add_argument("--batch-events", type=int, default=250_000)
    args = parser.parse_args()

    corpus = ndjson(args.events, seed=3)
    requests = []
    if args.source == "http":
        lines = corpus.splitlines(keepends=True)
        requests = [b"".join(lines[i:i + args.per_request]) for i in range(0, len(lines), args.per_request)]
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [sys.executable, "-m", "ingest", "serve", "--data-dir", data_dir, "--tcp-port", "0", "--http-port", "0",
             "--sink", args.sink, "--batch-events", str(args.batch_events)],
            stdout=subprocess.PIPE, text=True,
        )
        host, tcp_port, http_port = parse_listening(server.stdout.readline())
        table = "events" if args.source == "tcp" else "bench"
        started = time.perf_counter()
        if args.source == "tcp":
            with socket.create_connection((host, tcp_port)) as sock:
                sock.sendall(corpus)
        else:
            conn = http.client.HTTPConnection(host, http_port)
            for body in requests:
                conn.request("POST", f"/v1/ingest/{table}", body=body, headers={"Content-Type": "application/x-ndjson"})
                conn.getresponse().read()
            conn.close()
        sent = time.perf_counter()
        while stats(host, http_port, table).get("landed", 0) < args.events:
            time.sleep(0.01)
        landed = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        server.wait()
    elapsed = landed - started
    print(json.dumps({
        "source": args.source, "sink": args.sink, "events": args.events, "bytes": len(corpus),
        "seconds_to_send": round(sent - started, 3), "seconds_to_land": round(elapsed, 3),
        "events_per_second": round(args.events / elapsed), "mb_per_second": round(len(corpus) / elapsed / 1e6, 1),
    }))


if __name__ == "__main__":
    main()
