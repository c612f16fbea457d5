"""Keeps every line the server refused, with its reason, so nothing a client
sent disappears: DIR/deadletter/{table}.rejected.ndjson, one JSON record a
line. (The full dead-letter store, with replay, builds on this.)"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("ingest.rejections")
MAX_LOGGED_PER_TABLE = 20  # warnings in the server log; every rejection is still kept on disk


class RejectionLog:
    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict = {}
        self._logged: dict[str, int] = {}

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

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
