"""Receipts and idempotency keys: what a client can ask about its requests.

A receipt follows one accepted HTTP request to its end: `pending` until its
batch is settled, then `landed` or `dead_lettered` (with counts and
reasons). An idempotency key maps a client's retry to the original
request's reply, so the retry is not ingested twice.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_REASONS = 10
MAX_RECEIPTS = 200_000  # settled receipts kept at most, whatever the retention
MAX_KEYS = 200_000  # idempotency keys kept at most (about 600 bytes each), whatever the window; the oldest answered go first
PRUNE_INTERVAL = 0.1  # seconds between prunes when receipts are issued (get() prunes every time)


@dataclass(slots=True)  # one per request: slots make it smaller and quicker to build
class Receipt:
    id: str
    table: str
    accepted: int  # events buffered for the sink
    rejected: int  # events refused as bad input (at the door or when encoded)
    callback: str | None = None
    created: float = field(default_factory=time.time)
    landed: int = 0
    dead_lettered: int = 0
    reasons: list[str] = field(default_factory=list)
    settled: bool = False
    _done: asyncio.Future | None = None  # made only when someone waits

    def finished(self) -> asyncio.Future:
        """Resolves when the receipt settles."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self.settled:
                self._done.set_result(self)
        return self._done

    @property
    def status(self) -> str:
        if not self.settled:
            return "pending"
        return "dead_lettered" if self.dead_lettered else "landed"

    def add_reasons(self, reasons) -> None:
        for reason in reasons:
            if len(self.reasons) >= MAX_REASONS:
                break
            if reason not in self.reasons:
                self.reasons.append(reason)

    def settle(self, landed: int, dead_lettered: int, rejected: int, reasons) -> None:
        self.landed += landed
        self.dead_lettered += dead_lettered
        self.rejected += rejected
        self.accepted -= rejected  # refused when encoded: counted as rejected, not accepted
        self.add_reasons(reasons)
        self.settled = True
        if self._done is not None and not self._done.done():
            self._done.set_result(self)

    def as_dict(self) -> dict:
        return {
            "receipt": self.id, "table": self.table, "status": self.status, "accepted": self.accepted,
            "rejected": self.rejected, "landed": self.landed, "dead_lettered": self.dead_lettered,
            "reasons": self.reasons, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
        }


class ReceiptBook:
    """Receipts by id, kept for `retention` seconds after they are issued, and
    at most MAX_RECEIPTS of them (the oldest settled ones go first), so a
    flood of small requests cannot grow memory without bound."""

    def __init__(self, retention: float):
        self.retention = retention
        self._receipts: OrderedDict[str, Receipt] = OrderedDict()
        self._numbers = itertools.count()
        self._prefix = f"{int(time.time()):x}{os.getpid():x}"
        self._next_prune = 0.0  # issuing prunes at most this often (time.time()), or when over MAX_RECEIPTS

    def issue(self, table: str, accepted: int, rejected: int, callback: str | None, receipt_id: str | None = None,
              created: float | None = None) -> Receipt:
        now = time.time()
        if now >= self._next_prune or len(self._receipts) > MAX_RECEIPTS:
            self._prune()
            self._next_prune = now + PRUNE_INTERVAL
        receipt = Receipt(receipt_id or f"r{self._prefix}-{next(self._numbers):x}", table, accepted, rejected,
                          callback, created or now)
        self._receipts[receipt.id] = receipt
        return receipt

    def withdraw(self, receipt: Receipt) -> None:
        """The request it was issued for was refused after all."""
        self._receipts.pop(receipt.id, None)

    def get(self, receipt_id: str) -> Receipt | None:
        self._prune()
        return self._receipts.get(receipt_id)

    def _prune(self) -> None:
        horizon = time.time() - self.retention
        while self._receipts:
            oldest = next(iter(self._receipts.values()))
            if not oldest.settled or (oldest.created >= horizon and len(self._receipts) <= MAX_RECEIPTS):
                break
            self._receipts.popitem(last=False)


class IdempotencyConflict(Exception):
    """A key reused for a different request."""


@dataclass
class KeyEntry:
    table: str
    digest: str  # of the request body, to catch a key reused for something else
    created: float
    reply: asyncio.Future  # (status, body bytes, content type, headers) of the original answer


class IdempotencyKeys:
    def __init__(self, window: float):
        self.window = window
        self._entries: OrderedDict[str, KeyEntry] = OrderedDict()

    def find(self, key: str, table: str, digest: str) -> KeyEntry | None:
        self._prune()
        entry = self._entries.get(key)
        if entry is not None and (entry.table, entry.digest) != (table, digest):
            raise IdempotencyConflict(f"Idempotency-Key {key!r} was used for a different request; use a new key")
        return entry

    def begin(self, key: str, table: str, digest: str, created: float | None = None) -> KeyEntry:
        entry = KeyEntry(table, digest, created or time.time(), asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        return entry

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def _prune(self) -> None:
        horizon = time.time() - self.window
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if (oldest.created >= horizon and len(self._entries) <= MAX_KEYS) or not oldest.reply.done():
                break
            self._entries.popitem(last=False)
