"""The file operations the write-ahead log makes, in one small layer.

The writer, the segment code and the keys file go through a `Files`; the
default is the real OS. Tests pass a subclass that fails where a disk can
(a full disk, a failed fsync, a power cut mid-write) over real files.
"""
from __future__ import annotations

import os
from pathlib import Path

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024  # pieces one writev takes


class Files:
    """The real OS: every method is the os call of the same name."""

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data) -> int:
        return os.write(fd, data)

    def writev(self, fd: int, parts: list) -> int:
        return os.writev(fd, parts)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    # built from the calls above, so a test's faults reach them too

    def write_all(self, fd: int, parts: list, size: int | None = None) -> None:
        """writev until every byte is written, at most IOV_MAX pieces a call."""
        if size is None:
            size = sum(len(part) for part in parts)
        if len(parts) > IOV_MAX:
            for start in range(0, len(parts), IOV_MAX):
                chunk = parts[start:start + IOV_MAX]
                self.write_all(fd, chunk, sum(len(part) for part in chunk))
            return
        written = self.writev(fd, parts)
        while written < size:  # a short write: finish the rest piece by piece
            size -= written
            remaining, skip = [], written
            for part in parts:
                if skip >= len(part):
                    skip -= len(part)
                    continue
                remaining.append(memoryview(part)[skip:])
                skip = 0
            parts = remaining
            written = self.writev(fd, parts)

    def fsync_directory(self, directory: Path) -> None:
        fd = self.open(directory, os.O_RDONLY)
        try:
            self.fsync(fd)
        finally:
            self.close(fd)

    def truncate_file(self, path: Path, length: int) -> None:
        """Cuts a file to `length` bytes, durably."""
        fd = self.open(path, os.O_WRONLY)
        try:
            self.truncate(fd, length)
            self.fsync(fd)
        finally:
            self.close(fd)

    def append_file(self, path: Path, data: bytes) -> None:
        """Appends to a file (created if need be), durably."""
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.write_all(fd, [data])
            self.fsync(fd)
        finally:
            self.close(fd)

    def replace_file(self, path: Path, parts: list) -> None:
        """Replaces a file's content atomically: a fsynced temporary file
        renamed over it, then the directory fsynced."""
        temporary = path.with_name("." + path.name + ".tmp")
        fd = self.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            self.write_all(fd, parts)
            self.fsync(fd)
        finally:
            self.close(fd)
        self.replace(temporary, path)
        self.fsync_directory(path.parent)


OS = Files()
