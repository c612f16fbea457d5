"""OTLP/HTTP intake (POST /v1/logs, /v1/traces) driven by the real,
unmodified OpenTelemetry SDK and its OTLP/HTTP exporter against the server
as a subprocess: rows land in otel_logs and otel_traces laid out as
ClickHouse's exporter lays them out."""
from __future__ import annotations

import base64
import gzip
import json
import logging

import pytest

from conftest import poll
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.metrics import Observation
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
WRITER, OTHER_WRITER = "w" * 32, "o" * 32
AUTH_CONFIG = f"""
[[auth.tokens]]
name = "collector"
secret = "{WRITER}"
scopes = ["write"]
tables = ["otel_*"]

[[auth.tokens]]
name = "events-only"
secret = "{OTHER_WRITER}"
scopes = ["write"]
tables = ["events"]

[[auth.tokens]]
name = "ops"
secret = "{"a" * 32}"
scopes = ["admin"]
"""


def count(server, table: str) -> int:
    """Rows in the sink; 0 while the table does not exist yet (its first batch has not landed)."""
    status, _, payload = server.http("POST", "/v1/query", f"SELECT count(*) AS n FROM {table}".encode())
    if status != 200:
        return 0
    import pyarrow as pa
    return pa.ipc.open_stream(payload).read_all().to_pylist()[0]["n"]


def wait_rows(server, table: str, rows: int) -> None:
    poll(lambda: count(server, table) >= rows, what=f"{rows} rows in {table}")


def providers(port: int, service: str, **exporter_options):
    """A TracerProvider and a LoggerProvider exporting to the server with the real OTLP/HTTP exporters."""
    resource = Resource.create({"service.name": service, "deployment.environment": "test"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", **exporter_options)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", **exporter_options)))
    return tracer_provider, logger_provider


def emit(tracer_provider, logger_provider, logger_name: str):
    """A parent span with a child, and a log record inside the child; returns (parent, child)."""
    tracer = tracer_provider.get_tracer("checkout-lib", "1.2.3")
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    try:
        with tracer.start_as_current_span("checkout", attributes={"cart.items": 3, "cart.tags": ["a", "b"]}) as parent:
            with tracer.start_as_current_span("charge card") as child:
                child.add_event("card declined", {"retry": True})
                logger.warning("payment failed for order %s", 42, extra={"order.id": 42, "amount": 9.5})
    finally:
        logger.removeHandler(handler)
    assert tracer_provider.force_flush() and logger_provider.force_flush()
    return parent, child


def test_the_sdks_logs_and_spans_land_as_clickhouse_lays_them_out(start_server):
    server = start_server("--flush-interval", 20)
    tracer_provider, logger_provider = providers(server.http_port, "checkout")
    parent, child = emit(tracer_provider, logger_provider, "otlp-test-plain")
    wait_rows(server, "otel_traces", 2)
    wait_rows(server, "otel_logs", 1)
    spans = {row["SpanName"]: row for row in server.query("SELECT * FROM otel_traces").to_pylist()}
    trace_id = f"{child.get_span_context().trace_id:032x}"
    assert spans["charge card"]["TraceId"] == spans["checkout"]["TraceId"] == trace_id
    assert spans["charge card"]["SpanId"] == f"{child.get_span_context().span_id:016x}"
    parent_id = f"{parent.get_span_context().span_id:016x}"
    assert spans["charge card"]["ParentSpanId"] == spans["checkout"]["SpanId"] == parent_id
    assert spans["checkout"]["ParentSpanId"] == ""
    assert spans["checkout"]["ServiceName"] == "checkout" and spans["checkout"]["SpanKind"] == "Internal"
    assert spans["checkout"]["ScopeName"] == "checkout-lib" and spans["checkout"]["ScopeVersion"] == "1.2.3"
    assert json.loads(spans["checkout"]["SpanAttributes"]) == {"cart.items": 3, "cart.tags": ["a", "b"]}
    assert json.loads(spans["checkout"]["ResourceAttributes"])["deployment.environment"] == "test"
    assert all(row["Duration"] > 0 for row in spans.values())
    assert spans["checkout"]["Duration"] >= spans["charge card"]["Duration"]
    events = json.loads(spans["charge card"]["Events"])
    assert [(e["Name"], e["Attributes"]) for e in events] == [("card declined", {"retry": True})]
    assert spans["checkout"]["StatusCode"] == "Unset" and json.loads(spans["checkout"]["Links"]) == []
    [record] = server.query("SELECT * FROM otel_logs").to_pylist()
    assert record["Body"] == "payment failed for order 42"
    assert record["SeverityText"] == "WARN" and record["SeverityNumber"] == 13
    assert record["TraceId"] == trace_id and record["SpanId"] == spans["charge card"]["SpanId"]
    assert record["ServiceName"] == "checkout" and record["Timestamp"] is not None
    attributes = json.loads(record["LogAttributes"])
    assert attributes["order.id"] == 42 and attributes["amount"] == 9.5
    # a query over the json columns, as the README gives it
    [found] = server.query("SELECT ServiceName, LogAttributes->>'$.\"order.id\"' AS order_id FROM otel_logs "
                           "WHERE SeverityNumber >= 13").to_pylist()
    assert found == {"ServiceName": "checkout", "order_id": "42"}
    server.assert_accounted()
    assert server.stop() == 0


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_compressed_exports_land(start_server, compression):
    server = start_server("--flush-interval", 20)
    tracer_provider, logger_provider = providers(server.http_port, "zipped", compression=compression)
    emit(tracer_provider, logger_provider, f"otlp-test-{compression.value}")
    wait_rows(server, "otel_traces", 2)
    wait_rows(server, "otel_logs", 1)
    assert server.query("SELECT DISTINCT ServiceName FROM otel_traces").to_pylist() == [{"ServiceName": "zipped"}]
    assert server.stop() == 0


def span_json(trace_id: str, span_id: str, name: str, **extra) -> dict:
    return {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000250000000", **extra}


def test_an_otlp_json_body_with_hex_ids_lands_and_a_bad_span_is_a_partial_success(start_server):
    server = start_server("--flush-interval", 20)
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "by-hand"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [
            span_json(trace_id, span_id, "GET /", parentSpanId="", status={"code": 2, "message": "boom"},
                      attributes=[{"key": "http.status", "value": {"intValue": "500"}},
                                  {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
                                  {"key": "nested", "value": {"kvlistValue": {"values": [
                                      {"key": "ok", "value": {"boolValue": False}}]}}}],
                      links=[{"traceId": trace_id, "spanId": "0102030405060708"}]),
            span_json(trace_id, "", "no span id"),
        ]}]}]}
    status, headers, payload = server.http("POST", "/v1/traces", json.dumps(body).encode(), JSON)
    assert status == 200 and headers["Content-Type"] == "application/json", payload
    answer = json_format.Parse(payload, trace_service_pb2.ExportTraceServiceResponse())
    assert answer.partial_success.rejected_spans == 1
    assert "dead-letter" in answer.partial_success.error_message and "spanId" in answer.partial_success.error_message
    wait_rows(server, "otel_traces", 1)
    [row] = server.query("SELECT * FROM otel_traces").to_pylist()
    assert (row["TraceId"], row["SpanId"], row["SpanName"]) == (trace_id, span_id, "GET /")
    assert row["SpanKind"] == "Server" and row["StatusCode"] == "Error" and row["StatusMessage"] == "boom"
    assert row["Duration"] == 250_000_000 and str(row["Timestamp"]).startswith("2023-11-14 22:13:20")
    assert json.loads(row["SpanAttributes"]) == {"http.status": 500, "raw": "AAE=", "nested": {"ok": False}}
    assert json.loads(row["Links"])[0]["SpanId"] == "0102030405060708"
    counts = server.assert_accounted()["otel_traces"]
    assert counts["rejected"] == 1  # the span without a span id, kept in the dead-letter store
    assert server.stop() == 0


def test_a_log_body_that_is_not_a_string_is_its_json_text(start_server):
    server = start_server("--flush-interval", 20)
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"observedTimeUnixNano": "1700000000000000000", "severityNumber": 9,
         "body": {"kvlistValue": {"values": [{"key": "event", "value": {"stringValue": "login"}}]}}}]}]}]}
    status, _, payload = server.http("POST", "/v1/logs", json.dumps(body).encode(), JSON)
    assert status == 200 and json.loads(payload) == {}, payload
    wait_rows(server, "otel_logs", 1)
    [row] = server.query("SELECT Body, Timestamp, TraceId, ServiceName FROM otel_logs").to_pylist()
    assert json.loads(row["Body"]) == {"event": "login"}
    assert str(row["Timestamp"]).startswith("2023-11-14 22:13:20")  # ObservedTimestamp: no TimeUnixNano given
    assert row["TraceId"] == "" and row["ServiceName"] == ""
    assert server.stop() == 0


def test_a_body_that_cannot_be_read_is_a_400_status_and_the_server_goes_on(start_server):
    server = start_server("--flush-interval", 20)
    status, headers, payload = server.http("POST", "/v1/logs", b"\xff\xff\xff\xff not protobuf", PROTOBUF)
    assert status == 400 and headers["Content-Type"] == "application/x-protobuf"
    refusal = status_pb2.Status.FromString(payload)
    assert refusal.code == 3 and "protobuf" in refusal.message
    status, _, payload = server.http("POST", "/v1/traces", b'{"resourceSpans": 7}', JSON)
    assert status == 400 and json.loads(payload)["code"] == 3
    status, _, payload = server.http("POST", "/v1/traces", b"\x1f\x8b not gzip",
                                     {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 400
    status, _, payload = server.http("POST", "/v1/logs", b"x", {"Content-Type": "text/plain"})
    assert status == 415
    request = logs_service_pb2.ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=1, severity_text="INFO")
    record.body.string_value = "fine"
    status, headers, payload = server.http("POST", "/v1/logs", gzip.compress(request.SerializeToString()),
                                           {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert not logs_service_pb2.ExportLogsServiceResponse.FromString(payload).HasField("partial_success")
    wait_rows(server, "otel_logs", 1)
    assert server.stop() == 0


def captured_spans():
    """Finished spans from the SDK, kept in memory, to hand to an OTLP exporter by hand."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "guarded"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(10):
        with tracer.start_as_current_span(f"span {i}"):
            pass
    return memory.get_finished_spans()


def test_tokens_guard_otlp_intake(start_server, tmp_path):
    config = tmp_path / "auth.toml"
    config.write_text(AUTH_CONFIG)
    server = start_server("--config", config, "--flush-interval", 20)
    endpoint = f"http://127.0.0.1:{server.http_port}/v1/traces"
    spans = captured_spans()
    assert OTLPSpanExporter(endpoint=endpoint).export(spans) == SpanExportResult.FAILURE
    for signal in ("logs", "traces", "metrics"):
        status, headers, _ = server.http("POST", f"/v1/{signal}", b"", PROTOBUF)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, payload = server.http("POST", "/v1/traces", b"",
                                     {**PROTOBUF, "Authorization": f"Bearer {OTHER_WRITER}"})
    assert status == 403 and "otel_traces" in status_pb2.Status.FromString(payload).message
    exporter = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": f"Bearer {WRITER}"})
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    server.authorization = f"Bearer {'a' * 32}"
    wait_rows(server, "otel_traces", 10)
    assert server.stop() == 0


def test_the_exporter_retries_a_429_after_its_retry_after_and_lands(start_server, tmp_path):
    config = tmp_path / "quota.toml"
    config.write_text(AUTH_CONFIG.replace('tables = ["otel_*"]', 'tables = ["otel_*"]\nevents_per_second = 2'))
    server = start_server("--config", config, "--flush-interval", 20)
    # a timeout past the Retry-After (4 s): 10 spans leave the bucket 4 s in debt, room for a slow machine
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.http_port}/v1/traces",
                                headers={"Authorization": f"Bearer {WRITER}"}, timeout=30)
    spans = captured_spans()
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # five seconds' worth of the quota: the next waits
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # answered 429 with Retry-After first, then taken
    server.authorization = f"Bearer {'a' * 32}"
    limited = server.metrics()
    assert limited[("ingest_refusals_total", frozenset({("reason", "rate_limited"), ("token", "collector")}))] >= 1
    wait_rows(server, "otel_traces", 20)
    assert server.stop() == 0


def test_an_answered_export_survives_a_kill_9(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--flush-interval", 60_000, data_dir=data_dir)  # the rows wait in the write-ahead log
    tracer_provider, logger_provider = providers(server.http_port, "crashy")
    emit(tracer_provider, logger_provider, "otlp-test-crash")  # force_flush: every export was answered 200
    server.stop(sig=9)
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    wait_rows(server, "otel_traces", 2)
    wait_rows(server, "otel_logs", 1)
    assert (count(server, "otel_traces"), count(server, "otel_logs")) == (2, 1)
    assert server.stop() == 0


def test_the_sdks_metrics_land_one_row_per_data_point_by_type(start_server):
    server = start_server("--flush-interval", 20)
    exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{server.http_port}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)  # exported on force_flush only
    provider = MeterProvider(resource=Resource.create({"service.name": "metered"}), metric_readers=[reader])
    meter = provider.get_meter("shop", "0.1")
    orders = meter.create_counter("orders", unit="1", description="orders placed")
    orders.add(2, {"region": "eu"})
    orders.add(3, {"region": "eu"})
    meter.create_histogram("latency", unit="ms").record(12.5)
    meter.create_observable_gauge("queue.depth", callbacks=[lambda options: [Observation(7, {"queue": "a"})]])
    assert provider.force_flush()
    for table in ("otel_metrics_sum", "otel_metrics_histogram", "otel_metrics_gauge"):
        wait_rows(server, table, 1)
    [total] = server.query("SELECT * FROM otel_metrics_sum").to_pylist()
    assert (total["MetricName"], total["Value"], total["IsMonotonic"]) == ("orders", 5.0, True)
    assert total["ServiceName"] == "metered"
    assert json.loads(total["Attributes"]) == {"region": "eu"} and total["AggregationTemporality"] == 2  # cumulative
    assert total["ScopeName"] == "shop" and total["MetricDescription"] == "orders placed"
    [latency] = server.query("SELECT * FROM otel_metrics_histogram").to_pylist()
    assert (latency["Count"], latency["Sum"], latency["Min"], latency["Max"]) == (1, 12.5, 12.5, 12.5)
    assert sum(latency["BucketCounts"]) == 1 and len(latency["BucketCounts"]) == len(latency["ExplicitBounds"]) + 1
    [depth] = server.query("SELECT MetricName, Value, Attributes FROM otel_metrics_gauge").to_pylist()
    assert depth == {"MetricName": "queue.depth", "Value": 7.0, "Attributes": '{"queue":"a"}'}
    provider.shutdown()
    assert server.stop() == 0


def test_a_large_body_is_decoded_beside_the_loop_and_lands_whole(start_server):
    server = start_server("--flush-interval", 20)
    request = logs_service_pb2.ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for i in range(3000):
        records.add(time_unix_nano=1_700_000_000_000_000_000 + i).body.string_value = f"line {i} " + "x" * 40
    body = request.SerializeToString()
    assert len(body) >= 64 << 10  # the parse pool's threshold
    status, _, payload = server.http("POST", "/v1/logs", body, PROTOBUF)
    assert status == 200 and not logs_service_pb2.ExportLogsServiceResponse.FromString(payload).HasField("partial_success")
    wait_rows(server, "otel_logs", 3000)
    assert count(server, "otel_logs") == 3000
    assert server.stop() == 0
