"""One process at a time on a data directory.

The server holds an exclusive lock on DIR/ingest.lock for its whole life, and
so do the offline tools that change DIR (`ingest wal repair`, `ingest
deadletter purge`): a second one exits with one line naming the pid that
holds it, instead of replaying, deleting or overwriting what the first one
is writing. The lock is the kernel's (flock): it goes with the process, so a
kill -9 never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "ingest.lock"


class DataDirInUse(Exception):
    """Another process holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, purpose: str = "a server") -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(f"data directory {self.path.parent} is in use by pid {holder} (it holds "
                               f"{self.path}); stop it, or give {purpose} another --data-dir") from None
        try:  # who holds it, for the next one's message; a full disk only loses the pid
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
