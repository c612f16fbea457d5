"""When a table's open batch seals: the one place that decides it.

A batch seals once it holds `events` events or `nbytes` bytes, `age`
seconds after its first event, shortly after a client that waits for its
lines asks (expedite), or when the pipeline says so (shutdown, replay).
The lines themselves stay in the pipeline's buffer (framed there without a
copy); the batcher only sees sizes, and calls `seal(trigger)` when the
batch must go. Time comes from an injected clock: the event loop in the
server, a fake one in tests (after Vector's batcher: push, is_full, take,
timeout).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WAIT_SEAL_SECONDS = 0.02  # a wait=flushed request seals its batch this soon: concurrent ones share it


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Runs a callback after a delay; an asyncio event loop is one."""

    def call_later(self, delay: float, callback: Callable[..., object], *args) -> Timer: ...


@dataclass(frozen=True)
class BatchLimits:
    events: int  # seal at this many events (0: no limit)
    nbytes: int  # seal at this many bytes of lines (0: no limit)
    age: float  # seconds after the batch's first event


class Batcher:
    def __init__(self, limits: BatchLimits, clock: Clock, seal: Callable[[str], None]):
        self.limits = limits
        self._clock = clock
        self._seal = seal
        self._age: Timer | None = None
        self._expedited: Timer | None = None  # an early seal a waiting client asked for

    def is_full(self, events: int, nbytes: int) -> str | None:
        """The trigger that seals a batch of this size now, or None."""
        if self.limits.events and events >= self.limits.events:
            return "events"
        if self.limits.nbytes and nbytes >= self.limits.nbytes:
            return "bytes"
        return None

    def overflows(self, events: int, nbytes: int, more_events: int, more_bytes: int) -> str | None:
        """The trigger that seals the open batch (of `events`, `nbytes`)
        before a group that must not be split is added, if it would not fit."""
        if not events:
            return None
        if self.limits.events and events + more_events > self.limits.events:
            return "events"
        if self.limits.nbytes and nbytes + more_bytes > self.limits.nbytes:
            return "bytes"
        return None

    def push(self, events: int, nbytes: int) -> None:
        """The open batch holds this much now: sealed if full, else its age starts with its first event."""
        trigger = self.is_full(events, nbytes)
        if trigger is not None:
            self._seal(trigger)
        elif events and self._age is None:
            self._age = self._clock.call_later(self.limits.age, self._seal, "age")

    def expedite(self, events: int) -> None:
        """A client waits for the open batch (of `events`) to land: seal it soon, not at its age."""
        if events and self._expedited is None:
            self._expedited = self._clock.call_later(WAIT_SEAL_SECONDS, self._seal, "wait")

    def taken(self) -> None:
        """The open batch was sealed, whatever the trigger: its timers stop; the next batch starts fresh."""
        if self._age is not None:
            self._age.cancel()
            self._age = None
        if self._expedited is not None:
            self._expedited.cancel()
            self._expedited = None
