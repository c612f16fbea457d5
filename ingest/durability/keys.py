"""Idempotency keys that outlive the log segments that recorded them.

A keyed request's record carries the KEYED flag; when its segment is
deleted (every record in it settled), the record's meta moves here first,
one JSON line each, so a retry after a restart still finds its reply.
The file holds at most 2 x MAX_KEYS entries: past that it is rewritten with
the newest MAX_KEYS (every SDK batch is keyed, so it would otherwise grow by
every one until a restart drops those out of their window).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ingest.core.receipts import MAX_KEYS

if TYPE_CHECKING:  # the log's file layer; importing it here would import the log
    from ingest.durability.wal.files import Files

KEYS_FILE = "idempotency-keys.jsonl"


class KeysFile:
    def __init__(self, directory: Path, files: Files):
        self.path = directory / KEYS_FILE
        self._files = files
        self._entries: int | None = None  # entries in the file, once counted

    def save(self, metas: list[bytes]) -> None:
        """Appends the metas of a segment's keyed records, durably, before the segment goes."""
        if not metas:
            return
        if self._entries is None:
            self._entries = len(self.saved())
        self._files.append_file(self.path, b"".join(meta + b"\n" for meta in metas))
        self._entries += len(metas)
        if self._entries > 2 * MAX_KEYS:
            self.compact(self.saved()[-MAX_KEYS:])

    def saved(self) -> list[bytes]:
        """The file's entries (each the meta of a logged request)."""
        if not self.path.exists():
            return []
        return [line for line in self._files.read(self.path).split(b"\n") if line.strip()]

    def compact(self, keep: list[bytes]) -> None:
        """Rewrites the file with only `keep` (the ones still in their window)."""
        if self.path.exists():
            self._files.replace_file(self.path, [b"".join(meta + b"\n" for meta in keep)])
            self._entries = len(keep)
