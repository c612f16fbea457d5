"""Fault injection for tests and benchmarks."""
from __future__ import annotations

import time

import pyarrow as pa

from ingest.core.batch import BatchId


class SlowSink:
    """Fault injection (`--sink-delay-ms`): every write takes longer, so
    backpressure can be tested against a real sink that cannot keep up."""

    def __init__(self, sink, delay: float):
        self._sink = sink
        self._delay = delay
        self.name = sink.name

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        time.sleep(self._delay)
        return self._sink.write(table, batch, batch_id)

    def __getattr__(self, name):
        return getattr(self._sink, name)
