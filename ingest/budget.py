"""The memory budget that bounds what the server holds: bytes buffered in
tables, sealed batches waiting to be encoded, and encoded batches waiting to
land or retrying. Sources ask it whether to take more; it tells them when to
resume."""
from __future__ import annotations

from collections.abc import Callable

LOW_WATER_FRACTION = 0.75  # inputs resume once usage falls to this share of the budget


class MemoryBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self.low_water = int(limit * LOW_WATER_FRACTION)
        self.used = 0
        self.exhausted = False  # set at the limit, cleared at the low-water mark
        self._waiting: dict[object, Callable[[], None]] = {}  # paused input -> its resume callback

    @property
    def paused_inputs(self) -> int:
        return len(self._waiting)

    def take(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used >= self.limit:
            self.exhausted = True

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.exhausted and self.used <= self.low_water:
            self.exhausted = False
            waiting, self._waiting = self._waiting, {}
            for resume in waiting.values():
                resume()

    def wait_for_room(self, owner: object, resume: Callable[[], None]) -> None:
        """`resume` runs once usage falls to the low-water mark."""
        if self.exhausted:
            self._waiting[owner] = resume
        else:
            resume()

    def forget(self, owner: object) -> None:
        self._waiting.pop(owner, None)
