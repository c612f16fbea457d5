"""What more nodes buy: events/s through 1, 2 and 3 servers writing one
Delta table (--sink delta, one file:// --delta-uri, each node its own data
directory and node id), in the same run.

    python bench/scale_out.py [--senders 6] [--seconds 8] [--batch 1000] [--quick]

For each node count, starts the servers (real subprocesses on loopback),
then `--senders` processes, spread over the nodes as a round-robin load
balancer would, that each keep one connection and POST `--batch`-event
NDJSON bodies back to back for `--seconds` (every event its own id). Then
waits until every node has landed all it acknowledged. Prints, per node
count, events/s acknowledged during the load, events/s landed (every
acknowledged event committed to the Delta table, counted from the start of
the load to the last commit), the ratio to one node, the Delta commits
made, and how busy the machine's cores were during the load (all of them,
from /proc/stat): the servers and the senders share them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from http_load import run_senders  # noqa: E402  (bench/, beside this script)
from ingest.testing.server_process import ServerProcess, poll  # noqa: E402

TABLE = "clicks"


def body_template(batch: int) -> bytes:
    """One body with a %s where each event's id goes: filled anew per request."""
    return b"".join(b'{"id":"%%s","user":"user%d","event":"page_view","path":"/products/%d","ms":%d}\n'
                    % (n % 1000, n % 97, n % 5000) for n in range(batch))


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (Linux); (0, 0) elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def measure(nodes: int, senders: int, batch: int, seconds: float, flush_interval: int) -> dict:
    from deltalake import DeltaTable

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        uri = (root / "lake").as_uri()
        servers = [ServerProcess(root / f"node-{n}", ["--sink", "delta", "--delta-uri", uri, "--node-id", f"node-{n}",
                                                      "--flush-interval", str(flush_interval)], dict(os.environ))
                   for n in range(nodes)]
        try:
            marks = {}
            acknowledged = run_senders(
                [servers[s % nodes].http_port for s in range(senders)], f"/v1/ingest/{TABLE}", "application/x-ndjson",
                body_template(batch), batch, seconds, lambda: marks.update(started=time.monotonic(), cpu=cpu_times()))
            started, cpu_before = marks["started"], marks["cpu"]
            load_ended, cpu_after = time.monotonic(), cpu_times()
            for server in servers:
                poll(lambda: server.stats(TABLE).get("buffered", 0) == 0, timeout=300, interval=0.01,
                     what=f"node {server.data_dir.name} to land what it acknowledged")
            landed_at = time.monotonic()
            landed = sum(server.stats(TABLE).get("landed", 0) for server in servers)
            assert landed == acknowledged, (landed, acknowledged)
        finally:
            for server in servers:
                server.stop()
        commits = DeltaTable(f"{uri}/{TABLE}").version() + 1
    return {"acknowledged": acknowledged / (load_ended - started), "landed": acknowledged / (landed_at - started),
            "commits": commits,
            "cpu": (cpu_after[0] - cpu_before[0]) / max(1, cpu_after[1] - cpu_before[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=6, help="load processes in all, spread over the nodes")
    parser.add_argument("--seconds", type=float, default=8, help="load time per node count")
    parser.add_argument("--batch", type=int, default=1000, help="events per request")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--flush-interval", type=int, default=200, help="each node's --flush-interval, ms")
    parser.add_argument("--quick", action="store_true", help="2 s of load per node count")
    options = parser.parse_args()
    seconds = 2 if options.quick else options.seconds
    rows = {n: measure(n, options.senders, options.batch, seconds, options.flush_interval) for n in options.nodes}
    base = rows[options.nodes[0]]
    print(f"{options.senders} senders x {options.batch}-event NDJSON bodies, {seconds:g} s per node count, "
          f"--flush-interval {options.flush_interval}, one file:// Delta table, {os.cpu_count()} cores")
    print(f"{'nodes':>5}  {'acknowledged/s':>14}  {'landed/s':>10}  {'ratio':>5}  {'commits':>7}  {'cpu busy':>8}")
    for n, row in rows.items():
        print(f"{n:>5}  {row['acknowledged']:>14,.0f}  {row['landed']:>10,.0f}  "
              f"{row['landed'] / base['landed']:>4.2f}x  {row['commits']:>7}  {row['cpu']:>8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
