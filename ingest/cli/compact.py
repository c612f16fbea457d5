"""`ingest compact --table T`: rewrite a table's small files into large
ones, safe beside running servers (Delta: optimize/compact, retried on a
commit conflict; Parquet: each partition's batch files merged into one)."""
from __future__ import annotations

import json

from ingest.cli.sink_options import add_sink_arguments, run_on_sink


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compact", help="merge a table's small files into large ones, while servers keep writing",
        description="Each flush writes one file (one per partition); compaction rewrites them into large files. "
                    "Safe to run while servers write: Delta commits it as one transaction and retries it on a "
                    "conflict; Parquet replaces a partition's files by one that holds the same rows and batch ids.")
    parser.add_argument("--table", required=True, help="the table to compact")
    add_sink_arguments(parser)


def run(args) -> int:
    status, summary = run_on_sink(args, "compact", "compact", "keeps its own files compact", args.table)
    if status == 0:
        print(json.dumps(summary, default=str))
    return status
