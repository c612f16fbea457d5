"""The fate of every event, counted per table.

Every event received ends up counted exactly once as landed, rejected (bad
input, kept in the dead-letter store) or dead-lettered (could not land);
until then it is buffered. All counters change on the event loop, so any
snapshot sees `received = landed + rejected + dead_lettered + buffered`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# why a batch was sealed; every table reports all of these
SEAL_TRIGGERS = ("events", "bytes", "age", "wait", "shutdown", "replay")
ARROW_TRIGGER = "arrow"  # rows that came structured, and the lines sealed ahead of them; reported once it happens
PLACED_TRIGGER = "import"  # an import's batch (one stretch of a file), and the lines sealed ahead of it


@dataclass
class TableCounters:
    received: int = 0  # events accepted from a source (all of them, good or bad)
    rejected: int = 0  # bad input: invalid JSON, type conflicts, over-long lines
    landed: int = 0  # committed in the sink
    dead_lettered: int = 0  # refused by the sink, out of retries, or past the shutdown grace
    retries: int = 0  # flush attempts after a failure
    batches_sealed: dict = field(default_factory=lambda: dict.fromkeys(SEAL_TRIGGERS, 0))
    batches_landed: int = 0
    batches_already_landed: int = 0  # replayed batches the ledger had: counted landed, not written twice

    def sealed(self, trigger: str) -> None:
        self.batches_sealed[trigger] = self.batches_sealed.get(trigger, 0) + 1

    def unaccounted(self, buffered: int) -> int:
        """Events received but in none of the outcomes nor buffered: 0 when the books balance."""
        return self.received - (self.landed + self.rejected + self.dead_lettered + buffered)

    def as_dict(self, buffered: int) -> dict:
        return {
            "received": self.received,
            "rejected": self.rejected,
            "landed": self.landed,
            "dead_lettered": self.dead_lettered,
            "buffered": buffered,
            "retries": self.retries,
            "batches_sealed": dict(self.batches_sealed),
            "batches_landed": self.batches_landed,
            "batches_already_landed": self.batches_already_landed,
        }


def tables_snapshot(pipelines: dict) -> dict:
    """Every table's counters, by name: the `tables` of /stats."""
    return {name: pipeline.counters.as_dict(pipeline.buffered) for name, pipeline in sorted(pipelines.items())}
