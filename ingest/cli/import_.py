"""`ingest import PATH... --table T`: a backfill of files (NDJSON or JSON
arrays, plain, gzip or zstd; Parquet; directories, globs, `-` for stdin)
into a data directory's sink with no server running on it (standalone),
or through a running server (`--target URL`). Progress on stderr, a
summary on stdout; killed, it resumes where it stopped when run again."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from ingest.cli.sink_options import add_sink_arguments, first_line, sink_settings
from ingest.protocol import table_name_problem
from ingest.server.state import running_server

TARGET_BATCH_BYTES = 8 << 20  # a request through a server: well under its --max-body-bytes


def add_parser(subparsers) -> None:
    text = "import files of events into a table: a backfill that shows its progress and resumes after a crash"
    parser = subparsers.add_parser(
        "import", help=text, description=text + ". Standalone (the default) it writes into --data-dir's sink itself, "
        "which no server may be running on; with --target it sends the files to a running server. Each batch's "
        "place in its file lands in the same commit as its rows, so running the same command again after a kill "
        "goes on where the import stopped and lands every event once.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="NDJSON or JSON-array files (plain, .gz or .zst), Parquet files, directories, globs "
                             "(quote them; ** is recursive), or - for stdin")
    parser.add_argument("--table", required=True, help="the table the events land in")
    add_sink_arguments(parser)
    parser.add_argument("--target", metavar="URL", help="send to the server at URL instead of writing --data-dir "
                                                        "(e.g. http://127.0.0.1:7080)")
    parser.add_argument("--token", default=os.environ.get("INGEST_TOKEN"),
                        help="--target: the Bearer token to send (default: $INGEST_TOKEN)")
    parser.add_argument("--concurrency", type=int, default=4, help="--target: requests in flight (default: 4)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="--target: where the import's checkpoint is kept (default: "
                             "$XDG_STATE_HOME/ingest/imports); standalone it is DIR/imports")
    parser.add_argument("--restart", action="store_true",
                        help="import every file again from its start, as a new import (rows an earlier run landed "
                             "stay; delete them first if they are to be replaced)")
    parser.add_argument("--max-errors", type=int, default=None, metavar="N",
                        help="stop once more than N lines have been rejected (default: go on; every rejected line "
                             "is in the dead-letter store with its file and line)")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="progress on stderr: a bar, JSON lines for machines, or nothing (default: bar)")
    parser.add_argument("--progress-interval", type=float, default=1.0, metavar="SECONDS",
                        help="--progress json: seconds between lines (default: 1; 0: a line per batch)")
    parser.add_argument("--batch-bytes", type=int, default=None,
                        help="bytes of JSON per batch (default: the server's --batch-bytes standalone, "
                             f"{TARGET_BATCH_BYTES >> 20} MiB per request with --target)")
    parser.add_argument("--batch-events", type=int, default=None,
                        help="standalone: events per batch at most (default: the server's --batch-events); "
                             "through a server a request is --batch-bytes of NDJSON")


def fail(message: str, status: int = 2) -> int:
    print(f"ingest import: {message}", file=sys.stderr)
    return status


def run(args) -> int:
    from ingest.backfill.inputs import InputError, expand, open_stdin
    from ingest.backfill.job import ImportRefused, open_job

    problem = table_name_problem(args.table)
    if problem:
        return fail(problem)
    if args.target and (args.data_dir or args.sink or args.delta_uri):
        return fail("--target sends to a server, which has its own sink: leave out --data-dir and the sink flags")
    stdin_stream = None
    try:
        paths = expand(args.paths)
        stdin = None
        if paths == ["-"]:
            stdin, stdin_stream = open_stdin()
        if args.target:
            settings = None
            problem = _unreachable(args.target)
            if problem:
                return fail(problem)
            directory = args.state_dir or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") \
                / "ingest" / "imports"
            destination = args.target.rstrip("/")
        else:
            settings = sink_settings(args)
            server = running_server(settings.data_dir)
            if server is not None:
                return fail(f"a server (pid {server.pid}) is running on {settings.data_dir}: import through it with "
                            f"--target {'https' if server.tls else 'http'}://{server.host}:{server.http_port}, "
                            "or stop it first")
            directory = settings.data_dir / "imports"
            destination = ""
        job, resumed = open_job(directory, args.table, args.paths, paths, destination, args.restart, stdin)
    except (InputError, ImportRefused) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot keep the import's checkpoint: {exc}")
    from ingest.backfill.progress import Progress
    from ingest.backfill.readers import ReadOptions

    sizes = [f.size for f in job.files]
    progress = Progress(args.progress, None if min(sizes) < 0 else sum(sizes), len(job.files), args.progress_interval,
                        "acknowledged" if args.target else "landed")
    if args.target:
        options = ReadOptions(args.batch_bytes or TARGET_BATCH_BYTES, args.batch_events or 250_000, frame=False)
        status, summary = _through_server(args, job, options, progress, stdin_stream)
        where = ""
    else:
        options = ReadOptions(args.batch_bytes or settings.batch_bytes, args.batch_events or settings.batch_events,
                              frame=True)
        status, summary = _standalone(settings, job, options, progress, args.max_errors, stdin_stream)
        where = f"--data-dir {settings.data_dir} "
    if summary is None:  # it could not go on: the error line is out
        return status
    progress.close(summary)
    if args.progress == "json":
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.text(where, through_server=bool(args.target)))
    if summary.stopped:
        return 1
    return status


def _standalone(settings, job, options, progress, max_errors, stdin_stream):
    import asyncio

    from ingest.backfill.inputs import InputError
    from ingest.backfill.local import Standalone
    from ingest.server.app import EVENT_LOOP, IngestServer, StartupError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)

    async def main():
        server = IngestServer(settings)
        await server.start(replay_only=True)
        try:
            return await Standalone(server, job, options, progress, max_errors, stdin_stream).run()
        finally:
            await server.stop()

    try:
        import uvloop
    except ImportError:
        uvloop = None
    loop_factory = None if uvloop is None or EVENT_LOOP == "asyncio" else uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return 0, runner.run(main())
    except StartupError as exc:
        progress.abandon()
        return fail(str(exc)), None
    except InputError as exc:
        progress.abandon()
        return fail(f"{exc}; what was read before it has landed (run again once it is fixed to resume)", 1), None


def _unreachable(url: str) -> str | None:
    """Why the server at `url` cannot be reached (GET /health), or None: any answer will do."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10).close()
    except urllib.error.HTTPError:
        return None  # it answers, if only to refuse this
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"cannot reach the server at {url} ({reason}): is it running, and is --target its HTTP address?"
    return None


def _through_server(args, job, options, progress, stdin_stream):
    from ingest.backfill.inputs import InputError
    from ingest.backfill.remote import ImportFailed, ThroughServer

    try:
        runner = ThroughServer(args.target, args.token, job, options, progress, args.max_errors, args.concurrency,
                               stdin_stream)
        return 0, runner.run()
    except (InputError, ImportFailed) as exc:
        progress.abandon()
        return fail(f"{first_line(exc)}; what was acknowledged before it is checkpointed (run again to resume)", 1), \
            None
