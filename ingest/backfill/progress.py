"""What an import reports while it runs, on stderr: a tqdm bar (bytes of
the input read, events read and landed, rate, ETA, the file being read),
JSON lines for machines (`--progress json`), or nothing; and the summary
at the end, on stdout."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

JSON_INTERVAL = 1.0  # seconds between JSON progress lines, unless --progress-interval says otherwise


@dataclass
class Summary:
    table: str
    files: int = 0  # files read in this run (whole or from where an earlier run stopped)
    files_resumed: int = 0  # of those, files an earlier run had begun
    files_skipped: int = 0  # files an earlier run had imported whole
    events_read: int = 0
    events_landed: int = 0
    events_rejected: int = 0  # lines that are not JSON objects (or do not fit a declared column): dead-lettered
    events_dead_lettered: int = 0  # rows the sink refused or that did not land in time: dead-lettered
    bytes_read: int = 0  # of the files on disk
    seconds: float = 0.0
    stopped: str | None = None  # why the import stopped before the end, if it did
    resumable: bool = True

    def over_max_errors(self, max_errors: int | None) -> bool:
        """More lines rejected than --max-errors allows: the import stops, saying why."""
        if max_errors is None or self.events_rejected <= max_errors:
            return False
        self.stopped = self.stopped or f"more than {max_errors} lines were rejected (--max-errors)"
        return True

    @property
    def events_per_second(self) -> float:
        return self.events_read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3), "events_per_second": round(self.events_per_second)}

    def text(self, where: str, through_server: bool = False) -> str:
        resumed = f" ({self.files_resumed} resumed, {self.files_skipped} already imported)" \
            if self.files_resumed or self.files_skipped else ""
        landed = "acknowledged by the server" if through_server else "landed"
        lines = [f"imported {self.files} file(s){resumed} into {self.table}: {self.events_landed:,} events {landed}, "
                 f"{self.events_rejected:,} rejected, {self.events_dead_lettered:,} dead-lettered "
                 f"in {self.seconds:.1f}s ({self.events_per_second:,.0f} events/s)"]
        if self.events_rejected or self.events_dead_lettered:
            lines.append(f"what did not land is in the dead-letter store: ingest deadletter list {where}--table {self.table}")
        if self.stopped:
            lines.append(f"stopped: {self.stopped}" + ("; run the same command again to resume" if self.resumable else ""))
        return "\n".join(lines)


@dataclass
class Progress:
    mode: str  # "bar", "json" or "none"
    total_bytes: int | None  # of every file to read (None: unknown, as for stdin)
    files: int
    interval: float = JSON_INTERVAL  # seconds between JSON lines (0: one per batch)
    landed_word: str = "landed"  # through a server: "acknowledged" (in its log; landed at its next flush)
    stream: object = field(default=sys.stderr)

    def __post_init__(self):
        self.started = time.monotonic()
        self.bytes_read = 0  # in files before the current one, plus the current one's
        self._file_base = 0
        self.events_read = 0
        self.events_landed = 0
        self.rejected = 0
        self.file_name = ""
        self.file_index = 0
        self._last_json = 0.0
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=self.stream,
                             dynamic_ncols=True, mininterval=0.5, smoothing=0.1, desc="import")

    def file_started(self, index: int, name: str, size: int, resumed_at: int) -> None:
        self.file_index, self.file_name = index, name
        self._file_base = self.bytes_read
        if self._bar is not None:
            short = name if len(name) <= 40 else "..." + name[-37:]
            self._bar.set_description(f"[{index + 1}/{self.files}] {short}", refresh=False)
            if resumed_at:
                self._bar.write(f"{name}: resuming at {resumed_at:,} (what came before had landed)", file=self.stream)
        self._emit("file", force=True, resumed_at=resumed_at)

    def advance(self, read_bytes: int, events: int, landed: int, rejected: int) -> None:
        """`read_bytes`: of the current file so far; `events`: read since the last call; `landed`, `rejected`: totals."""
        position = self._file_base + read_bytes
        step, self.bytes_read = position - self.bytes_read, position
        self.events_read += events
        self.events_landed, self.rejected = landed, rejected
        if self._bar is not None:
            self._postfix()
            self._bar.update(max(step, 0))
        self._emit("progress")

    @property
    def tick_seconds(self) -> float:
        """How often the importer reports what has landed meanwhile."""
        return min(0.5, self.interval) or 0.05

    def landed(self, landed: int, rejected: int) -> None:
        """What has landed so far, between batches read (a line when it changed)."""
        if (landed, rejected) == (self.events_landed, self.rejected):
            return
        self.events_landed, self.rejected = landed, rejected
        if self._bar is not None:
            self._postfix()
            self._bar.refresh()
        self._emit("progress")

    def _postfix(self) -> None:
        self._bar.set_postfix_str(f"{self.events_read:,} events read, {self.events_landed:,} {self.landed_word}, "
                                  f"{self._rate():,.0f} events/s"
                                  + (f", {self.rejected:,} rejected" if self.rejected else ""), refresh=False)

    def skip(self, size: int) -> None:
        """A file an earlier run imported whole."""
        self.bytes_read += size
        if self._bar is not None:
            self._bar.update(size)

    def file_done(self, size: int) -> None:
        if size >= 0:
            self.advance(size, 0, self.events_landed, self.rejected)
        self._emit("file_done", force=True)

    def close(self, summary: Summary) -> None:
        self.events_landed, self.rejected = summary.events_landed, summary.events_rejected
        if self._bar is not None:
            self._postfix()
            self._bar.close()
        self._emit("done", force=True, summary=summary.as_dict())

    def abandon(self) -> None:
        """The import could not go on: the bar ends where it was, before the error line."""
        if self._bar is not None:
            self._bar.close()

    def _rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.events_read / elapsed if elapsed > 0 else 0.0

    def _emit(self, kind: str, force: bool = False, **extra) -> None:
        if self.mode != "json":
            return
        now = time.monotonic()
        if not force and now - self._last_json < self.interval:
            return
        self._last_json = now
        elapsed = now - self.started
        eta = None
        if self.total_bytes and self.bytes_read:
            eta = round(elapsed * (self.total_bytes - self.bytes_read) / self.bytes_read, 1)
        line = {"event": kind, "file": self.file_name, "file_index": self.file_index, "files": self.files,
                "bytes_read": self.bytes_read, "bytes_total": self.total_bytes, "events_read": self.events_read,
                "events_landed": self.events_landed, "events_rejected": self.rejected,
                "events_per_second": round(self._rate()), "elapsed_seconds": round(elapsed, 3), "eta_seconds": eta,
                **extra}
        print(json.dumps(line), file=self.stream, flush=True)
