"""The pipeline in-process: an in-memory sink, an in-memory log and a fake
clock; the encoder and the dead-letter store are the real ones."""
from __future__ import annotations

import asyncio
import contextlib
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from ingest.core.batch import BatchId
from ingest.core.budget import MemoryBudget
from ingest.core.deadletter import DeadLetterStore
from ingest.core.pipeline import PipelineContext, RetryPolicy, TablePipeline
from ingest.core.ports import LogUnavailable
from ingest.core.receipts import ReceiptBook
from ingest.durability.wal import Record
from ingest.hotpath.buffer import BatchBuffer, LineFramer
from ingest.testing.fakes import FakeClock, MemoryLog, MemorySink

TABLE = "events"


def run(scenario):
    return asyncio.run(scenario())


@contextlib.asynccontextmanager
async def pipeline_for(tmp_path, *, sink=None, wal=None, clock=None, batch_events=1000, batch_bytes=1 << 20,
                       flush_interval=5.0):
    pools = [ThreadPoolExecutor(1, thread_name_prefix=name) for name in ("encode", "sink", "deadletter")]
    context = PipelineContext(
        sink=sink or MemorySink(), encode_pool=pools[0], sink_pool=pools[1], store_pool=pools[2],
        sink_slots=asyncio.Semaphore(1), budget=MemoryBudget(1 << 30),
        dead_letters=DeadLetterStore(tmp_path / "deadletter"),
        retry=RetryPolicy(attempts=2, base=0.001, ceiling=0.001), batch_events=batch_events,
        batch_bytes=batch_bytes, flush_interval=flush_interval, observe_flush=lambda table, seconds: None,
        wal=wal, clock=clock or FakeClock())
    pipeline = TablePipeline(TABLE, context)
    try:
        yield pipeline
    finally:
        await pipeline.close()
        for pool in pools:
            pool.shutdown(wait=True)


def lines(*numbers, bad=()) -> BatchBuffer:
    """One request's lines: {"n": number} each, or a line that is not JSON at the indexes in `bad`."""
    buffer = BatchBuffer()
    for index, number in enumerate(numbers):
        buffer.append_line(b'{"n": ' if index in bad else json.dumps({"n": number}).encode())
    return buffer


def landed_numbers(sink: MemorySink) -> list[list[int]]:
    return [[row["n"] for row in batch.to_pylist()] for _, batch, _ in sink.batches]


def balanced(pipeline: TablePipeline) -> bool:
    return pipeline.counters.unaccounted(pipeline.buffered) == 0


def test_lines_land_in_order_and_a_request_is_never_split(tmp_path):
    sink, wal = MemorySink(), MemoryLog()

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=wal, batch_events=4) as pipeline:
            lsns = [pipeline.append_lines(lines(0, 1, 2)), pipeline.append_lines(lines(3, 4, 5)),
                    pipeline.append_lines(lines(6, 7))]
            assert pipeline.buffered == 8 and balanced(pipeline)
            await pipeline.drain()
            return pipeline.counters, lsns

    counters, lsns = run(scenario)
    assert landed_numbers(sink) == [[0, 1, 2], [3, 4, 5], [6, 7]]  # 4 events a batch, but whole requests
    assert not any(record.keyed for record in wal.records)
    assert [record.lines for record in wal.records] == [[b'{"n": 0}', b'{"n": 1}', b'{"n": 2}'],
                                                       [b'{"n": 3}', b'{"n": 4}', b'{"n": 5}'],
                                                       [b'{"n": 6}', b'{"n": 7}']]
    assert lsns == [1, 2, 3]
    assert [batch_id for _, _, batch_id in sink.batches] == [BatchId(1, 1), BatchId(2, 2), BatchId(3, 3)]
    assert wal.settled == {TABLE: 3}
    assert counters.batches_sealed["events"] == 2 and counters.batches_sealed["shutdown"] == 1
    assert (counters.received, counters.landed) == (8, 8)


def test_a_request_larger_than_the_batch_goes_in_whole(tmp_path):
    sink = MemorySink()

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, batch_events=2) as pipeline:
            pipeline.append_lines(lines(0))
            pipeline.append_lines(lines(1, 2, 3, 4, 5))
            await pipeline.drain()

    run(scenario)
    assert landed_numbers(sink) == [[0], [1, 2, 3, 4, 5]]


def test_rejected_indexes_are_neither_logged_nor_buffered(tmp_path):
    sink, wal = MemorySink(), MemoryLog()

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=wal) as pipeline:
            receipt = ReceiptBook(60).issue(TABLE, 3, 2, None)
            pipeline.append_lines(lines(0, 1, 2, 3, 4), [1, 3], receipt=receipt, meta=b'{"receipt": "r"}', keyed=True)
            await pipeline.drain()
            return receipt

    receipt = run(scenario)
    assert landed_numbers(sink) == [[0, 2, 4]]
    (record,) = wal.records
    assert record.lines == [b'{"n": 0}', b'{"n": 2}', b'{"n": 4}'] and record.meta == b'{"receipt": "r"}'
    assert record.keyed
    assert (receipt.status, receipt.landed, receipt.rejected) == ("landed", 3, 2)


def test_a_refused_row_is_bisected_out_and_dead_lettered(tmp_path):
    sink = MemorySink(refuse=lambda row: row["n"] == 5)

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=MemoryLog()) as pipeline:
            receipt = ReceiptBook(60).issue(TABLE, 8, 0, None)
            pipeline.append_lines(lines(*range(8)), receipt=receipt)
            await pipeline.drain()
            assert balanced(pipeline)
            return pipeline.counters, receipt

    counters, receipt = run(scenario)
    assert [n for batch in landed_numbers(sink) for n in batch] == [0, 1, 2, 3, 4, 6, 7]
    assert (counters.landed, counters.dead_lettered) == (7, 1)
    assert (receipt.status, receipt.landed, receipt.dead_lettered) == ("dead_lettered", 7, 1)
    assert receipt.reasons[0].startswith("refused by the sink")
    store = DeadLetterStore(tmp_path / "deadletter")
    (entry,) = store.entries(TABLE)
    assert entry.reason == "refused by the sink" and entry.rows == 1
    assert store.read(entry.path).column("n").to_pylist() == [5]
    assert sink.settled == [(TABLE, BatchId(1, 1))]  # the bisected batch is recorded as finished


def test_receipts_settle_with_their_own_counts(tmp_path):
    book = ReceiptBook(60)

    async def scenario():
        async with pipeline_for(tmp_path) as pipeline:
            first = book.issue(TABLE, 3, 0, None)
            second = book.issue(TABLE, 3, 0, None)
            pipeline.append_lines(lines(0, 1, 2, bad=[1]), receipt=first)  # the encoder refuses line 1
            pipeline.append_lines(lines(3, 4, 5), receipt=second)
            await pipeline.drain()
            assert balanced(pipeline)
            return pipeline.counters, first, second

    counters, first, second = run(scenario)
    assert (first.status, first.accepted, first.landed, first.rejected) == ("landed", 2, 2, 1)
    assert (second.status, second.accepted, second.landed, second.rejected) == ("landed", 3, 3, 0)
    assert (counters.received, counters.landed, counters.rejected) == (6, 5, 1)
    (entry,) = DeadLetterStore(tmp_path / "deadletter").entries(TABLE)
    assert entry.kind == "rejected" and entry.rows == 1


def test_a_stream_is_framed_logged_and_counted(tmp_path):
    sink, wal = MemorySink(), MemoryLog()

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=wal) as pipeline:
            framer = LineFramer(1000)
            pipeline.append_stream(framer, b'{"n": 0}\n{"n": 1}\nnot json\n{"n":')
            pipeline.append_stream(framer, b' 3}')
            assert pipeline.counters.received == 3  # the last line is not over yet
            pipeline.finish_stream(framer)  # an unterminated last line still counts as an event
            assert balanced(pipeline)
            await pipeline.drain()
            assert balanced(pipeline) and pipeline.buffered == 0
            return pipeline.counters

    counters = run(scenario)
    assert landed_numbers(sink) == [[0, 1, 3]]
    assert [record.lines for record in wal.records] == [[b'{"n": 0}', b'{"n": 1}', b"not json"], [b'{"n": 3}']]
    assert (counters.received, counters.landed, counters.rejected) == (4, 3, 1)


@pytest.mark.parametrize("logged", [True, False], ids=["log", "no-log"])
def test_append_batch_lands_rows_in_order_with_the_lines_around_them(tmp_path, logged):
    sink, wal = MemorySink(), MemoryLog() if logged else None
    rows = pa.record_batch([pa.array([2, 3], pa.int64())], names=["n"])

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=wal) as pipeline:
            receipt = ReceiptBook(60).issue(TABLE, 2, 0, None)
            pipeline.append_lines(lines(0, 1))
            lsn = pipeline.append_batch(rows, receipt=receipt, meta=b'{"receipt": "r"}', keyed=True)
            pipeline.append_lines(lines(4))
            assert pipeline.buffered == 5 and balanced(pipeline)
            await pipeline.drain()
            assert balanced(pipeline)
            return pipeline.counters, receipt, lsn

    counters, receipt, lsn = run(scenario)
    assert landed_numbers(sink) == [[0, 1], [2, 3], [4]]
    assert sink.batches[1][1] is rows  # not re-encoded
    assert (receipt.status, receipt.landed) == ("landed", 2)
    assert (counters.received, counters.landed) == (5, 5)
    assert counters.batches_sealed["arrow"] == 2  # the rows themselves, and the lines sealed ahead of them
    if logged:
        assert lsn == 2 and sink.batches[1][2] == BatchId(2, 2)
        assert wal.records[1].batch is rows and wal.records[1].keyed and wal.records[1].meta == b'{"receipt": "r"}'
        assert wal.settled == {TABLE: 3}
    else:
        assert lsn is None and sink.batches[1][2] is None


def test_a_log_that_cannot_be_written_refuses_a_request_whole(tmp_path):
    sink, wal = MemorySink(), MemoryLog(failing=True)

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=wal) as pipeline:
            with pytest.raises(LogUnavailable):
                pipeline.append_lines(lines(0, 1))
            with pytest.raises(LogUnavailable):
                pipeline.append_batch(pa.record_batch([pa.array([9])], names=["n"]))
            assert (pipeline.counters.received, pipeline.buffered) == (0, 0)
            # a stream's lines are kept in memory only (the source pauses reading)
            pipeline.append_stream(LineFramer(1000), b'{"n": 2}\n{"n": 3}\n')
            assert (pipeline.counters.received, pipeline.buffered) == (2, 2)
            await pipeline.drain()

    run(scenario)
    assert landed_numbers(sink) == [[2, 3]] and sink.batches[0][2] is None
    assert wal.records == []


def test_replay_lands_a_logged_record_under_its_own_lsn(tmp_path):
    sink, wal = MemorySink(), MemoryLog()
    data = b'{"n": 0}{"n": 1}'
    record = Record(7, TABLE, np.array([0, 8, 8, 16], np.int64), data, b"")

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, wal=wal) as pipeline:
            receipt = ReceiptBook(60).issue(TABLE, 2, 0, None)
            pipeline.replay(record, receipt)
            await pipeline.drain()
            return receipt

    receipt = run(scenario)
    assert landed_numbers(sink) == [[0, 1]] and sink.batches[0][2] == BatchId(7, 7)
    assert wal.records == []  # not logged a second time
    assert wal.settled == {TABLE: 7}
    assert receipt.status == "landed"


def test_a_batch_seals_by_age_on_the_injected_clock(tmp_path):
    sink, clock = MemorySink(), FakeClock()

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink, clock=clock, flush_interval=5) as pipeline:
            receipt = ReceiptBook(60).issue(TABLE, 1, 0, None)
            pipeline.append_lines(lines(0), receipt=receipt)
            clock.advance(4.9)
            assert pipeline.counters.batches_sealed["age"] == 0
            clock.advance(0.1)
            await receipt.finished()
            return pipeline.counters

    counters = run(scenario)
    assert counters.batches_sealed["age"] == 1 and landed_numbers(sink) == [[0]]


def test_the_books_balance_while_the_sink_is_down(tmp_path):
    sink = MemorySink()
    sink.down = True

    async def scenario():
        async with pipeline_for(tmp_path, sink=sink) as pipeline:
            pipeline.append_lines(lines(0, 1, 2, bad=[2]))
            pipeline.seal("shutdown")
            while pipeline.counters.retries < 2:  # poll: the write is being retried
                await asyncio.sleep(0.001)
            assert balanced(pipeline) and pipeline.buffered == 2 and pipeline.counters.rejected == 1
            sink.down = False
            await pipeline.drain()
            assert balanced(pipeline) and pipeline.buffered == 0
            return pipeline.counters

    counters = run(scenario)
    assert (counters.received, counters.landed, counters.rejected, counters.dead_lettered) == (3, 2, 1, 0)
