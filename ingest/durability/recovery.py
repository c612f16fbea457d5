"""Crash recovery: replays the write-ahead log before any input is taken.

Every record whose batch did not land (the sink's ledger) or go to the
dead-letter store is handed back to its table's pipeline, in order, with
its request's receipt; batches of which only some bisected slices landed
are rebuilt exactly, so those slices are recognised and skipped. Logged
requests' receipts and idempotency keys come back whether or not their
records are replayed. Damaged records go to the dead-letter store; nothing
here can make the server fail to start.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from ingest.core.batch import BatchId, Ledger
from ingest.core.budget import MemoryBudget
from ingest.core.deadletter import DeadLetterStore
from ingest.core.receipts import IdempotencyKeys, Receipt, ReceiptBook
from ingest.core.router import Router
from ingest.durability.wal import ARROW, Damage, WriteAheadLog

log = logging.getLogger("ingest.server")  # the name these lines had before recovery moved out of the server

WAL_DAMAGE_TABLE = "_wal"  # where unreadable write-ahead-log records are kept


def covered(ranges: list, lsn: int) -> bool:
    """Whether `lsn` falls in one of the sorted, disjoint (first, last) ranges."""
    index = bisect.bisect_right(ranges, (lsn, float("inf"))) - 1
    return index >= 0 and ranges[index][0] <= lsn <= ranges[index][1]


@dataclass
class Recovery:
    wal: WriteAheadLog  # recovered, not yet open
    router: Router
    dead_letters: DeadLetterStore
    store_pool: Executor  # dead-letter writes
    budget: MemoryBudget
    receipts: ReceiptBook
    idempotency: IdempotencyKeys  # its window also bounds which saved keys come back

    async def run(self, ledger: Ledger) -> int:
        """Replays against `ledger` (what the sink says has landed); returns the events replayed."""
        loop = asyncio.get_running_loop()
        wal = self.wal
        settled = Ledger.from_ids([(t, BatchId(*r)) for t, ranges in ledger.complete.items() for r in ranges]
                                  + self.dead_letters.settled_ids())
        # lsns are batch ids: never hand out one that the sink or the dead-letter store already holds
        wal.start_above(max((last for ranges in (*settled.complete.values(), *ledger.partial.values())
                             for _, last in ranges), default=0))
        complete = {t: sorted(r) for t, r in settled.complete.items()}
        partial = {t: {first: last for first, last in ranges - settled.complete.get(t, set())}
                   for t, ranges in ledger.partial.items()}
        partial_ends = {t: set(r.values()) for t, r in partial.items()}
        first_replayed: dict[str, int] = {}
        last_seen: dict[str, int] = {}
        skipped = replayed = 0
        self._restore_saved_keys()
        for item in wal.recover():
            if isinstance(item, Damage):
                try:
                    await loop.run_in_executor(
                        self.store_pool, self.dead_letters.put_rejected, WAL_DAMAGE_TABLE, [item.raw], [item.reason],
                        f"wal {item.segment.name} byte {item.offset}", "write-ahead log damage")
                    item.kept = True
                except OSError as exc:
                    log.error("wal %s: cannot keep damaged bytes in the dead-letter store (%s); they stay in the log",
                              item.segment.name, exc)
                continue
            record = item
            last_seen[record.table] = max(last_seen.get(record.table, 0), record.lsn)
            if covered(complete.get(record.table, ()), record.lsn):
                self.restore_request(record.table, record.meta, replayed=False)
                skipped += 1
                continue
            first_replayed.setdefault(record.table, record.lsn)
            pipeline = self.router.pipeline(record.table)
            if record.lsn in partial.get(record.table, {}):
                pipeline.seal("replay")  # rebuild the batch exactly, so its landed slices are recognised
            receipt = self.restore_request(record.table, record.meta, replayed=True)
            if record.kind == ARROW:
                pipeline.replay_batch(record.lsn, record.batch(), receipt)
            else:
                pipeline.replay(record, receipt)
            if record.lsn in partial_ends.get(record.table, ()):
                pipeline.seal("replay")
            replayed += record.events
            await self.budget.room()
        for table, last in last_seen.items():
            wal.settle(table, first_replayed[table] - 1 if table in first_replayed else last)
        if replayed or skipped:
            log.info("write-ahead log: replayed %d events; %d records had already landed", replayed, skipped)
        return replayed

    def _restore_saved_keys(self) -> None:
        """Idempotency keys whose segments are gone, still in their window; the rest are dropped."""
        keep = []
        horizon = time.time() - self.idempotency.window
        for meta in self.wal.saved_keys():
            try:
                request = json.loads(meta)
            except ValueError:
                continue
            if request.get("created", 0) < horizon:
                continue
            keep.append(meta)
            self.restore_request(request.get("table", ""), meta, replayed=False)
        self.wal.compact_keys(keep)

    def restore_request(self, table: str, meta: bytes, replayed: bool) -> Receipt | None:
        """A logged HTTP request's receipt and idempotency key, from its
        record's meta. Returns the receipt when its lines are replayed now."""
        if not meta:
            return None
        try:
            request = json.loads(meta)
            reply = request["reply"]
            receipt = self.receipts.issue(table, reply["accepted"], reply["rejected"], request.get("callback"),
                                          request["receipt"], request.get("created"))
        except (ValueError, KeyError, TypeError):
            return None
        if "key" in request:
            entry = self.idempotency.begin(request["key"], table, request["digest"], request.get("created"))
            entry.reply.set_result((200, json.dumps(reply, separators=(",", ":")).encode(), "application/json",
                                    (("Ingest-Receipt", receipt.id),)))
        if not replayed:  # its batch had landed before the restart
            receipt.settle(receipt.accepted, 0, 0, [])
            return None
        return receipt
