"""The sink options the offline commands share with `ingest serve`: a data
directory uses the sink it was served with (DIR/sink.json) unless flags,
the environment or --config say otherwise."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ingest.server import config
from ingest.server.config import Settings
from ingest.server.state import stored_sink_settings

FLAGS = ("sink", "delta_uri", "delta_endpoint")


def add_sink_arguments(parser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="the server's data directory (default: data)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="the server's TOML settings file")
    parser.add_argument("--sink", choices=config.SINKS, default=None,
                        help="the sink (default: the one the data directory was served with)")
    parser.add_argument("--delta-uri", default=None, help="--sink delta: file:///path or s3://bucket/prefix")
    parser.add_argument("--delta-endpoint", default=None, help="--sink delta on s3://: an S3-compatible endpoint")


def sink_settings(args) -> Settings:
    """Settings: flags > environment > --config > DIR/sink.json > defaults."""
    data_dir = args.data_dir or (config.load(args.config, {}).data_dir if args.config else Path("data"))
    settings = config.load(args.config, {"data_dir": data_dir, **{k: getattr(args, k) for k in FLAGS}})
    stored = stored_sink_settings(data_dir)
    chosen = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    for name, value in stored.items():  # below anything the operator gave
        if name not in chosen and getattr(settings, name) == getattr(Settings(), name) \
                and config.env_name(name) not in os.environ:
            setattr(settings, name, value)
    settings.validate()
    return settings


def first_line(exc: BaseException) -> str:
    """An error as one line (delta-rs adds the OS error's debug form on the next)."""
    return (str(exc).strip().splitlines() or [""])[0]


def run_on_sink(args, command: str, operation: str, nothing_to_do: str, *arguments):
    """Runs the sink's `operation` (a SinkKind field: compact, vacuum) with
    `arguments`; returns (exit status, its result). A sink without it, or
    a failure, is one line on stderr."""
    from ingest.sinks.registry import SINKS

    settings = sink_settings(args)
    function = getattr(SINKS[settings.sink], operation)
    if function is None:
        print(f"ingest {command}: the {settings.sink} sink {nothing_to_do} (nothing to do)", file=sys.stderr)
        return 2, None
    try:
        return 0, function(settings, *arguments)
    except Exception as exc:  # a missing table, an unreachable store: one line, not a traceback
        print(f"ingest {command}: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1, None
