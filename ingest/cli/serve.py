"""`ingest serve`: run the ingestion server."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest.server import config
from ingest.server.config import Settings

SETTINGS_EPILOG = """\
Every option can also be set in the environment (INGEST_<NAME>, e.g.
INGEST_BATCH_EVENTS=1000) or in a TOML file given with --config, either at
top level or under [serve] (e.g. batch_events = 1000). The command line wins
over the environment, which wins over the file.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the ingestion server",
        description="Receive JSON events over TCP and HTTP and land them in DuckDB or Parquet.",
        epilog=SETTINGS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file with settings")
    defaults = Settings()
    for f in config.settable_fields():
        kind = {"int": int, "Path": Path}.get(f.type, str)
        extra = {"choices": config.SINKS} if f.name == "sink" else {}
        parser.add_argument(
            config.flag_name(f.name), dest=f.name, type=kind, default=None,
            metavar=f.name.upper() if f.name != "sink" else None,
            help=f"{f.metadata['help']} (default: {getattr(defaults, f.name)}; env {config.env_name(f.name)})",
            **extra,
        )


def run(args) -> int:
    """Raises ConfigError for a bad setting (the parser reports it)."""
    cli_values = {f.name: getattr(args, f.name) for f in config.settable_fields()}
    settings = config.load(args.config, cli_values)
    from ingest.server.app import StartupError, run as run_server

    try:
        run_server(settings)
    except StartupError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    return 0
