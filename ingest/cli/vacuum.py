"""`ingest vacuum --retain H`: delete the files of a Delta table that no
version younger than H hours reads (those compaction replaced)."""
from __future__ import annotations

import sys

from ingest.cli.sink_options import add_sink_arguments, run_on_sink


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "vacuum", help="delete Delta files that compaction replaced, older than --retain hours",
        description="Compaction leaves the files it replaced for readers of older versions; vacuum deletes those "
                    "that no version younger than --retain hours reads. Keep --retain above your longest query.")
    parser.add_argument("--retain", type=int, required=True, metavar="HOURS", help="hours of versions to keep readable")
    parser.add_argument("--table", default=None, help="one table (default: every table)")
    add_sink_arguments(parser)


def run(args) -> int:
    if args.retain < 0:
        print("ingest vacuum: --retain must not be negative", file=sys.stderr)
        return 2
    status, removed = run_on_sink(args, "vacuum", "vacuum", "deletes replaced files at once", args.table, args.retain)
    for path in removed or ():
        print(path)
    if status == 0:
        print(f"removed {len(removed)} file(s)", file=sys.stderr)
    return status
