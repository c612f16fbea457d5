"""`ingest bench`: throughput and latency on this machine, beside pyarrow, DuckDB and ClickHouse."""
from __future__ import annotations

import argparse
from pathlib import Path

from ingest.protocol import WAIT_MODES

BENCH_DESCRIPTION = """\
Measure ingest on this machine, beside what you would otherwise use, in one run.

Generates a reproducible corpus (about 200-byte events, nested or flat, from
--seed), starts a fresh `ingest serve` on free loopback ports for each case
(or uses --target), and drives it from separate client processes. First as
real clients do: N HTTP connections, one request in flight on each, 1, 1,000
or 10,000 events per request; then the capacity cases, pipelined HTTP and
TCP with 1, 100, 1,000 and 10,000 events per request or send(). For each case
it reports events/s and MB/s (first byte sent until GET /v1/stats shows every
event landed), HTTP round-trip and sent-to-landed latency (p50/p99), the
server's CPU seconds and peak RSS. The real-client cases also run against
ClickHouse (MergeTree and Buffer tables) when clickhouse-server is on PATH or
--clickhouse is given. Then the baselines on the same corpus:
pyarrow.json.read_json to Parquet, DuckDB read_ndjson, one DuckDB INSERT per
event against a bulk INSERT, and the compiled encoder against its pure-Python
reference; and the performance goals, met or not.
"""

BENCH_EPILOG = """\
cases (for --cases; shell-style patterns, comma-separated):
  real clients: HTTP-B-cN is N connections, one request in flight on each
  (no pipelining), B events per request; -none asks ?wait=none
    http-1-c32 http-1-c32-none   32 connections, one event per request
    http-1000-c16                16 connections, 1,000 events per request
    http-10000-c8                8 connections, 10,000 events per request
    http-1-c1 http-1-c1-none     one connection, one event at a time
  capacity (pipelined HTTP, TCP):
    http-1 http-100 http-1000 http-10000 POST /v1/ingest/{table}, N events per
                                 request, many requests in flight (--pipeline)
    tcp-1 tcp-100 tcp-1000 tcp-10000     NDJSON over TCP, N events per send()
  pyarrow duckdb-read-ndjson duckdb-row-insert encoder   the baselines
  import   `ingest import` into each --sink, beside DuckDB read_ndjson and
           pyarrow.json -> Parquet, whole commands on one file of 4,000,000
           events (200,000 with --quick)
  e.g. --cases 'http-*-c*' (every real-client case), 'tcp-*,encoder'.
  Default: all; with --quick: http-1-c32, http-1-c32-none, http-1000-c16,
  tcp-1000, http-1000 and every baseline.

ClickHouse: the real-client cases without -none also run against ClickHouse,
same client processes, its HTTP interface (INSERT INTO t FORMAT JSONEachRow):
into a MergeTree table (answered once the part is written; landed = the last
answer; one event per INSERT writes a part each, so those cases send at most
1,000 events), and for 1 and 1,000 events per request into a Buffer table in
front of one (answered once in memory; landed = SELECT count() of the Buffer
table, rows in memory included, shows every event; they reach the MergeTree
table at its flush, 250,000 rows or 1 s, untimed). ClickHouse is sent the
flat corpus (18.16 cannot read an object into a String column). The
bench starts its own clickhouse-server (temporary directory, free loopback
ports) when it is on PATH, or uses --clickhouse URL; --no-clickhouse skips it.

sizes: --events N is the corpus and the size of the larger cases (default
1,000,000; 50,000 with --quick); one event per send() sends N/5 events, one
per HTTP request N/10 (N/200 on one connection), 100 per request N/2. The
row-at-a-time INSERT runs on 5,000 events (1,000 with --quick), the
pure-Python encoder on 20,000 (2,000). Each case runs --repeat times (3; once
with --quick) and its median run, by events/s, is reported; parse-only and
encode-only figures are best of 3.

server: each case gets its own `ingest serve --batch-events 250000
--flush-interval 200`: large batches keep DuckDB commits big; 200 ms keeps the
last, partial batch of a case from waiting a whole second.

--target HOST:PORT benches a server that is already running (its HTTP port).
HTTP cases POST to new tables bench_CASE_HHMMSS (e.g. bench_http_1_c32_...),
left in its data. TCP cases
send to its --tcp-table (say which with --target-tcp-table, default events),
mixed with whatever else it receives there: use a scratch server. The TCP port
comes from --target-tcp [HOST:]PORT or, for a server on this machine, from
/proc (its other listening socket); without it, TCP cases are skipped. The sink
is the target's (--sink is ignored). CPU and memory figures need the server's
process to be visible in /proc (same machine, same user or root).

--out DIR writes DIR/results.json (every case, baseline, comparison and goal,
with machine and versions) and DIR/throughput.png, DIR/latency.png.
Exit status: 0 when every case ran, 1 otherwise.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure throughput and latency here, beside pyarrow, DuckDB and ClickHouse",
        description=BENCH_DESCRIPTION, epilog=BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="a smaller corpus and fewer cases, under a minute (what the test suite runs)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write results.json and PNG plots here")
    parser.add_argument("--events", type=_positive, metavar="N", help="corpus size (default 1000000; --quick 50000)")
    parser.add_argument("--seed", type=int, default=42, metavar="N", help="corpus seed: the same seed, the same bytes (default 42)")
    parser.add_argument("--shape", choices=("nested", "flat", "both"), default="nested",
                        help="events with a nested object (landed as JSON) or only scalars (default nested)")
    parser.add_argument("--sink", choices=("duckdb", "parquet", "delta", "both"), default=None,
                        help="sink(s) of the servers started (default both; --quick duckdb)")
    parser.add_argument("--cases", metavar="PATTERNS", help="which cases and baselines to run (see below)")
    parser.add_argument("--clients", type=_positive, metavar="N",
                        help="client processes per case (default 2; 4 for one event per request; "
                             "at most one per connection)")
    parser.add_argument("--pipeline", type=_positive, metavar="N",
                        help="HTTP requests in flight per connection in the capacity cases "
                             "(default: 16,000 events' worth, 2 to 256)")
    parser.add_argument("--repeat", type=_positive, metavar="N",
                        help="runs of each case, the median reported (default 3; --quick 1)")
    parser.add_argument("--batch-events", type=_positive, default=250_000, metavar="N",
                        help="the server's --batch-events (default 250000)")
    parser.add_argument("--flush-interval", type=_positive, default=200, metavar="MS",
                        help="the server's --flush-interval (default 200)")
    parser.add_argument("--http-wait", choices=WAIT_MODES,
                        help="the HTTP ack mode asked for (?wait=); default: the server's (received)")
    parser.add_argument("--server-args", metavar="ARGS",
                        help='more flags for the servers started, e.g. "--wal off" (see ingest serve --help)')
    parser.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS",
                        help="give up on a case whose events have not all landed by then (default 180)")
    parser.add_argument("--clickhouse", metavar="URL",
                        help="run the ClickHouse cases against this running server's HTTP interface "
                             "(e.g. http://127.0.0.1:8123) instead of starting one")
    parser.add_argument("--no-clickhouse", action="store_true", help="no ClickHouse cases")
    parser.add_argument("--target", metavar="HOST:PORT", help="bench the server already running with this HTTP address")
    parser.add_argument("--target-tcp", metavar="[HOST:]PORT", help="its TCP port (default: found through /proc)")
    parser.add_argument("--target-tcp-table", default="events", metavar="NAME",
                        help="the table its TCP lines go to (default events)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it is shown when stderr is a terminal)")


def _positive(value: str) -> int:
    number = int(value.replace("_", "").replace(",", ""))
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return number


def run(args) -> int:
    from ingest.bench import run as run_bench

    return run_bench(vars(args), args.command_line)
