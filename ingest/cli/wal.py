"""`ingest wal check|repair|replay`: inspect, mend and replay the write-ahead log offline."""
from __future__ import annotations

import sys
from pathlib import Path

from ingest.cli.sink_options import add_sink_arguments, sink_settings
from ingest.server.config import Settings
from ingest.server.state import DataDirInUse, DataDirLock


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("wal", help="check or repair the write-ahead log",
                                   description="The write-ahead log is DIR/wal/segment-N.wal. The server mends it by "
                                               "itself on start; these tools do the same offline.")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (("check", "report each segment's records and any damage; exit 1 if damaged"),
                       ("repair", "truncate torn tails, move unreadable records to the dead-letter store")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--data-dir", type=Path, default=Path("data"), help="the server's data directory (default: data)")
    text = ("land what the log holds into the sink the directory was served with (DIR/sink.json), then exit: "
            "how another machine finishes the work of a node that died for good")
    replay = actions.add_parser("replay", help=text, description=text + ". Batches that had landed are recognised "
                                "by the sink's ledger (Delta: the node's app transactions) and skipped.")
    add_sink_arguments(replay)


def run(args) -> int:
    if args.action == "replay":
        return _replay(args)
    from ingest.core.deadletter import DeadLetterStore  # the log's modules load when the command runs
    from ingest.durability.recovery import WAL_DAMAGE_TABLE
    from ingest.durability.wal import repair, scan_segment, segment_paths, sequence_gaps

    settings = Settings(data_dir=args.data_dir)
    paths = segment_paths(settings.wal_dir) if settings.wal_dir.is_dir() else []
    if args.action == "check":
        damaged = 0
        scans = [scan_segment(path) for path in paths]
        for path, scan in zip(paths, scans):
            tables = sorted({r.table for r in scan.records if r.table})
            lsns = f"lsn {scan.records[0].lsn}..{scan.records[-1].lsn}" if scan.records else "no records"
            lines = sum(r.events for r in scan.records)
            print(f"{path.name}: {len(scan.records)} records, {lines} events, {lsns}, tables {', '.join(tables) or '-'}")
            for damage in scan.damage:
                damaged += 1
                print(f"  damage at byte {damage.offset}: {damage.reason}"
                      + (" (torn tail: truncated on repair)" if damage.torn_tail else " (moved to the dead-letter store on repair)"))
        for gap in sequence_gaps(scans):
            damaged += 1
            print(f"  gap: {gap.reason}")
        print(f"{len(paths)} segment(s), {damaged} damaged place(s)")
        return 1 if damaged else 0
    try:
        lock = DataDirLock(settings.data_dir).acquire("`ingest wal repair`")
    except DataDirInUse as exc:
        print(f"ingest: error: {exc} (a running server mends the log itself on start)", file=sys.stderr)
        return 2
    store = DeadLetterStore(settings.deadletter_dir)
    with lock:
        found = repair(settings.wal_dir, lambda d: store.put_rejected(
            WAL_DAMAGE_TABLE, [d.raw], [d.reason], f"wal {d.segment.name} byte {d.offset}", "write-ahead log damage"))
    for damage in found:
        print(f"{damage.segment.name} byte {damage.offset}: {damage.reason}: "
              + ("truncated" if damage.torn_tail else f"moved to {store.directory / WAL_DAMAGE_TABLE}"))
    print(f"repaired {len(found)} damaged place(s)")
    return 0


def _replay(args) -> int:
    settings = sink_settings(args)
    if not settings.wal_dir.is_dir():
        print(f"ingest wal replay: {settings.data_dir} has no write-ahead log ({settings.wal_dir})", file=sys.stderr)
        return 2
    settings.wal = "on"
    from ingest.server.app import StartupError, run as run_server

    try:
        replayed = run_server(settings, replay_only=True)
    except StartupError as exc:
        print(f"ingest wal replay: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {replayed} events from {settings.wal_dir} into the {settings.sink} sink")
    return 0
