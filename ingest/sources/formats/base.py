"""What a body decoder returns, and the refusals it raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from ingest.hotpath.protocols import BatchBuffer


class InvalidBody(ValueError):
    """The body cannot be read in its format; the message is for the client (400)."""


class UnsupportedContentType(ValueError):
    """No decoder is registered for the body's Content-Type; the message is for the client (415)."""


@dataclass
class Decoded:
    """A body turned into events for one table: framed JSON lines today;
    formats that arrive columnar (OTLP, Arrow IPC) fill `batch` instead."""

    lines: BatchBuffer | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line index, reason) of lines that are not events
    batch: pa.RecordBatch | None = None

    @property
    def received(self) -> int:
        if self.batch is not None:
            return self.batch.num_rows
        return self.lines.events if self.lines is not None else 0

    @property
    def accepted(self) -> int:
        return self.received - len(self.errors)

    @property
    def rejected(self) -> list[int]:
        return [index for index, _ in self.errors]


Decoder = Callable[[bytes], Decoded]  # a whole (decompressed) body -> its events
