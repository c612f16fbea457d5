"""The `ingest` command. Each subcommand is one module here with
add_parser(subparsers) and run(args) -> exit status."""
from __future__ import annotations

import argparse
import sys

from ingest import __version__
from ingest.cli import bench, compact, deadletter, import_, query, serve, vacuum, wal
from ingest.cli.query import QueryError, print_table, run_query  # noqa: F401  (the import path tools and tests use)
from ingest.server.config import ConfigError

COMMANDS = {"serve": serve, "import": import_, "query": query, "bench": bench, "deadletter": deadletter,
            "wal": wal, "compact": compact, "vacuum": vacuum}  # as `--help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest", description="High-throughput JSON event ingestion into DuckDB, Parquet and Delta Lake.")
    parser.add_argument("--version", action="version", version=f"ingest {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "ingest " + " ".join(sys.argv[1:] if argv is None else argv)  # for reports that quote it
    try:
        return COMMANDS[args.command].run(args)
    except ConfigError as exc:  # a bad setting, from a flag, the environment or a file, is a usage error
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
