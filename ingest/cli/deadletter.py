"""`ingest deadletter list|show|replay|purge`: the dead-letter store on disk."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.server.config import Settings
from ingest.server.state import DataDirInUse, DataDirLock, running_server

if TYPE_CHECKING:
    from ingest.core.deadletter import DeadLetterStore, Entry

REPLAY_RETRIES = 30  # a replay waits out a busy server (429/503) this many times
REPLAY_CHUNK_BYTES = 8 << 20


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "deadletter", help="inspect, replay or purge what could not land",
        description="Everything the server could not land (rejected input, rows the sink refused, batches "
                    "out of retries) is kept under DIR/deadletter/{table}/ as Arrow IPC files.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=Path("data"), help="the server's data directory (default: data)")
    listing = actions.add_parser("list", parents=[common], help="one line per dead-letter file")
    listing.add_argument("--table", help="only this table")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    show = actions.add_parser("show", parents=[common], help="a file's metadata and its events as NDJSON")
    show.add_argument("file", type=Path)
    show.add_argument("--limit", type=int, default=20, help="events to print (default 20, 0 for all)")
    replay = actions.add_parser("replay", parents=[common],
                                help="send the events back through the running server; each file once")
    replay.add_argument("--table", help="only this table")
    replay.add_argument("files", nargs="*", type=Path, help="only these files (default: every file not yet replayed)")
    purge = actions.add_parser("purge", parents=[common], help="delete dead-letter files")
    purge.add_argument("--table", help="only this table")
    purge.add_argument("--replayed", action="store_true", help="only files already replayed")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run(args) -> int:
    from ingest.core.deadletter import DeadLetterStore  # pyarrow: loaded when a dead-letter command runs

    store = DeadLetterStore(Settings(data_dir=args.data_dir).deadletter_dir)
    return {"list": _list, "show": _show, "replay": _replay, "purge": _purge}[args.action](store, args)


def _list(store: DeadLetterStore, args) -> int:
    entries = store.entries(args.table)
    if args.format == "json":
        for entry in entries:
            print(json.dumps(entry.as_dict()))
        return 0
    if not entries:
        print("no dead-letter files")
        return 0
    print(f"{'file':<48} {'table':<16} {'kind':<8} {'rows':>7}  {'replayed':<8}  reason: error")
    for e in entries:
        error = (e.error[:70] + "…") if len(e.error) > 70 else e.error
        print(f"{e.path.parent.name + '/' + e.path.name:<48} {e.table:<16} {e.kind:<8} {e.rows:>7}  "
              f"{'yes' if e.replayed else 'no':<8}  {e.reason}: {error}")
    return 0


def _resolve(store: DeadLetterStore, path: Path) -> Path:
    return path if path.exists() else store.directory / path


def _show(store: DeadLetterStore, args) -> int:
    path = _resolve(store, args.file)
    if not path.exists():
        print(f"ingest deadletter: no file {args.file}", file=sys.stderr)
        return 1
    entry = store.entry(path)
    print(json.dumps(entry.as_dict(), indent=2))
    table = store.read(path)
    if args.limit:
        table = table.slice(0, args.limit)
    if entry.kind == "rejected":
        for row in table.to_pylist():
            print(json.dumps({"error": row["error"], "source": row["source"],
                              "line": row["line"].decode("utf-8", "backslashreplace")}, ensure_ascii=False))
    else:
        sys.stdout.write(store.as_ndjson(entry, table).decode())
    return 0


def _replay(store: DeadLetterStore, args) -> int:
    from ingest.cli.query import TOKEN_ENV
    from ingest.client import IngestError, RetryPolicy, post_ndjson

    server = running_server(args.data_dir)
    if server is None:
        print(f"ingest deadletter: no server is running on {args.data_dir}; start `ingest serve "
              f"--data-dir {args.data_dir}` first", file=sys.stderr)
        return 1
    entries = [store.entry(_resolve(store, f)) for f in args.files] if args.files else store.entries(args.table)
    replayed = 0
    for entry in entries:
        if entry.replayed:
            print(f"skipped {entry.path.name}: already replayed")
            continue
        body = store.as_ndjson(entry, store.read(entry.path))
        accepted = rejected = chunks = 0
        lines = body.splitlines(keepends=True)
        chunk: list[bytes] = []
        size = 0
        for line in lines + [None]:
            if line is not None and line.strip():
                chunk.append(line)
                size += len(line)
            if chunk and (line is None or size >= REPLAY_CHUNK_BYTES):
                try:
                    # a key per file and chunk: a replay cut short and run again is not ingested twice
                    reply = post_ndjson(server.http_url, entry.table, b"".join(chunk),
                                        idempotency_key=f"replay:{entry.table}/{entry.path.name}:{chunks}",
                                        retry=RetryPolicy(max_retries=REPLAY_RETRIES), timeout=120,
                                        token=os.environ.get(TOKEN_ENV) or None)
                except (OSError, IngestError) as exc:
                    print(f"ingest deadletter: replay of {entry.path.name} stopped: {exc}", file=sys.stderr)
                    return 1
                accepted += reply["accepted"]
                rejected += reply["rejected"]
                chunk, size = [], 0
                chunks += 1
        store.mark_replayed(entry, json.dumps({"accepted": accepted, "rejected": rejected, "time": time.time()}))
        replayed += 1
        print(f"replayed {entry.path.name}: {accepted} accepted, {rejected} rejected again")
    print(f"{replayed} file(s) replayed")
    return 0


def _purge(store: DeadLetterStore, args) -> int:
    entries: list[Entry] = [e for e in store.entries(args.table) if e.replayed or not args.replayed]
    if not entries:
        print("nothing to purge")
        return 0
    rows = sum(e.rows for e in entries)
    if not args.yes:
        if not sys.stdin.isatty():
            print("ingest deadletter: purge deletes data; confirm with --yes", file=sys.stderr)
            return 1
        answer = input(f"delete {len(entries)} file(s) holding {rows} event(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    try:
        lock = DataDirLock(args.data_dir).acquire("`ingest deadletter purge`")
    except DataDirInUse as exc:
        print(f"ingest: error: {exc} (a running server may still need these files; stop it first)", file=sys.stderr)
        return 2
    with lock:
        for entry in entries:
            store.remove(entry)
    print(f"deleted {len(entries)} file(s), {rows} event(s)")
    return 0
