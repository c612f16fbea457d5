"""Idempotency keys that outlive the log segments that recorded them.

A keyed request's record carries the KEYED flag; when its segment is
deleted (every record in it settled), the record's meta moves here first,
one JSON line each, so a retry after a restart still finds its reply.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the log's file layer; importing it here would import the log
    from ingest.durability.wal.files import Files

KEYS_FILE = "idempotency-keys.jsonl"


class KeysFile:
    def __init__(self, directory: Path, files: Files):
        self.path = directory / KEYS_FILE
        self._files = files

    def save(self, metas: list[bytes]) -> None:
        """Appends the metas of a segment's keyed records, durably, before the segment goes."""
        if metas:
            self._files.append_file(self.path, b"".join(meta + b"\n" for meta in metas))

    def saved(self) -> list[bytes]:
        """The file's entries (each the meta of a logged request)."""
        if not self.path.exists():
            return []
        return [line for line in self._files.read(self.path).split(b"\n") if line.strip()]

    def compact(self, keep: list[bytes]) -> None:
        """Rewrites the file with only `keep` (the ones still in their window)."""
        if self.path.exists():
            self._files.replace_file(self.path, [b"".join(meta + b"\n" for meta in keep)])
