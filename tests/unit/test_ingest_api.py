"""The ingest API in-process: a body format registered in sources/formats
reaches the pipeline through the one intake API, lines or Arrow rows."""
from __future__ import annotations

import asyncio
import json

import pyarrow as pa

from ingest.core.budget import MemoryBudget
from ingest.core.health import SinkHealth
from ingest.core.receipts import IdempotencyKeys, ReceiptBook
from ingest.server.webhooks import Webhooks
from ingest.sources import formats
from ingest.sources.base import IntakeContext
from ingest.sources.formats.base import Decoded
from ingest.sources.http.ingest_api import IngestApi
from ingest.sources.http.responses import Reply
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


def ingest_api(tmp_path, pipeline) -> IngestApi:
    return IngestApi(IntakeContext(
        pipeline=lambda table: pipeline, budget=MemoryBudget(1 << 20), wal=None, sink_health=SinkHealth(),
        receipts=ReceiptBook(60), idempotency=IdempotencyKeys(60), webhooks=Webhooks("", [], tmp_path / "failed"),
        draining=lambda: False, max_body_bytes=1 << 20, max_line_bytes=1 << 20,
        observe_http=lambda route, status: None))


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
