"""`ingest bench`: how fast ingest is on this machine, beside what a user
would otherwise do, measured in one run on one reproducible corpus.

    runner          the corpus, the cases against a real server, the baselines
    clients         load generators, one process each (python -m ingest.bench.clients)
    server_process  the server under test: started, or found (--target); its /proc figures
    baselines       pyarrow, DuckDB read_ndjson, row-at-a-time INSERT, the encoders
    clickhouse      ClickHouse for the real-client cases: started (or --clickhouse URL), its tables
    goals           the issue's performance goals, met or not
    report          the terminal table, results.json, the plots
    machine         machine and versions, for results.json

Kept light: client processes import this package, so nothing heavy is
imported here. matplotlib and tqdm come with the extra `ingest[bench]` and
are imported only once a bench runs.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys

EXTRA_MODULES = ("matplotlib", "tqdm")  # what `pip install 'ingest[bench]'` adds
MISSING_EXTRA = "ingest: error: ingest bench needs its extra: pip install 'ingest[bench]'"


def extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in EXTRA_MODULES)


def run(flags: dict, command: str) -> int:
    """Runs the bench that `ingest bench`'s parsed flags describe (`command`: the command line, for the
    report); 0 when every case and baseline ran, 2 when the [bench] extra is not installed."""
    if not extra_installed():
        print(MISSING_EXTRA, file=sys.stderr)
        return 2
    from ingest.bench import report
    from ingest.bench.runner import Bench, BenchOptions
    from ingest.bench.server_process import BenchError

    names = {f.name for f in dataclasses.fields(BenchOptions)} - {"command"}  # the flags' dests
    options = BenchOptions(**{name: flags[name] for name in names}, command=command)

    try:
        document = report.complete(Bench(options).run())
    except BenchError as exc:
        print(f"ingest bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # servers, clients and temporary files are gone by now
        print("ingest bench: interrupted", file=sys.stderr)
        return 130
    print(report.render(document), end="", flush=True)
    if options.out is not None:
        for path in report.write(document, options.out):
            print(f"wrote {path}")
    return 1 if any(item.get("error") for item in document["cases"] + document["baselines"]) else 0


__all__ = ["extra_installed", "run"]
