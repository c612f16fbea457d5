"""The `ingest` command: serve, query."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa

from ingest import config
from ingest.config import ConfigError, Settings

SETTINGS_EPILOG = """\
Every option can also be set in the environment (INGEST_<NAME>, e.g.
INGEST_BATCH_EVENTS=1000) or in a TOML file given with --config, either at
top level or under [serve] (e.g. batch_events = 1000). The command line wins
over the environment, which wins over the file.
"""


def _add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the ingestion server",
        description="Receive JSON events over TCP and HTTP and land them in DuckDB or Parquet.",
        epilog=SETTINGS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file with settings")
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        kind = {"int": int, "Path": Path}.get(f.type, str)
        extra = {"choices": config.SINKS} if f.name == "sink" else {}
        parser.add_argument(
            config.flag_name(f.name), dest=f.name, type=kind, default=None,
            metavar=f.name.upper() if f.name != "sink" else None,
            help=f"{f.metadata['help']} (default: {getattr(defaults, f.name)}; env {config.env_name(f.name)})",
            **extra,
        )


def _add_query(subparsers) -> None:
    parser = subparsers.add_parser(
        "query", help="run SQL over what has landed, also while the server runs",
        description=(
            "Run SQL over the ingested tables. While a server runs on DIR, the query goes "
            "through its HTTP endpoint (DuckDB lets one process write the file); otherwise "
            "the DuckDB file is opened read-only, or the Parquet files are read directly."
        ),
    )
    parser.add_argument("sql", help='e.g. "SELECT count(*) FROM events"')
    parser.add_argument("--data-dir", type=Path, default=None, help="the server's data directory (default: data)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")


def run_query(data_dir: Path, sql: str) -> pa.Table:
    """Through the running server if there is one, else straight from the files."""
    state_path = Settings(data_dir=data_dir).state_path
    if state_path.exists():
        state = json.loads(state_path.read_text())
        request = urllib.request.Request(
            f"http://{state['host']}:{state['http_port']}/v1/query", data=sql.encode(), method="POST",
            headers={"Content-Type": "text/plain"},
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return pa.ipc.open_stream(response.read()).read_all()
        except urllib.error.HTTPError as exc:
            raise QueryError(json.loads(exc.read()).get("error", str(exc))) from None
        except urllib.error.URLError:
            pass  # a stale state file from a server that is gone: read the files
    from ingest.sinks.duckdb import query_file
    from ingest.sinks.parquet import query_directory

    settings = Settings(data_dir=data_dir)
    try:
        if settings.duckdb_path.exists():
            return query_file(settings.duckdb_path, sql)
        return query_directory(settings.parquet_dir, sql)
    except Exception as exc:
        raise QueryError(str(exc)) from None


class QueryError(Exception):
    pass


def print_table(table: pa.Table, fmt: str, out=sys.stdout) -> None:
    rows = table.to_pylist()
    if fmt == "json":
        for row in rows:
            out.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(table.column_names)
        writer.writerows([("" if v is None else v) for v in row.values()] for row in rows)
        return
    cells = [table.column_names] + [["NULL" if v is None else str(v) for v in row.values()] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.column_names))]
    rule = "+".join("-" * (w + 2) for w in widths)
    for n, row in enumerate(cells):
        out.write(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
        if n == 0:
            out.write(rule + "\n")
    out.write(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ingest", description="High-throughput JSON event ingestion into DuckDB and Parquet.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_serve(subparsers)
    _add_query(subparsers)
    args = parser.parse_args(argv)

    if args.command == "serve":
        cli_values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
        try:
            settings = config.load(args.config, cli_values)
        except ConfigError as exc:
            parser.error(str(exc))
        from ingest.server import run

        run(settings)
        return 0

    if args.command == "query":
        data_dir = args.data_dir or config.load(None, {}).data_dir
        try:
            table = run_query(data_dir, args.sql)
        except QueryError as exc:
            print(f"ingest query: {exc}", file=sys.stderr)
            return 1
        print_table(table, args.format)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
