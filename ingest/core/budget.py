"""The memory budget that bounds what the server holds: bytes buffered in
tables, sealed batches waiting to be encoded, encoded batches waiting to
land or retrying, and request bodies being received. Sources ask it whether
to take more; it tells them when to resume.

Streams (TCP connections) pause at the limit and resume at the low-water
mark; requests (HTTP bodies) reserve their size before they are read and
are refused (429) when it does not fit. When both push past the budget, the
room that frees up goes to them in turns: after a round in which requests
were refused, the paused streams sit out the next round (until requests
fill the budget again, or usage falls to the stream floor), so a stream that
refills the budget at once cannot starve the requests."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

LOW_WATER_FRACTION = 0.75  # inputs resume once usage falls to this share of the budget
STREAM_FLOOR_FRACTION = 0.25  # streams sitting out a round resume here even if no request came


class PausedInputs:
    """Inputs (TCP connections) that stopped reading, each with the callback
    that resumes it; shared by whatever makes them pause."""

    def __init__(self):
        self._waiting: dict[object, Callable[[], None]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def hold(self, paused: bool, owner: object, resume: Callable[[], None]) -> None:
        """`resume` runs now unless `paused`; then once `resume_all` is called."""
        if paused:
            self._waiting[owner] = resume
        else:
            resume()

    def forget(self, owner: object) -> None:
        self._waiting.pop(owner, None)

    def resume_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for resume in waiting.values():
            resume()


class MemoryBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self.low_water = int(limit * LOW_WATER_FRACTION)
        self.stream_floor = int(limit * STREAM_FLOOR_FRACTION)
        self.used = 0
        self.exhausted = False  # set at the limit, cleared at the low-water mark
        self._held = False  # the paused streams sit out this round: the room is the requests'
        self._requests_refused = False  # a request was refused since the streams last resumed
        self._paused = PausedInputs()

    @property
    def paused_inputs(self) -> int:
        return len(self._paused)

    @property
    def streams_paused(self) -> bool:
        """Whether a stream must stop reading now."""
        return self.exhausted or self._held

    def take(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used >= self.limit:
            self.exhausted = True

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.exhausted and self.used <= self.low_water:
            self.exhausted = False
            if self._held or not (self._requests_refused and self._paused):
                self._resume_streams()
            else:  # requests were refused while the streams had the room: this round is theirs
                self._held = True
                self._requests_refused = False
        elif self._held and not self.exhausted and self.used <= self.stream_floor:
            self._resume_streams()  # no request wanted the room

    def reserve(self, nbytes: int) -> bool:
        """Room for a request body of `nbytes` about to be read: taken when it
        fits (give it back once the body is buffered or dropped), else the
        request is to be refused and the next round of room is kept for
        requests."""
        if self.exhausted or self.used + nbytes > self.limit:
            self._requests_refused = True
            return False
        self.take(nbytes)
        return True

    def _resume_streams(self) -> None:
        self._held = self._requests_refused = False
        self._paused.resume_all()

    def wait_for_room(self, owner: object, resume: Callable[[], None]) -> None:
        """`resume` runs once the streams may read again."""
        self._paused.hold(self.streams_paused, owner, resume)

    async def room(self) -> None:
        """Returns once there is room: at once unless the budget is exhausted,
        else when the streams may read again (recovery and imports wait here)."""
        if self.exhausted:
            room = asyncio.get_running_loop().create_future()
            self.wait_for_room(room, lambda: room.done() or room.set_result(None))
            await room

    def forget(self, owner: object) -> None:
        self._paused.forget(owner)
