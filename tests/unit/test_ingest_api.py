"""The ingest API in-process: a body format registered in sources/formats
reaches the pipeline through the one intake API, lines or Arrow rows."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from ingest.core.budget import MemoryBudget
from ingest.core.health import SinkHealth
from ingest.core.receipts import IdempotencyKeys, ReceiptBook
from ingest.schema import conform_batch
from ingest.server.webhooks import Webhooks
from ingest.sources import formats
from ingest.sources.base import IntakeContext
from ingest.sources.formats.base import Decoded
from ingest.sources.http.ingest_api import OFF_LOOP_BYTES, IngestApi
from ingest.sources.http.responses import HttpError, Reply
from ingest.sources.http.router import Request

ARROW_TEST_TYPE = "application/vnd.ingest-test.arrow"


class RecordingPipeline:
    """Takes what the API hands the pipeline, as a table's pipeline would."""

    def __init__(self):
        self.calls = []

    def append_lines(self, lines, rejected=(), *, receipt=None, meta=b"", keyed=False):
        self.calls.append(("lines", [lines.line(i) for i in range(lines.events)], list(rejected), receipt, keyed))

    def append_batch(self, batch, *, receipt=None, meta=b"", keyed=False):
        self.calls.append(("batch", batch.to_pylist(), [], receipt, keyed))

    def rejected_at_source(self, lines, errors, source):
        self.calls.append(("rejected", lines, errors, None, False))

    @staticmethod
    def conform(batch):
        return conform_batch(batch)


def ingest_api(tmp_path, pipeline, parse_pool=None, draining=lambda: False) -> IngestApi:
    return IngestApi(IntakeContext(
        pipeline=lambda table: pipeline, budget=MemoryBudget(1 << 24), wal=None, sink_health=SinkHealth(),
        receipts=ReceiptBook(60), idempotency=IdempotencyKeys(60), webhooks=Webhooks("", [], tmp_path / "failed"),
        draining=draining, max_body_bytes=1 << 24, max_line_bytes=1 << 20,
        observe_http=lambda route, status: None, parse_pool=parse_pool))


def post(api: IngestApi, content_type: str, body: bytes, headers: dict | None = None) -> Reply:
    """The API's answer, awaited on an event loop when it comes later (a keyed request's does)."""
    async def answer():
        reply = api.ingest(Request("POST", "/v1/ingest/t", {"table": "t"}, b"wait=none",
                                   {"content-type": content_type, **(headers or {})}, body, "127.0.0.1:1"))
        return reply if isinstance(reply, Reply) else await reply
    return asyncio.run(answer())


def test_a_columnar_format_lands_through_append_batch(tmp_path, monkeypatch):
    monkeypatch.setitem(formats.DECODERS, ARROW_TEST_TYPE,
                        lambda body: Decoded(batch=pa.ipc.open_stream(body).read_next_batch()))
    batch = pa.record_batch({"n": pa.array([1, 2, 3], pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    pipeline = RecordingPipeline()

    reply = post(ingest_api(tmp_path, pipeline), ARROW_TEST_TYPE, sink.getvalue().to_pybytes(),
                 {"idempotency-key": "k1"})

    assert reply.status == 202 and json.loads(reply.body)["accepted"] == 3
    ((kind, rows, rejected, receipt, keyed),) = pipeline.calls
    assert (kind, rows, rejected, keyed) == ("batch", [{"n": 1}, {"n": 2}, {"n": 3}], [], True)
    assert receipt is not None and receipt.accepted == 3


def test_ndjson_lands_through_append_lines_and_bad_lines_are_rejected_at_the_source(tmp_path):
    pipeline = RecordingPipeline()

    reply = post(ingest_api(tmp_path, pipeline), "application/x-ndjson", b'{"n":1}\nnot json\n{"n":2}\n')

    body = json.loads(reply.body)
    assert reply.status == 202 and (body["accepted"], body["rejected"]) == (2, 1)
    (lines, rejected) = pipeline.calls
    assert lines[:3] == ("lines", [b'{"n":1}', b"not json", b'{"n":2}'], [1])
    assert lines[4] is False  # no Idempotency-Key: the log record is not keyed
    assert rejected[0] == "rejected" and rejected[1] == [b"not json"]


class RecordingPool(ThreadPoolExecutor):
    """A real thread pool that counts what it was given."""

    def __init__(self):
        super().__init__(2)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_a_large_body_is_decoded_in_the_parse_pool_and_keeps_its_per_line_errors(tmp_path):
    lines = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * 60) for n in range(2_000)]
    lines[1234] = b'{"n": oops}'
    body = b"\n".join(lines) + b"\n"
    assert len(body) >= OFF_LOOP_BYTES
    pipeline = RecordingPipeline()
    with RecordingPool() as pool:
        reply = post(ingest_api(tmp_path, pipeline, pool), "application/x-ndjson", body, {"idempotency-key": "big"})

        assert pool.submitted == 1
    document = json.loads(reply.body)
    assert reply.status == 202 and (document["accepted"], document["rejected"]) == (1_999, 1)
    assert document["errors"][0]["line"] == 1235
    (appended, rejected) = pipeline.calls
    assert appended[0] == "lines" and len(appended[1]) == 2_000 and appended[2] == [1234] and appended[4] is True
    assert rejected[1] == [b'{"n": oops}']


def test_a_small_body_is_decoded_on_the_loop(tmp_path):
    pipeline = RecordingPipeline()
    with RecordingPool() as pool:
        reply = post(ingest_api(tmp_path, pipeline, pool), "application/x-ndjson", b'{"n":1}\n')

        assert pool.submitted == 0
    assert reply.status == 202 and pipeline.calls[0][1] == [b'{"n":1}']


def test_a_large_body_still_being_decoded_when_shutdown_begins_is_refused_whole(tmp_path):
    pipeline, state = RecordingPipeline(), {"draining": False}

    class ShutdownWhileDecoding(RecordingPool):
        def submit(self, fn, /, *args, **kwargs):
            state["draining"] = True  # begins while the body is read in the pool
            return super().submit(fn, *args, **kwargs)

    with ShutdownWhileDecoding() as pool:
        api = ingest_api(tmp_path, pipeline, pool, draining=lambda: state["draining"])
        with pytest.raises(HttpError) as refused:
            post(api, "application/x-ndjson", b'{"n":1}\n' * (OFF_LOOP_BYTES // 8 + 1))

    assert refused.value.status == 503 and pipeline.calls == []


def test_idempotency_keys_are_bounded_whatever_the_window(monkeypatch):
    from ingest.core import receipts

    monkeypatch.setattr(receipts, "MAX_KEYS", 3)

    async def run():
        keys = IdempotencyKeys(86400)
        entries = [keys.begin(f"k{n}", "t", "d") for n in range(5)]
        entries[0].reply.set_result((200, b"", "application/json", ()))
        assert keys.find("k4", "t", "d") is entries[4]  # a look-up prunes: only the answered oldest may go
        assert keys.find("k0", "t", "d") is None and keys.find("k1", "t", "d") is entries[1]  # k1 still awaits its answer
        for entry in entries[1:]:
            entry.reply.set_result((200, b"", "application/json", ()))
        keys.find("k4", "t", "d")
        assert [keys.find(f"k{n}", "t", "d") is not None for n in range(5)] == [False, False, True, True, True]

    asyncio.run(run())
