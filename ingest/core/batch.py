"""What a batch is to the rest of the system: its id (the write-ahead-log
records it holds) and the ledger of ids a sink says have landed."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchId:
    """Which write-ahead-log records a batch holds (first..last lsn of its
    table), and for a bisected write which rows of it. A sink records the id
    in the same commit as the rows and skips an id it already has, so a
    batch replayed after a crash never lands twice."""

    first_lsn: int
    last_lsn: int
    offset: int = 0
    length: int = -1  # -1: the whole batch

    @property
    def whole(self) -> bool:
        return self.length < 0

    def slice(self, offset: int, length: int) -> "BatchId":
        return BatchId(self.first_lsn, self.last_lsn, self.offset + offset, length)

    def __str__(self) -> str:
        text = f"{self.first_lsn:012d}-{self.last_lsn:012d}"
        return text if self.whole else f"{text}.{self.offset}+{self.length}"

    @classmethod
    def parse(cls, text: str) -> "BatchId":
        lsns, _, rows = text.partition(".")
        first, last = (int(n) for n in lsns.split("-"))
        if not rows:
            return cls(first, last)
        offset, length = (int(n) for n in rows.split("+"))
        return cls(first, last, offset, length)


@dataclass
class Ledger:
    """What a sink says has landed, per table: whole batches, and batches
    of which only some bisected slices landed before a crash."""

    complete: dict  # table -> set of (first_lsn, last_lsn)
    partial: dict  # table -> set of (first_lsn, last_lsn)

    @classmethod
    def from_ids(cls, ids) -> "Ledger":
        """From (table, BatchId) pairs; a whole id completes its batch."""
        complete: dict = {}
        partial: dict = {}
        for table, batch_id in ids:
            target = complete if batch_id.whole else partial
            target.setdefault(table, set()).add((batch_id.first_lsn, batch_id.last_lsn))
        for table, ranges in partial.items():
            ranges -= complete.get(table, set())
        return cls(complete, partial)
