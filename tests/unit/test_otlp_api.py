"""The OTLP API in-process: AnyValues as JSON, records that cannot be rows
counted in partial_success, and every overload answer one the real OTLP/HTTP
exporter retries."""
from __future__ import annotations

import asyncio
import json

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from ingest.core.budget import MemoryBudget
from ingest.core.health import SinkHealth
from ingest.core.ports import LogUnavailable
from ingest.core.receipts import IdempotencyKeys, ReceiptBook
from ingest.schema import conform_batch
from ingest.server.webhooks import Webhooks
from ingest.sources.base import IntakeContext
from ingest.sources.formats import otlp
from ingest.sources.http.otlp_api import OtlpApi, routes
from ingest.sources.http.responses import Reply
from ingest.sources.http.router import Request

PROTOBUF = "application/x-protobuf"

try:  # the exporter's own set (opentelemetry-exporter-otlp 1.4x); older releases inline it
    from opentelemetry.exporter.otlp.common.http import _is_retryable
except ImportError:
    def _is_retryable(status: int) -> bool:  # the OTLP/HTTP spec's retryable statuses
        return status in (429, 502, 503, 504)


class RecordingPipeline:
    def __init__(self, log_unavailable=False):
        self.calls = []
        self.log_unavailable = log_unavailable

    def append_batch(self, batch, *, receipt=None, meta=b"", keyed=False):
        if self.log_unavailable:
            raise LogUnavailable("disk full")
        self.calls.append(("batch", batch.to_pylist()))

    def rejected_at_source(self, lines, errors, source):
        self.calls.append(("rejected", lines, errors))

    @staticmethod
    def conform(batch):
        return conform_batch(batch)


def intake(tmp_path, pipeline, draining=lambda: False) -> IntakeContext:
    return IntakeContext(
        pipeline=lambda table: pipeline, budget=MemoryBudget(1 << 24), wal=None, sink_health=SinkHealth(),
        receipts=ReceiptBook(60), idempotency=IdempotencyKeys(60), webhooks=Webhooks("", [], tmp_path / "failed"),
        draining=draining, max_body_bytes=1 << 24, max_line_bytes=1 << 20,
        observe_http=lambda route, status: None)


def otlp_api(tmp_path, pipeline, draining=lambda: False) -> OtlpApi:
    return OtlpApi(intake(tmp_path, pipeline, draining))


def post(api: OtlpApi, signal: str, content_type: str, body: bytes) -> Reply:
    async def answer():
        reply = api.export(signal, Request("POST", f"/v1/{signal}", {}, None, {"content-type": content_type}, body,
                                           "127.0.0.1:1"))
        return reply if isinstance(reply, Reply) else await reply
    return asyncio.run(answer())


def logs_body(*trace_ids: bytes) -> bytes:
    request = logs_service_pb2.ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for trace_id in trace_ids:
        records.add(time_unix_nano=1_700_000_000_123_456_789, trace_id=trace_id).body.string_value = "hello"
    return request.SerializeToString()


def test_any_values_are_natural_json():
    value = common_pb2.AnyValue()
    entries = value.kvlist_value.values
    for key, field, item in (("s", "string_value", "x"), ("i", "int_value", -3), ("b", "bool_value", True),
                             ("d", "double_value", 1.5), ("nan", "double_value", float("nan")),
                             ("raw", "bytes_value", b"\xff")):
        setattr(entries.add(key=key).value, field, item)
    entries.add(key="list").value.array_value.values.add().int_value = 7
    entries.add(key="unset")
    assert otlp.any_value(value) == {"s": "x", "i": -3, "b": True, "d": 1.5, "nan": "NaN", "raw": "/w==",
                                     "list": [7], "unset": None}
    assert otlp.body_text(value).startswith('{"s":"x"')


def test_a_record_with_a_bad_id_is_a_partial_success_kept_for_the_dead_letter_store(tmp_path):
    pipeline = RecordingPipeline()
    reply = post(otlp_api(tmp_path, pipeline), "logs", PROTOBUF, logs_body(bytes(range(16)), b"abc"))
    assert reply.status == 200 and reply.content_type == PROTOBUF
    answer = logs_service_pb2.ExportLogsServiceResponse.FromString(reply.body)
    assert answer.partial_success.rejected_log_records == 1
    assert "traceId has 3 bytes" in answer.partial_success.error_message
    (_, rows), (_, lines, errors) = pipeline.calls
    assert [row["TraceId"] for row in rows] == [bytes(range(16)).hex()]
    assert rows[0]["Timestamp"].microsecond == 123456
    assert json.loads(lines[0])["body"] == {"stringValue": "hello"} and "traceId" in errors[0]


def test_otlp_json_ids_must_be_hex(tmp_path):
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"not hex"}]}]}]}'
    reply = post(otlp_api(tmp_path, RecordingPipeline()), "logs", "application/json", body)
    refusal = json.loads(reply.body)
    assert reply.status == 400 and refusal["code"] == 3 and "not hex" in refusal["message"]


def test_a_bad_protobuf_body_is_a_400_status_in_protobuf(tmp_path):
    reply = post(otlp_api(tmp_path, RecordingPipeline()), "traces", PROTOBUF, b"\x0a\xff")
    assert reply.status == 400 and status_pb2.Status.FromString(reply.body).code == 3


def test_overload_answers_are_what_the_exporter_retries_after_retry_after(tmp_path):
    for route in routes(intake(tmp_path, RecordingPipeline(), draining=lambda: True)):  # asked before the body is read
        refused = route.admit()
        assert _is_retryable(refused.status) and dict(refused.headers)["Retry-After"]
    reply = post(otlp_api(tmp_path, RecordingPipeline(log_unavailable=True)), "logs", PROTOBUF, logs_body(b""))
    assert _is_retryable(reply.status) and dict(reply.headers)["Retry-After"]
    assert status_pb2.Status.FromString(reply.body).code == 14
    assert not _is_retryable(post(otlp_api(tmp_path, RecordingPipeline()), "logs", PROTOBUF, b"\xff").status)


def test_metric_types_with_no_table_yet_are_a_partial_success_per_data_point(tmp_path):
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    summary = metrics.add(name="rpc.duration").summary.data_points
    summary.add(time_unix_nano=1, count=3)
    summary.add(time_unix_nano=2, count=4)
    metrics.add(name="up").gauge.data_points.add(time_unix_nano=1, as_int=1)
    pipeline = RecordingPipeline()
    reply = post(otlp_api(tmp_path, pipeline), "metrics", "application/json",
                 json_format.MessageToJson(request).encode())
    assert reply.status == 200 and json.loads(reply.body)["partialSuccess"]["rejectedDataPoints"] == "2"
    (_, rows), (_, lines, errors) = pipeline.calls
    assert [(row["MetricName"], row["Value"]) for row in rows] == [("up", 1.0)]
    assert len(lines) == 2 and "summary data is not stored" in errors[0]
