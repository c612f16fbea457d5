"""The client's queue: each table's open batch, sealed by events, bytes or
age, then shipped in the order sealed. No locks, no clock of its own: the
clients hold their lock and pass `now`."""
from __future__ import annotations

from collections import deque


class Batch:
    __slots__ = ("table", "lines", "size", "opened", "settled")

    def __init__(self, table: str, opened: float):
        self.table = table
        self.lines: list[bytes] = []
        self.size = 0  # NDJSON bytes, newlines included
        self.opened = opened  # time.monotonic() of its first event
        self.settled = False  # acknowledged or failed


class Batcher:
    """Each table's open batch, sealed at `max_events` events, `max_bytes`
    bytes or `max_age` seconds after its first event; then the sealed batches
    in the order they were sealed. Not thread-safe: the clients hold their lock."""

    def __init__(self, max_events: int, max_bytes: int, max_age: float, capacity: int):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.capacity = capacity
        self.added = 0  # events ever added
        self.pending = 0  # events added and not settled: what `capacity` bounds
        self._open: dict[str, Batch] = {}
        self._sealed: deque[Batch] = deque()
        self._unsettled: dict[Batch, None] = {}  # sealed, shipping or waiting to (a dict keeps their order)

    def has_room(self) -> bool:
        return self.pending < self.capacity

    def add(self, table: str, line: bytes, now: float) -> bool:
        """Adds a line; True when the shipper should look again (a batch was
        sealed, or one was opened and its clock started)."""
        size = len(line) + 1
        batch = self._open.get(table)
        if batch is not None and batch.size + size > self.max_bytes:
            self._seal(table)
            batch = None
        opened = batch is None
        if opened:
            batch = self._open[table] = Batch(table, now)
        batch.lines.append(line)
        batch.size += size
        self.added += 1
        self.pending += 1
        if len(batch.lines) >= self.max_events or batch.size >= self.max_bytes:
            self._seal(table)
            return True
        return opened

    def seal_due(self, now: float) -> float | None:
        """Seals the batches `max_age` old; seconds until the next is due (None: no batch is open)."""
        next_due = None
        for table, batch in list(self._open.items()):
            left = batch.opened + self.max_age - now
            if left <= 0:
                self._seal(table)
            elif next_due is None or left < next_due:
                next_due = left
        return next_due

    def seal_all(self) -> list[Batch]:
        """Seals every open batch; returns every batch not yet settled."""
        for table in list(self._open):
            self._seal(table)
        return list(self._unsettled)

    def take(self) -> Batch | None:
        return self._sealed.popleft() if self._sealed else None

    def settle(self, batch: Batch) -> None:
        batch.settled = True
        self._unsettled.pop(batch, None)
        self.pending -= len(batch.lines)

    def abandon(self) -> list[Batch]:
        """Settles and returns every batch left (the shipper has stopped)."""
        left = self.seal_all()
        self._sealed.clear()
        for batch in left:
            self.settle(batch)
        return left

    def _seal(self, table: str) -> None:
        batch = self._open.pop(table)
        self._sealed.append(batch)
        self._unsettled[batch] = None
