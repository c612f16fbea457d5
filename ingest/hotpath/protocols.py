"""The interfaces that the compiled hot path (ext/) and the pure-Python
reference (ingest/hotpath/reference/) both implement.

The server only ever talks to these names; `ingest.hotpath.buffer` and
`ingest.hotpath.encoder` pick the implementation (INGEST_PURE_PYTHON=1 forces the
reference one).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import pyarrow as pa


class BatchBuffer(Protocol):
    """Raw NDJSON lines of one table, accumulated until the batch is sealed.

    Lines are stored back to back without their newline; ``spans`` holds
    ``[start0, end0, start1, end1, ...]`` offsets into ``data``.
    """

    event_limit: int  # seal when this many events are buffered (0 = no limit)
    byte_limit: int  # seal when this many payload bytes are buffered (0 = no limit)

    @property
    def events(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def is_full(self) -> bool: ...
    def append_line(self, line: bytes) -> None: ...
    def extend(self, src: "BatchBuffer | SealedBatch", start: int, rejected) -> int:
        """Appends src's lines from `start`, skipping the sorted indices in
        `rejected`, until full; returns the next index not consumed."""
    def data(self) -> memoryview: ...
    def spans(self) -> memoryview: ...
    def line(self, index: int) -> bytes: ...
    def clear(self) -> None: ...
    def seal(self) -> "SealedBatch":
        """Hands the buffered lines over (no copy) and starts empty again."""


class SealedBatch(Protocol):
    """An immutable batch of lines, safe to read from a worker thread."""

    @property
    def events(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def data(self) -> memoryview: ...
    def spans(self) -> memoryview: ...
    def line(self, index: int) -> bytes: ...


class LineFramer(Protocol):
    """Splits one connection's byte stream into NDJSON lines.

    Reassembles lines split across reads, accepts CRLF, skips empty lines and
    drops (and counts) lines longer than ``max_line_bytes``.
    """

    max_line_bytes: int

    @property
    def too_long(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    def feed(self, chunk: bytes, start: int, out: BatchBuffer) -> int: ...
    def finish(self, out: BatchBuffer) -> int: ...


class EncodeResult(NamedTuple):
    batch: pa.RecordBatch | None  # None when no line of the input was accepted
    errors: list[tuple[int, str]]  # (line index within the input, reason)


class Encoder(Protocol):
    """Turns one table's NDJSON lines into Arrow record batches, keeping the
    table's column types stable across batches."""

    @property
    def schema(self) -> pa.Schema: ...
    def encode(self, data: bytes, spans: memoryview) -> EncodeResult: ...
