"""`ingest compact --table T`: rewrite a table's small files into large
ones, safe beside running servers (Delta: optimize/compact, retried on a
commit conflict; Parquet: each partition's batch files merged into one)."""
from __future__ import annotations

import json
import sys

from ingest.cli.sink_options import add_sink_arguments, first_line, sink_settings
from ingest.sinks.registry import SINKS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compact", help="merge a table's small files into large ones, while servers keep writing",
        description="Each flush writes one file (one per partition); compaction rewrites them into large files. "
                    "Safe to run while servers write: Delta commits it as one transaction and retries it on a "
                    "conflict; Parquet replaces a partition's files by one that holds the same rows and batch ids.")
    parser.add_argument("--table", required=True, help="the table to compact")
    add_sink_arguments(parser)


def run(args) -> int:
    settings = sink_settings(args)
    kind = SINKS[settings.sink]
    if kind.compact is None:
        print(f"ingest compact: the {settings.sink} sink keeps its own files compact (nothing to do)", file=sys.stderr)
        return 2
    try:
        summary = kind.compact(settings, args.table)
    except Exception as exc:  # a missing table, an unreachable store: one line, not a traceback
        print(f"ingest compact: table {args.table}: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(summary, default=str))
    return 0
