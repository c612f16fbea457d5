"""`ingest wal check|repair`: inspect and mend the write-ahead log offline."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ingest.config import Settings
from ingest.deadletter import DeadLetterStore
from ingest.wal import repair, scan_segment, segment_paths

DAMAGE_TABLE = "_wal"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("wal", help="check or repair the write-ahead log",
                                   description="The write-ahead log is DIR/wal/segment-N.wal. The server mends it by "
                                               "itself on start; these tools do the same offline.")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (("check", "report each segment's records and any damage; exit 1 if damaged"),
                       ("repair", "truncate torn tails, move unreadable records to the dead-letter store")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--data-dir", type=Path, default=Path("data"), help="the server's data directory (default: data)")


def _server_running(settings: Settings) -> int | None:
    if not settings.state_path.exists():
        return None
    pid = json.loads(settings.state_path.read_text()).get("pid")
    try:
        os.kill(pid, 0)
    except (OSError, TypeError):
        return None
    return pid


def run(args) -> int:
    settings = Settings(data_dir=args.data_dir)
    paths = segment_paths(settings.wal_dir) if settings.wal_dir.is_dir() else []
    if args.action == "check":
        damaged = 0
        for path in paths:
            scan = scan_segment(path)
            tables = sorted({r.table for r in scan.records})
            lsns = f"lsn {scan.records[0].lsn}..{scan.records[-1].lsn}" if scan.records else "no records"
            lines = sum(r.lines for r in scan.records)
            print(f"{path.name}: {len(scan.records)} records, {lines} events, {lsns}, tables {', '.join(tables) or '-'}")
            for damage in scan.damage:
                damaged += 1
                print(f"  damage at byte {damage.offset}: {damage.reason}"
                      + (" (torn tail: truncated on repair)" if damage.torn_tail else " (moved to the dead-letter store on repair)"))
        print(f"{len(paths)} segment(s), {damaged} damaged place(s)")
        return 1 if damaged else 0
    pid = _server_running(settings)
    if pid is not None:
        print(f"ingest wal: a server (pid {pid}) is running on {args.data_dir}; it mends the log itself on start. "
              "Stop it before repairing.", file=sys.stderr)
        return 1
    store = DeadLetterStore(settings.data_dir / "deadletter")
    found = repair(settings.wal_dir, lambda d: store.put_rejected(
        DAMAGE_TABLE, [d.raw], [d.reason], f"wal {d.segment.name} byte {d.offset}", "write-ahead log damage"))
    for damage in found:
        print(f"{damage.segment.name} byte {damage.offset}: {damage.reason}: "
              + ("truncated" if damage.torn_tail else f"moved to {store.directory / DAMAGE_TABLE}"))
    print(f"repaired {len(found)} damaged place(s)")
    return 0
