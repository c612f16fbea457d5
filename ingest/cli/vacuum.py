"""`ingest vacuum --retain H`: delete the files of a Delta table that no
version younger than H hours reads (those compaction replaced)."""
from __future__ import annotations

import sys

from ingest.cli.sink_options import add_sink_arguments, first_line, sink_settings
from ingest.sinks.registry import SINKS


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
    settings = sink_settings(args)
    kind = SINKS[settings.sink]
    if kind.vacuum is None:
        print(f"ingest vacuum: the {settings.sink} sink deletes replaced files at once (nothing to do)", file=sys.stderr)
        return 2
    try:
        removed = kind.vacuum(settings, args.table, args.retain)
    except Exception as exc:
        print(f"ingest vacuum: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    for path in removed:
        print(path)
    print(f"removed {len(removed)} file(s)", file=sys.stderr)
    return 0
