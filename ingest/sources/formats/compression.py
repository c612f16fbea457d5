"""Content-Encoding: bodies inflated as they arrive, within a size limit."""
from __future__ import annotations

import zlib

GZIP_MAGIC = b"\x1f\x8b"
IDENTITY = ("identity", "")


class CorruptBody(ValueError):
    """The compressed body cannot be inflated; the message is for the client (400)."""


class UnsupportedEncoding(ValueError):
    """A Content-Encoding we do not inflate; the message is for the client (415)."""


class GzipBody:
    """Inflates a gzip body piece by piece. Members back to back (`cat a.gz
    b.gz`) are one body, as gzip -d reads them; bytes after the last member
    that are not another member are an error, not ignored."""

    def __init__(self):
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes, room: int) -> bytes:
        """The inflated bytes of `chunk`; OverflowError once they would exceed `room`."""
        pieces = []
        try:
            while chunk:
                if room <= 0:
                    raise OverflowError
                if self._inflate.eof:
                    if not GZIP_MAGIC.startswith(chunk[:2]):
                        raise zlib.error("trailing bytes after the gzip stream")
                    self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                piece = self._inflate.decompress(chunk, room)
                if self._inflate.unconsumed_tail:
                    raise OverflowError
                room -= len(piece)
                pieces.append(piece)
                chunk = self._inflate.unused_data
        except zlib.error as exc:
            raise CorruptBody(f"invalid gzip body: {exc}") from None
        return b"".join(pieces)

    def finish(self) -> None:
        if not self._inflate.eof:
            raise CorruptBody("invalid gzip body: truncated stream")


class DeflateBody:
    """Inflates a deflate body (the zlib format, RFC 9110's "deflate"; what
    the OpenTelemetry exporters send under compression=deflate) piece by piece."""

    def __init__(self):
        self._inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS)

    def feed(self, chunk: bytes, room: int) -> bytes:
        """The inflated bytes of `chunk`; OverflowError once they would exceed `room`."""
        try:
            if chunk and self._inflate.eof:
                raise zlib.error("trailing bytes after the deflate stream")
            if room <= 0 and chunk:
                raise OverflowError
            piece = self._inflate.decompress(chunk, room)
            if self._inflate.unconsumed_tail:
                raise OverflowError
            if self._inflate.unused_data:
                raise zlib.error("trailing bytes after the deflate stream")
        except zlib.error as exc:
            raise CorruptBody(f"invalid deflate body: {exc}") from None
        return piece

    def finish(self) -> None:
        if not self._inflate.eof:
            raise CorruptBody("invalid deflate body: truncated stream")


DECOMPRESSORS = {"gzip": GzipBody, "x-gzip": GzipBody, "deflate": DeflateBody}  # Content-Encoding -> its streaming decompressor


def decompressor(content_encoding: str | None) -> GzipBody | DeflateBody | None:
    """The decompressor for a Content-Encoding header; None for identity."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in IDENTITY:
        return None
    if encoding not in DECOMPRESSORS:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or identity")
    return DECOMPRESSORS[encoding]()
