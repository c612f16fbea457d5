"""The seal policy on its own, with a fake clock: no real timers."""
from __future__ import annotations

import pytest

from ingest.core.batcher import WAIT_SEAL_SECONDS, Batcher, BatchLimits
from ingest.testing.fakes import FakeClock


class Table:
    """Stands in for the pipeline: an open batch's size, and the seals the batcher asked for."""

    def __init__(self, limits: BatchLimits):
        self.clock = FakeClock()
        self.seals: list[str] = []
        self.events = self.nbytes = 0
        self.batcher = Batcher(limits, self.clock, self.seal)

    def push(self, events: int, nbytes: int) -> None:
        self.events += events
        self.nbytes += nbytes
        self.batcher.push(self.events, self.nbytes)

    def seal(self, trigger: str) -> None:
        self.batcher.taken()
        if self.events:
            self.seals.append(trigger)
            self.events = self.nbytes = 0


def test_seals_at_the_event_limit():
    table = Table(BatchLimits(events=3, nbytes=1000, age=60))
    table.push(2, 10)
    assert table.seals == []
    table.push(1, 10)
    assert table.seals == ["events"]
    assert table.clock.pending == []  # the sealed batch's age timer is gone


def test_seals_at_the_byte_limit():
    table = Table(BatchLimits(events=100, nbytes=50, age=60))
    table.push(1, 49)
    table.push(1, 1)
    assert table.seals == ["bytes"]


def test_the_event_limit_wins_when_both_are_reached():
    assert Table(BatchLimits(3, 30, 60)).batcher.is_full(3, 30) == "events"


def test_a_limit_of_zero_is_no_limit():
    batcher = Table(BatchLimits(events=0, nbytes=0, age=60)).batcher
    assert batcher.is_full(10**9, 10**12) is None
    assert batcher.overflows(10**9, 10**12, 10**9, 10**12) is None


def test_seals_by_age_counted_from_the_first_event():
    table = Table(BatchLimits(events=100, nbytes=1000, age=5))
    table.push(1, 10)
    table.clock.advance(3)
    table.push(1, 10)  # a later event does not restart the age
    table.clock.advance(1.9)
    assert table.seals == []
    table.clock.advance(0.1)
    assert table.seals == ["age"]


def test_an_empty_batch_has_no_age():
    table = Table(BatchLimits(events=100, nbytes=1000, age=5))
    table.batcher.push(0, 0)
    assert table.clock.pending == []


def test_the_next_batch_ages_from_its_own_first_event():
    table = Table(BatchLimits(events=2, nbytes=1000, age=5))
    table.push(2, 10)  # sealed by events at t=0
    table.clock.advance(4)
    table.push(1, 10)
    table.clock.advance(4)
    assert table.seals == ["events"]
    table.clock.advance(1)
    assert table.seals == ["events", "age"]


def test_expedite_seals_soon_and_only_once():
    table = Table(BatchLimits(events=100, nbytes=1000, age=60))
    table.push(1, 10)
    table.batcher.expedite(table.events)
    table.batcher.expedite(table.events)  # a second waiting client shares the same early seal
    assert len(table.clock.pending) == 2  # age and one expedite
    table.clock.advance(WAIT_SEAL_SECONDS)
    assert table.seals == ["wait"]
    assert table.clock.pending == []


def test_expedite_of_an_empty_batch_does_nothing():
    table = Table(BatchLimits(events=100, nbytes=1000, age=60))
    table.batcher.expedite(0)
    assert table.clock.pending == []


def test_a_seal_by_another_trigger_stops_both_timers():
    table = Table(BatchLimits(events=100, nbytes=1000, age=5))
    table.push(1, 10)
    table.batcher.expedite(table.events)
    table.seal("shutdown")
    table.clock.advance(60)
    assert table.seals == ["shutdown"]


@pytest.mark.parametrize("open_events, open_bytes, more_events, more_bytes, trigger", [
    (0, 0, 500, 5000, None),  # an empty batch takes a group of any size
    (3, 30, 2, 20, None),  # fits exactly
    (3, 30, 3, 10, "events"),
    (3, 30, 1, 21, "bytes"),
    (3, 30, 3, 21, "events"),
])
def test_overflows_says_which_limit_a_whole_group_would_cross(open_events, open_bytes, more_events, more_bytes,
                                                              trigger):
    batcher = Table(BatchLimits(events=5, nbytes=50, age=60)).batcher
    assert batcher.overflows(open_events, open_bytes, more_events, more_bytes) == trigger
