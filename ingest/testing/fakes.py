"""In-process stand-ins for what the core talks to through its ports: a
clock that only moves when told, a sink that keeps batches in memory, and
a log that keeps records in memory. For unit tests of the batcher and the
pipeline; nothing here touches the network or real time."""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ingest.core.batch import BatchId, Ledger
from ingest.core.ports import LogUnavailable


class FakeTimer:
    def __init__(self, due: float, callback: Callable, args: tuple):
        self.due, self.callback, self.args = due, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """`call_later` like an event loop's; callbacks run only in `advance`, in due order."""

    def __init__(self):
        self.now = 0.0
        self._timers: list = []  # heap of (due, order, timer)
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable, *args) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        return timer

    @property
    def pending(self) -> list[FakeTimer]:
        return sorted((t for _, _, t in self._timers if not t.cancelled), key=lambda t: t.due)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            self.now = due
            if not timer.cancelled:
                timer.callback(*timer.args)
        self.now = target


class RowsRefused(ValueError):
    """The memory sink refuses rows its `refuse` predicate picks: a data error."""


class SinkDown(OSError):
    """The memory sink's environment fails: it can be retried."""


class MemorySink:
    """A Sink keeping each landed batch, in order, with its id."""

    name = "memory"

    def __init__(self, refuse: Callable[[dict], bool] | None = None):
        self.refuse = refuse  # rows for which this is true make a write fail as a data error
        self.down = False  # while true, every write fails on the environment
        self.batches: list[tuple[str, pa.RecordBatch, BatchId | None]] = []
        self.settled: list[tuple[str, BatchId]] = []
        self._names: dict[str, str] = {}

    def write(self, table: str, batch: pa.RecordBatch, batch_id: BatchId | None = None) -> bool:
        if self.down:
            raise SinkDown("the memory sink is down")
        if self.refuse is not None and any(self.refuse(row) for row in batch.to_pylist()):
            raise RowsRefused(f"{table}: a row is refused")
        if batch_id is not None and any(t == table and i == batch_id for t, _, i in self.batches):
            return False
        self.batches.append((table, batch, batch_id))
        return True

    def rows(self, table: str) -> list[dict]:
        return [row for t, batch, _ in self.batches if t == table for row in batch.to_pylist()]

    def mark_settled(self, table: str, batch_id: BatchId) -> None:
        self.settled.append((table, batch_id))

    def ledger(self, log: str = "") -> Ledger:
        return Ledger.from_ids([(t, i) for t, _, i in self.batches if i is not None]
                               + [(t, i.batch) for t, i in self.settled], log)

    def is_data_error(self, exc: BaseException) -> bool:
        return isinstance(exc, RowsRefused)

    def is_environment_error(self, exc: BaseException) -> bool:
        return isinstance(exc, SinkDown)

    def query(self, sql: str, running=None, max_bytes: int | None = None) -> pa.Table:
        raise NotImplementedError("the memory sink does not run SQL")

    def resolve_table(self, table: str) -> str:
        return self._names.setdefault(table.lower(), table)

    def close(self) -> None:
        pass


@dataclass
class LoggedRecord:
    lsn: int
    table: str
    lines: list[bytes] | None  # None for structured rows
    batch: pa.RecordBatch | None
    meta: bytes
    keyed: bool = False


@dataclass
class MemoryLog:
    """A Log keeping records in memory; `failing` makes every append raise LogUnavailable."""

    failing: bool = False
    records: list[LoggedRecord] = field(default_factory=list)
    settled: dict = field(default_factory=dict)  # table -> lsn
    next_lsn: int = 1

    @property
    def unavailable(self) -> bool:
        return self.failing

    def _add(self, table: str, lines, batch, meta: bytes, keyed: bool) -> int:
        if self.failing:
            raise LogUnavailable("the memory log is failing")
        lsn = self.next_lsn
        self.next_lsn += 1
        self.records.append(LoggedRecord(lsn, table, lines, batch, bytes(meta), keyed))
        return lsn

    def append(self, table: str, spans: np.ndarray | memoryview, data, meta: bytes = b"", keyed: bool = False) -> int:
        data = bytes(data)
        lines = [data[int(spans[i]):int(spans[i + 1])] for i in range(0, len(spans), 2)]
        return self._add(table, lines, None, meta, keyed)

    def append_batch(self, table: str, batch: pa.RecordBatch, meta: bytes = b"", keyed: bool = False) -> int:
        return self._add(table, None, batch, meta, keyed)

    def synced(self, lsn: int):
        return None

    def when_synced(self, lsn: int, callback) -> bool:
        return False  # durable as soon as it is appended

    def settle(self, table: str, lsn: int) -> None:
        self.settled[table] = max(self.settled.get(table, 0), lsn)
