"""Recovery in-process: a real write-ahead log on disk (lines and Arrow
records), replayed against an in-memory sink's ledger into real pipelines."""
from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from ingest.core.batch import BatchId
from ingest.core.budget import MemoryBudget
from ingest.core.deadletter import DeadLetterStore
from ingest.core.pipeline import PipelineContext, RetryPolicy
from ingest.core.receipts import IdempotencyKeys, ReceiptBook
from ingest.core.router import Router
from ingest.durability.recovery import Recovery, covered
from ingest.durability.wal import WriteAheadLog
from ingest.testing.fakes import FakeClock, MemorySink


def log_lines(wal: WriteAheadLog, table: str, lines: list[bytes], meta: bytes = b"") -> int:
    ends = np.cumsum([len(line) for line in lines])
    spans = np.column_stack([ends - [len(line) for line in lines], ends]).reshape(-1).astype(np.int64)
    return wal.append(table, spans, b"".join(lines), meta, keyed=bool(meta))  # every request_meta holds a key


def request_meta(table: str, receipt: str, key: str, accepted: int) -> bytes:
    return json.dumps({"table": table, "key": key, "digest": "d1", "receipt": receipt, "created": time.time(),
                       "callback": None, "reply": {"accepted": accepted, "rejected": 0, "errors": []}}).encode()


def test_replays_what_did_not_land_and_brings_back_receipts_and_keys(tmp_path):
    wal_dir = tmp_path / "wal"

    async def write_log():
        wal = WriteAheadLog(wal_dir, "always")
        list(wal.recover())
        wal.open(asyncio.get_running_loop())
        lsns = [log_lines(wal, "events", [b'{"n": 0}']),
                log_lines(wal, "events", [b'{"n": 1}', b'{"n": 2}'], request_meta("events", "r-landed", "k1", 2)),
                log_lines(wal, "events", [b'{"n": 3}'], request_meta("events", "r-replayed", "k2", 1)),
                log_lines(wal, "other", [b'{"n": 4}']),
                wal.append_batch("arrows", pa.record_batch({"n": pa.array([5, 6], pa.int64())}))]
        wal.close()
        return lsns

    lsns = asyncio.run(write_log())
    sink = MemorySink()
    sink.batches.append(("events", None, BatchId(lsns[0], lsns[1])))  # landed before the crash
    receipts, keys = ReceiptBook(60), IdempotencyKeys(60)

    async def recover():
        pools = [ThreadPoolExecutor(1) for _ in range(3)]
        context = PipelineContext(
            sink=sink, encode_pool=pools[0], sink_pool=pools[1], store_pool=pools[2],
            sink_slots=asyncio.Semaphore(1), budget=MemoryBudget(1 << 30),
            dead_letters=DeadLetterStore(tmp_path / "deadletter"), retry=RetryPolicy(2, 0.001, 0.001),
            batch_events=1000, batch_bytes=1 << 20, flush_interval=5, observe_flush=lambda table, seconds: None,
            clock=FakeClock())
        wal = context.wal = WriteAheadLog(wal_dir, "always")
        router = Router(context)
        replayed = await Recovery(wal, router, context.dead_letters, pools[2], context.budget, receipts,
                                  keys).run(sink.ledger())
        wal.open(asyncio.get_running_loop())
        for pipeline in router.pipelines.values():
            await pipeline.drain()
            await pipeline.close()
        wal.close()
        for pool in pools:
            pool.shutdown(wait=True)
        landed_key, replayed_key = keys.find("k1", "events", "d1"), keys.find("k2", "events", "d1")
        return replayed, landed_key.reply.result(), replayed_key.reply.result()

    replayed, landed_reply, replayed_reply = asyncio.run(recover())
    assert replayed == 4
    assert sorted((table, batch.to_pylist(), batch_id) for table, batch, batch_id in sink.batches[1:]) == [
        ("arrows", [{"n": 5}, {"n": 6}], BatchId(lsns[4], lsns[4])),  # an Arrow record skips the encoder
        ("events", [{"n": 3}], BatchId(lsns[2], lsns[2])), ("other", [{"n": 4}], BatchId(lsns[3], lsns[3]))]
    assert receipts.get("r-landed").status == "landed" and receipts.get("r-landed").landed == 2
    assert receipts.get("r-replayed").status == "landed" and receipts.get("r-replayed").landed == 1
    assert landed_reply[0] == 200 and json.loads(landed_reply[1])["accepted"] == 2
    assert ("Ingest-Receipt", "r-replayed") in replayed_reply[3]


def test_covered_finds_an_lsn_in_sorted_ranges():
    ranges = [(1, 3), (7, 7), (10, 20)]
    assert [lsn for lsn in range(22) if covered(ranges, lsn)] == [1, 2, 3, 7, *range(10, 21)]
    assert not covered([], 1)
