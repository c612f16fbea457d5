"""Keeps what could not land, with its reason, so nothing a client sent
disappears:

- lines the server refused: DIR/deadletter/{table}.rejected.ndjson, one JSON
  record a line;
- encoded batches the sink refused: DIR/deadletter/{table}-{time}-{n}.arrow,
  Arrow IPC files whose schema metadata holds the table and the error.

(The full dead-letter store, with retries and replay, builds on this.)"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path

import pyarrow as pa

log = logging.getLogger("ingest.rejections")
MAX_LOGGED_PER_TABLE = 20  # warnings in the server log; every rejection is still kept on disk


class RejectionLog:
    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict = {}
        self._logged: dict[str, int] = {}
        self._batch_numbers = itertools.count()

    def __call__(self, table: str, line: bytes, reason: str, source: str = "") -> None:
        f = self._files.get(table)
        if f is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            f = self._files[table] = open(self.directory / f"{table}.rejected.ndjson", "a", encoding="utf-8")
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "table": table,
            "source": source,
            "reason": reason,
            "line": line.decode("utf-8", "backslashreplace"),
        }
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        count = self._logged.get(table, 0)
        if count < MAX_LOGGED_PER_TABLE:
            self._logged[table] = count + 1
            log.warning("table %s: rejected a line (%s)%s", table, reason,
                        "; further rejections are only kept on disk" if count + 1 == MAX_LOGGED_PER_TABLE else "")

    def failed_batch(self, table: str, batch: pa.RecordBatch, reason: str) -> Path:
        """Keeps a batch the sink refused; safe to call from a worker thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.directory / f"{table}-{stamp}-{next(self._batch_numbers):06d}.arrow"
        metadata = {b"ingest.table": table.encode(), b"ingest.reason": reason.encode(),
                    b"ingest.time": stamp.encode()}
        schema = batch.schema.with_metadata({**(batch.schema.metadata or {}), **metadata})
        temporary = path.with_name("." + path.name + ".tmp")
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_batch(batch.replace_schema_metadata(schema.metadata))
        os.replace(temporary, path)
        return path

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
