"""The dead-letter store: everything that could not land, kept with why.

Each entry is one Arrow IPC file under DIR/deadletter/{table}/, whose schema
metadata holds the table, the kind, the reason, the error text, the attempts,
the source and the time:

- kind "rejected": input lines the server refused (bad JSON, a type
  conflict, an over-long line); columns `line` (the original bytes) and
  `error`, plus `source`.
- kind "failed": encoded rows the sink refused (poison rows isolated by
  bisection) or that did not land within the retry budget or the shutdown
  grace period; the columns are the table's own.

`{file}.replayed` beside a file marks it as replayed, so replay is
idempotent. Writing happens on worker threads; files appear atomically.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ingest.core.batch import BatchId
from ingest.schema import is_json_field

log = logging.getLogger("ingest.deadletter")

REJECTED = "rejected"
FAILED = "failed"
REPLAYED_SUFFIX = ".replayed"
QUARANTINE = "_quarantine"  # unreadable files, moved aside: two levels down, out of the entries' glob
REJECTED_SCHEMA = pa.schema([("line", pa.binary()), ("error", pa.string()), ("source", pa.string())])


@dataclass
class Entry:
    path: Path
    table: str
    kind: str
    reason: str
    error: str
    attempts: int
    source: str
    time: str
    rows: int
    replayed: bool

    def as_dict(self) -> dict:
        return {"file": str(self.path), "table": self.table, "kind": self.kind, "reason": self.reason,
                "error": self.error, "attempts": self.attempts, "source": self.source, "time": self.time,
                "rows": self.rows, "replayed": self.replayed}


def _read_metadata(path: Path) -> dict:
    """An entry file's schema metadata (what it holds, why, from where)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema.metadata or {}


class DeadLetterStore:
    def __init__(self, directory: Path):
        self.directory = directory
        self._sequence = itertools.count()
        self._lock = threading.Lock()

    def put_rejected(self, table: str, lines: list[bytes], errors: list[str], source: str, reason: str,
                     batch_id: BatchId | None = None, settles: bool = False, sources: list[str] | None = None) -> Path:
        """`sources`: where each line came from (an import's "file:line"); else `source` for every line."""
        batch = pa.record_batch(
            [pa.array(lines, pa.binary()), pa.array(errors, pa.string()),
             pa.array(sources if sources is not None else [source] * len(lines), pa.string())],
            schema=REJECTED_SCHEMA,
        )
        return self._write(table, REJECTED, batch, reason=reason, error=errors[0] if errors else "", attempts=0,
                           source=source, batch_id=batch_id or "", settles=int(settles))

    def put_failed(self, table: str, batch: pa.RecordBatch, reason: str, error: str, attempts: int,
                   batch_id: BatchId | None = None, settles: bool = False, source: str = "batch") -> Path:
        """`settles`: this entry finishes the batch `batch_id` (nothing of it
        is left to land), which recovery must know to not replay it."""
        return self._write(table, FAILED, batch, reason=reason, error=error, attempts=attempts, source=source,
                           batch_id=batch_id or "", settles=int(settles))

    def settled_ids(self) -> list[tuple[str, BatchId]]:
        """(table, batch id) of every entry that finished its batch."""
        return [(table, batch_id.batch) for _, table, batch_id, settles in self.batch_entries() if settles]

    def batch_entries(self) -> list[tuple[Path, str, BatchId, bool]]:
        """(file, table, batch id, whether it finished its batch) of every entry that names its batch."""
        found = []
        for path in self.directory.glob("*/*.arrow"):
            meta = self._metadata(path)
            if meta is None or not meta.get(b"ingest.batch_id"):
                continue
            batch_id = BatchId.parse(meta[b"ingest.batch_id"].decode())
            found.append((path, meta[b"ingest.table"].decode(), batch_id, meta.get(b"ingest.settles") == b"1"))
        return found

    def _write(self, table: str, kind: str, batch: pa.RecordBatch, **meta) -> Path:
        directory = self.directory / table
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        with self._lock:
            number = next(self._sequence)
        path = directory / f"{stamp}-{os.getpid()}-{number:06d}.{kind}.arrow"
        metadata = {
            **(batch.schema.metadata or {}),
            b"ingest.table": table.encode(),
            b"ingest.kind": kind.encode(),
            b"ingest.time": stamp.encode(),
            b"ingest.rows": str(batch.num_rows).encode(),
            **{f"ingest.{k}".encode(): str(v).encode() for k, v in meta.items()},
        }
        schema = batch.schema.with_metadata(metadata)
        temporary = path.with_name("." + path.name + ".tmp")
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_batch(batch.replace_schema_metadata(metadata))
        os.replace(temporary, path)
        return path

    # reading, for the `ingest deadletter` tools

    def entries(self, table: str | None = None) -> list[Entry]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"{table or '*'}/*.arrow")):
            meta = self._metadata(path)
            if meta is not None:
                found.append(self.entry(path, meta))
        return found

    def _metadata(self, path: Path) -> dict | None:
        """An entry's schema metadata; None when the file is not a readable
        Arrow file, which is then moved aside to DIR/deadletter/{QUARANTINE}/
        with a warning, so one damaged file never stops the server or the
        tools."""
        try:
            return _read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            target = self.directory / QUARANTINE / path.parent.name / path.name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                where = f"moved to {target}"
            except OSError as move_error:
                where = f"left in place ({move_error})"
            log.warning("dead-letter file %s is unreadable (%s); %s", path, exc, where)
            return None

    @staticmethod
    def entry(path: Path, meta: dict | None = None) -> Entry:
        if meta is None:
            meta = _read_metadata(path)
        text = {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"ingest.")}
        return Entry(
            path=path, table=text.get("ingest.table", path.parent.name), kind=text.get("ingest.kind", "?"),
            reason=text.get("ingest.reason", ""), error=text.get("ingest.error", ""),
            attempts=int(text.get("ingest.attempts", 0)), source=text.get("ingest.source", ""),
            time=text.get("ingest.time", ""), rows=int(text.get("ingest.rows", 0)),
            replayed=path.with_name(path.name + REPLAYED_SUFFIX).exists(),
        )

    @staticmethod
    def read(path: Path) -> pa.Table:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()

    @staticmethod
    def as_ndjson(entry: Entry, table: pa.Table) -> bytes:
        """The entry's events as NDJSON, to send back through the normal path."""
        if entry.kind == REJECTED:
            return b"".join(line + b"\n" for line in table.column("line").to_pylist())
        json_columns = {f.name for f in table.schema if is_json_field(f)}
        lines = []
        for row in table.to_pylist():
            event = {}
            for name, value in row.items():
                if value is None:
                    continue
                if name in json_columns:
                    value = json.loads(value)
                elif hasattr(value, "isoformat"):
                    value = value.isoformat()
                event[name] = value
            lines.append(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        return b"".join(lines)

    @staticmethod
    def mark_replayed(entry: Entry, receipt: str) -> None:
        entry.path.with_name(entry.path.name + REPLAYED_SUFFIX).write_text(receipt)

    @staticmethod
    def remove(entry: Entry) -> None:
        entry.path.with_name(entry.path.name + REPLAYED_SUFFIX).unlink(missing_ok=True)
        entry.path.unlink(missing_ok=True)
