"""What an import reads: its PATH arguments made into a list of input files
(directories, globs, `-` for stdin), each file's identity (size, mtime, a
hash of its head: how a changed file is recognised) and its format, found
from its first bytes: gzip or zstd around NDJSON or a JSON array, or
Parquet. Decompression is pyarrow's (its gzip and zstd codecs)."""
from __future__ import annotations

import glob
import hashlib
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

STDIN = "-"
HEAD_BYTES = 64 << 10  # the stretch of a file whose hash is part of its identity
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"
NDJSON, JSON_ARRAY, PARQUET = "ndjson", "json-array", "parquet"


class InputError(Exception):
    """An input cannot be imported as given (missing, unreadable, of no known format); one line."""


@dataclass
class InputFile:
    path: str  # absolute; "-" for stdin
    size: int  # bytes on disk (-1: stdin)
    mtime_ns: int
    head_sha256: str  # of its first HEAD_BYTES bytes, as stored (compressed or not)
    compression: str | None  # "gzip", "zstd" or None
    format: str  # NDJSON, JSON_ARRAY or PARQUET

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN

    @property
    def name(self) -> str:
        """How progress lines and the dead-letter store name it."""
        return "stdin" if self.is_stdin else self.path

    def as_dict(self) -> dict:
        return asdict(self)

    def changed(self, now: "InputFile") -> str | None:
        """How the file on disk (`now`) differs from what was recorded, or None."""
        if now.size != self.size:
            return f"its size went from {self.size} to {now.size} bytes"
        if now.mtime_ns != self.mtime_ns:
            return "its modification time changed"
        if now.head_sha256 != self.head_sha256:
            return f"its first {HEAD_BYTES // 1024} KiB differ"
        return None


def expand(arguments: list[str]) -> list[str]:
    """The files the PATH arguments name, in order: a directory stands for
    the files under it (sorted, hidden ones skipped), a glob for its
    matches (sorted, `**` recursive), `-` for stdin. Each file once."""
    found: list[str] = []
    for argument in arguments:
        if argument == STDIN:
            matches = [STDIN]
        elif os.path.isdir(argument):
            matches = sorted(str(p) for p in Path(argument).rglob("*")
                             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(argument).parts))
            if not matches:
                raise InputError(f"directory {argument} holds no files")
        elif glob.has_magic(argument):
            matches = sorted(p for p in glob.glob(argument, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputError(f"{argument!r} matches no files")
        elif os.path.isfile(argument):
            matches = [argument]
        elif os.path.exists(argument):
            raise InputError(f"{argument} is not a regular file or a directory")
        else:
            raise InputError(f"no such file or directory: {argument}")
        for match in matches:
            path = match if match == STDIN else os.path.abspath(match)
            if path not in found:
                found.append(path)
    if found.count(STDIN) and len(found) > 1:
        raise InputError("`-` (stdin) cannot be mixed with files: import it on its own")
    return found


def identify(path: str) -> InputFile:
    """The file's identity and format as it is now."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEAD_BYTES)
            stat = os.fstat(file.fileno())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    compression, format_ = sniff(head, path)
    return InputFile(path, stat.st_size, stat.st_mtime_ns, hashlib.sha256(head).hexdigest(), compression, format_)


def sniff(head: bytes, name: str) -> tuple[str | None, str]:
    """(compression, format) from a file's first bytes."""
    if head.startswith(PARQUET_MAGIC):
        return None, PARQUET
    compression = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head.startswith(ZSTD_MAGIC) else None
    if compression is not None:
        try:
            with pa.CompressedInputStream(pa.BufferReader(head), compression) as stream:
                head = stream.read(4096)
        except (OSError, pa.ArrowException):  # the head alone may end mid-frame: read what came out
            head = _partial_inflate(head, compression)
    text = head.removeprefix(UTF8_BOM).lstrip(b" \t\r\n")
    if text[:1] == b"[":
        return compression, JSON_ARRAY
    if text[:1] in (b"{", b"") or any(line.lstrip().startswith(b"{") for line in text.split(b"\n")[1:]):
        return compression, NDJSON  # a bad first line is the reader's to reject, with the rest
    raise InputError(f"{name}: not NDJSON, a JSON array or Parquet (it begins with {head[:16]!r})")


def _partial_inflate(head: bytes, compression: str) -> bytes:
    if compression == "gzip":
        import zlib

        try:
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(head, 4096)
        except zlib.error:
            return b""
    return b"{"  # zstd: a frame cut short; take it as NDJSON and let the reader tell


class Peeked:
    """A stream whose first bytes were read to sniff it (stdin), read again from the start."""

    def __init__(self, head: bytes, rest):
        self._head, self._rest = head, rest
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            if len(data) < size:
                data += self._rest.read(size - len(data)) or b""
            return data
        return self._rest.read(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def open_stdin() -> tuple[InputFile, Peeked]:
    raw = sys.stdin.buffer
    head = raw.read(HEAD_BYTES)
    compression, format_ = sniff(head, "stdin")
    if format_ == PARQUET:
        raise InputError("Parquet cannot be read from stdin (it is read from its end); give the file's path")
    return InputFile(STDIN, -1, 0, hashlib.sha256(head).hexdigest(), compression, format_), Peeked(head, raw)
