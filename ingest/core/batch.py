"""What a batch is to the rest of the system: its id (the write-ahead-log
records it holds), the ledger of ids a sink says have landed, and a sealed
batch on its way with the requests (groups) whose receipts follow it."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import pyarrow as pa

from ingest.core.receipts import Receipt


LOG_SEPARATOR = "@"  # between a log's name and the positions in a batch id's text


@dataclass(frozen=True)
class BatchId:
    """Which records of a log a batch holds, and for a bisected write which
    rows of it. The log is this node's write-ahead log (`log` = "", the
    positions its first..last lsn) unless `log` names another: an import
    reads each input file as a log of its own, its positions the batch's
    first and end offset in the file. A sink records the id in the same
    commit as the rows and skips an id it already has, so a batch replayed
    after a crash never lands twice."""

    first_lsn: int
    last_lsn: int
    offset: int = 0
    length: int = -1  # -1: the whole batch
    log: str = ""  # "": the write-ahead log; else e.g. "import-3f9a0c2b1d4e-1-0" (letters, digits, -)

    @property
    def whole(self) -> bool:
        return self.length < 0

    @property
    def batch(self) -> "BatchId":
        """The whole batch this id (or slice of it) belongs to."""
        return BatchId(self.first_lsn, self.last_lsn, log=self.log)

    def slice(self, offset: int, length: int) -> "BatchId":
        return BatchId(self.first_lsn, self.last_lsn, self.offset + offset, length, self.log)

    def __str__(self) -> str:
        text = f"{self.first_lsn:012d}-{self.last_lsn:012d}"
        if self.log:
            text = f"{self.log}{LOG_SEPARATOR}{text}"
        return text if self.whole else f"{text}.{self.offset}+{self.length}"

    @classmethod
    def parse(cls, text: str) -> "BatchId":
        log, _, text = text.rpartition(LOG_SEPARATOR)
        lsns, _, rows = text.partition(".")
        first, last = (int(n) for n in lsns.split("-"))
        if not rows:
            return cls(first, last, log=log)
        offset, length = (int(n) for n in rows.split("+"))
        return cls(first, last, offset, length, log)


@dataclass
class Ledger:
    """What a sink says has landed, per table: whole batches, and batches
    of which only some bisected slices landed before a crash."""

    complete: dict  # table -> set of (first_lsn, last_lsn)
    partial: dict  # table -> set of (first_lsn, last_lsn)

    @classmethod
    def from_ids(cls, ids, log: str = "") -> "Ledger":
        """From (table, BatchId) pairs, those of `log` ("": the write-ahead
        log); a whole id completes its batch."""
        complete: dict = {}
        partial: dict = {}
        for table, batch_id in ids:
            if batch_id.log != log:
                continue
            target = complete if batch_id.whole else partial
            target.setdefault(table, set()).add((batch_id.first_lsn, batch_id.last_lsn))
        for table, ranges in partial.items():
            ranges -= complete.get(table, set())
        return cls(complete, partial)


@dataclass
class Group:
    """Lines of one request in a batch, followed by its receipt."""

    receipt: Receipt
    first_line: int  # index of its first line in the batch
    lines: int


@dataclass
class Sealed:
    """A sealed batch on its way, and what became of its lines."""

    lines: object  # the SealedBatch; None when the rows came structured
    batch_id: BatchId | None
    groups: list[Group]
    structured: pa.RecordBatch | None = None  # rows that skip the encoder (append_batch)
    rejected: list = field(default_factory=list)  # (line index, reason) from the encoder
    dead_lettered: list = field(default_factory=list)  # (row offset, rows, reason) that did not land
    origin: object = None  # callable(line index) -> where that line came from ("file:line"), for rejections

    def settle_receipts(self) -> None:
        """Tells each receipt what became of its lines. A group's rows are its
        lines minus the rejected ones, so they are contiguous in the batch."""
        if not self.rejected and not self.dead_lettered:  # the common case: everything landed
            for group in self.groups:
                group.receipt.settle(group.lines, 0, 0, ())
            return
        rejected_lines = [index for index, _ in self.rejected]
        for group in self.groups:
            start, end = group.first_line, group.first_line + group.lines
            lo, hi = bisect.bisect_left(rejected_lines, start), bisect.bisect_left(rejected_lines, end)
            rejected = int(hi - lo)
            reasons = [reason for _, reason in self.rejected[lo:hi]]
            row_start = start - int(lo)
            row_end = row_start + group.lines - rejected
            dead = 0
            for offset, rows, reason in self.dead_lettered:
                overlap = min(row_end, offset + rows) - max(row_start, offset)
                if overlap > 0:
                    dead += overlap
                    reasons.append(reason)
            group.receipt.settle(group.lines - rejected - dead, dead, rejected, reasons)
