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
    for f in config.flag_fields():
        described = f"{f.metadata['help']} (default: {getattr(defaults, f.name)}; env {config.env_name(f.name)})"
        if f.type == "bool":
            parser.add_argument(config.flag_name(f.name), dest=f.name, action="store_true", default=None,
                                help=described)
            continue
        kind = {"int": int, "Path": Path, "Path | None": Path}.get(f.type, str)
        extra = {"choices": config.SINKS} if f.name == "sink" else {}
        parser.add_argument(
            config.flag_name(f.name), dest=f.name, type=kind, default=None,
            metavar=f.name.upper() if f.name != "sink" else None,
            help=described, **extra,
        )
    for flag in config.secret_flags():  # refused with a reason, not "unrecognized arguments"
        parser.add_argument(flag, dest="secret_on_command_line", action="append", metavar="SECRET",
                            help=argparse.SUPPRESS)


def run(args) -> int:
    """Raises ConfigError for a bad setting (the parser reports it)."""
    if getattr(args, "secret_on_command_line", None):
        flag = config.secret_flags()[0]  # the one secret setting: --webhook-secret
        name = flag[2:].replace("-", "_")
        raise config.ConfigError(
            f"{flag} would show the secret to anyone who can list processes (/proc/PID/cmdline); set it in the "
            f"environment ({config.env_name(name)}), in a file ({flag}-file) or in the --config file")
    cli_values = {f.name: getattr(args, f.name) for f in config.flag_fields()}
    settings = config.load(args.config, cli_values)
    from ingest.server.app import StartupError, run as run_server

    try:
        run_server(settings)
    except StartupError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    return 0
