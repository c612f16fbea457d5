"""`ingest query`: SQL over what has landed, through the running server or
straight from the files."""
from __future__ import annotations

import csv
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING


from ingest.server import config
from ingest.server.config import Settings
from ingest.server.state import running_server, stored_sink_settings

if TYPE_CHECKING:
    import pyarrow as pa

TOKEN_ENV = "INGEST_TOKEN"  # the token `ingest query` and `ingest deadletter replay` send: never a flag (argv is public)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "query", help="run SQL over what has landed, also while the server runs",
        description=(
            "Run SQL over the ingested tables. While a server runs on DIR, the query goes "
            "through its HTTP endpoint (DuckDB lets one process write the file); otherwise "
            "the DuckDB file is opened read-only, or the Parquet files are read directly. "
            "A server with tokens needs one with the query scope in INGEST_TOKEN."
        ),
    )
    parser.add_argument("sql", help='e.g. "SELECT count(*) FROM events"')
    parser.add_argument("--data-dir", type=Path, default=None, help="the server's data directory (default: data)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")


def run(args) -> int:
    data_dir = args.data_dir or config.load(None, {}).data_dir
    try:
        table = run_query(data_dir, args.sql)
    except QueryError as exc:
        print(f"ingest query: {exc}", file=sys.stderr)
        return 1
    print_table(table, args.format)
    return 0


class QueryError(Exception):
    pass


def run_query(data_dir: Path, sql: str) -> pa.Table:
    """Through the running server if there is one, else straight from the files."""
    import pyarrow as pa  # loaded for a query, not for every `ingest` command

    server = running_server(data_dir)
    if server is not None:
        headers = {"Content-Type": "text/plain"}
        if os.environ.get(TOKEN_ENV):  # a token with the query scope, for a server with [[auth.tokens]]
            headers["Authorization"] = f"Bearer {os.environ[TOKEN_ENV]}"
        request = urllib.request.Request(f"{server.http_url}/v1/query", data=sql.encode(), method="POST",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return pa.ipc.open_stream(response.read()).read_all()
        except urllib.error.HTTPError as exc:
            message = json.loads(exc.read()).get("error", str(exc))
            if exc.code == 401:
                message += f" (set {TOKEN_ENV} to a token with the query scope)"
            raise QueryError(message) from None
        except urllib.error.URLError:
            pass  # it stopped listening since: read the files
    from ingest.sinks.registry import query_offline

    try:
        return query_offline(Settings(data_dir=data_dir, **stored_sink_settings(data_dir)), sql)
    except Exception as exc:
        raise QueryError(str(exc)) from None


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
