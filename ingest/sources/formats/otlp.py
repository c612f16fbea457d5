"""OTLP/HTTP bodies (OpenTelemetry logs, traces and metrics): an
Export*ServiceRequest, protobuf (application/x-protobuf) or OTLP/JSON
(application/json), turned into one Arrow batch per table, its rows laid out
as ClickHouse's OpenTelemetry exporter lays them out (otel_logs, otel_traces,
otel_metrics_gauge, otel_metrics_sum, otel_metrics_histogram; exponential
histograms and summaries are refused as a partial success for now).

Attribute maps are JSON objects (AnyValue as natural JSON; bytes as base64),
ids lowercase hex, timestamps µs UTC, Duration in nanoseconds. A record that
cannot be a row (an id of the wrong length) is kept as its OTLP/JSON text
with the reason, for the dead-letter store and the partial_success answer.

The opentelemetry and protobuf modules are imported on the first body, not
when the server starts.
"""
from __future__ import annotations

import base64
import functools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace

import pyarrow as pa

from ingest.sources.formats.base import InvalidBody
from ingest.sources.sdk import SdkSource

PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
MEDIA_TYPES = (PROTOBUF_TYPE, JSON_TYPE)

TRACE_ID_BYTES, SPAN_ID_BYTES = 16, 8
# as ClickHouse's exporter names them
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as protobuf's JSON mapping writes them

LOG_COLUMNS = {
    "Timestamp": "timestamp",
    "TraceId": "string",
    "SpanId": "string",
    "TraceFlags": "int64",
    "SeverityText": "string",
    "SeverityNumber": "int64",
    "ServiceName": "string",
    "Body": "string",
    "ResourceSchemaUrl": "string",
    "ResourceAttributes": "json",
    "ScopeSchemaUrl": "string",
    "ScopeName": "string",
    "ScopeVersion": "string",
    "ScopeAttributes": "json",
    "LogAttributes": "json",
}
SPAN_COLUMNS = {
    "Timestamp": "timestamp",
    "TraceId": "string",
    "SpanId": "string",
    "ParentSpanId": "string",
    "TraceState": "string",
    "SpanName": "string",
    "SpanKind": "string",
    "ServiceName": "string",
    "ResourceAttributes": "json",
    "ScopeName": "string",
    "ScopeVersion": "string",
    "SpanAttributes": "json",
    "Duration": "int64",
    "StatusCode": "string",
    "StatusMessage": "string",
    "Events": "json",
    "Links": "json",
}

METRIC_COLUMNS = {  # what every metric table holds, one row per data point
    "ResourceAttributes": "json",
    "ResourceSchemaUrl": "string",
    "ScopeName": "string",
    "ScopeVersion": "string",
    "ScopeAttributes": "json",
    "ScopeSchemaUrl": "string",
    "ServiceName": "string",
    "MetricName": "string",
    "MetricDescription": "string",
    "MetricUnit": "string",
    "Attributes": "json",
    "StartTimeUnix": "timestamp",
    "TimeUnix": "timestamp",
    "Flags": "int64",
    "Exemplars": "json",
}
GAUGE_COLUMNS = {**METRIC_COLUMNS, "Value": "float64"}
SUM_COLUMNS = {**GAUGE_COLUMNS, "AggregationTemporality": "int64", "IsMonotonic": "bool"}
HISTOGRAM_COLUMNS = {**METRIC_COLUMNS, "Count": "int64", "Sum": "float64", "BucketCounts": "list<int64>",
                     "ExplicitBounds": "list<float64>", "Min": "float64", "Max": "float64",
                     "AggregationTemporality": "int64"}
METRIC_KINDS = {"gauge": ("metrics_gauge", GAUGE_COLUMNS), "sum": ("metrics_sum", SUM_COLUMNS),
                "histogram": ("metrics_histogram", HISTOGRAM_COLUMNS)}  # Metric.data -> (kind, its columns)
SIGNAL_KINDS = {"logs": ("logs",), "traces": ("traces",), "metrics": tuple(kind for kind, _ in METRIC_KINDS.values())}

SOURCE = SdkSource("otlp", {"logs": "otel_logs", "traces": "otel_traces", "metrics_gauge": "otel_metrics_gauge",
                            "metrics_sum": "otel_metrics_sum", "metrics_histogram": "otel_metrics_histogram"},
                   {"logs": LOG_COLUMNS, "traces": SPAN_COLUMNS, "metrics_gauge": GAUGE_COLUMNS,
                    "metrics_sum": SUM_COLUMNS, "metrics_histogram": HISTOGRAM_COLUMNS})

# the Arrow type each declared type string is built as here; conform() then applies the table's declaration
ARROW_TYPES = {"timestamp": pa.timestamp("us", tz="UTC"), "string": pa.string(), "json": pa.string(),
               "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
               "list<int64>": pa.list_(pa.int64()), "list<float64>": pa.list_(pa.float64())}


@dataclass
class Converted:
    """An OTLP request as rows: kind ("logs", "traces") -> its batch, and the
    records that could not be rows."""

    signal: str  # "logs", "traces" or "metrics"
    batches: dict[str, pa.RecordBatch] = field(default_factory=dict)
    rejected: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)  # kind -> (record as JSON, reason)

    @property
    def rows(self) -> int:
        return sum(batch.num_rows for batch in self.batches.values())

    @property
    def rejected_count(self) -> int:
        return sum(len(records) for records in self.rejected.values())


@functools.cache
def messages() -> SimpleNamespace:
    """The protobuf classes, imported on first use (some tens of ms)."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    return SimpleNamespace(
        json_format=json_format, DecodeError=DecodeError,
        requests={"logs": logs_service_pb2.ExportLogsServiceRequest,
                  "traces": trace_service_pb2.ExportTraceServiceRequest,
                  "metrics": metrics_service_pb2.ExportMetricsServiceRequest},
        responses={"logs": logs_service_pb2.ExportLogsServiceResponse,
                   "traces": trace_service_pb2.ExportTraceServiceResponse,
                   "metrics": metrics_service_pb2.ExportMetricsServiceResponse})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def parse_request(signal: str, media: str, body: bytes):
    """The Export*ServiceRequest in a body; InvalidBody when it is not one."""
    m = messages()
    request = m.requests[signal]()
    if media == PROTOBUF_TYPE:
        try:
            request.ParseFromString(body)
        except (m.DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: nesting past the recursion limit
            raise InvalidBody(f"not an OTLP {signal} protobuf body: {exc}") from None
        return request
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidBody(f"not an OTLP/JSON {signal} body: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidBody(f"not an OTLP/JSON {signal} body: the body is not a JSON object")
    try:
        _ids_hex_to_base64(signal, document)
        m.json_format.ParseDict(document, request, ignore_unknown_fields=True)  # the spec: unknown fields are ignored
    except (m.json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidBody(f"not an OTLP/JSON {signal} body: {exc}") from None
    return request


def _ids_hex_to_base64(signal: str, document: dict) -> None:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON
    mapping reads bytes as base64: rewritten in place before parsing."""
    if signal == "metrics":
        for resource in _items(document, "resourceMetrics"):
            for scope in _items(resource, "scopeMetrics"):
                for metric in _items(scope, "metrics"):
                    for data in metric.values() if isinstance(metric, dict) else ():
                        for point in _items(data, "dataPoints"):
                            for exemplar in _items(point, "exemplars"):
                                _rewrite_ids(exemplar)
        return
    resources, scopes, records = (("resourceLogs", "scopeLogs", "logRecords") if signal == "logs"
                                  else ("resourceSpans", "scopeSpans", "spans"))
    for resource in _items(document, resources):
        for scope in _items(resource, scopes):
            for record in _items(scope, records):
                _rewrite_ids(record)
                for link in _items(record, "links"):
                    _rewrite_ids(link)


def _items(parent, key: str) -> list:
    found = parent.get(key) if isinstance(parent, dict) else None
    return found if isinstance(found, list) else []


def _rewrite_ids(record) -> None:
    if not isinstance(record, dict):
        return
    for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
        value = record.get(key)
        if isinstance(value, str):
            try:
                record[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise ValueError(f"{key} {value[:64]!r} is not hex") from None


def decode(signal: str, content_type: str | None, body: bytes) -> Converted:
    """An OTLP/HTTP body of `signal` ("logs", "traces" or "metrics") as rows;
    InvalidBody when it cannot be read at all."""
    request = parse_request(signal, media_type(content_type), body)
    return CONVERTERS[signal](request)


# ---------------------------------------------------------------------------
# Messages -> rows


def convert_logs(request) -> Converted:
    columns = {name: [] for name in LOG_COLUMNS}
    rejected = []
    for resource_logs in request.resource_logs:
        resource_attributes = attributes(resource_logs.resource.attributes)
        service = resource_attributes.get("service.name")
        resource_json = json_text(resource_attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            scope_json = json_text(attributes(scope.attributes))
            for record in scope_logs.log_records:
                problem = _id_problem(record.trace_id, record.span_id)
                if problem:
                    rejected.append((_record_json(record), problem))
                    continue
                nanos = record.time_unix_nano or record.observed_time_unix_nano
                columns["Timestamp"].append(nanos // 1000 if nanos else None)
                columns["TraceId"].append(record.trace_id.hex())
                columns["SpanId"].append(record.span_id.hex())
                columns["TraceFlags"].append(record.flags & 0xFF)
                columns["SeverityText"].append(record.severity_text)
                columns["SeverityNumber"].append(int(record.severity_number))
                columns["ServiceName"].append(service if isinstance(service, str) else "")
                columns["Body"].append(body_text(record.body) if record.HasField("body") else None)
                columns["ResourceSchemaUrl"].append(resource_logs.schema_url)
                columns["ResourceAttributes"].append(resource_json)
                columns["ScopeSchemaUrl"].append(scope_logs.schema_url)
                columns["ScopeName"].append(scope.name)
                columns["ScopeVersion"].append(scope.version)
                columns["ScopeAttributes"].append(scope_json)
                columns["LogAttributes"].append(json_text(attributes(record.attributes)))
    converted = Converted("logs")
    if columns["Timestamp"]:
        converted.batches["logs"] = _batch(columns, LOG_COLUMNS)
    if rejected:
        converted.rejected["logs"] = rejected
    return converted


def convert_spans(request) -> Converted:
    columns = {name: [] for name in SPAN_COLUMNS}
    rejected = []
    for resource_spans in request.resource_spans:
        resource_attributes = attributes(resource_spans.resource.attributes)
        service = resource_attributes.get("service.name")
        resource_json = json_text(resource_attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                problem = _span_problem(span)
                if problem:
                    rejected.append((_record_json(span), problem))
                    continue
                columns["Timestamp"].append(span.start_time_unix_nano // 1000)
                columns["TraceId"].append(span.trace_id.hex())
                columns["SpanId"].append(span.span_id.hex())
                columns["ParentSpanId"].append(span.parent_span_id.hex())
                columns["TraceState"].append(span.trace_state)
                columns["SpanName"].append(span.name)
                columns["SpanKind"].append(_named(SPAN_KINDS, span.kind))
                columns["ServiceName"].append(service if isinstance(service, str) else "")
                columns["ResourceAttributes"].append(resource_json)
                columns["ScopeName"].append(scope.name)
                columns["ScopeVersion"].append(scope.version)
                columns["SpanAttributes"].append(json_text(attributes(span.attributes)))
                columns["Duration"].append(max(0, span.end_time_unix_nano - span.start_time_unix_nano))
                columns["StatusCode"].append(_named(STATUS_CODES, span.status.code))
                columns["StatusMessage"].append(span.status.message)
                columns["Events"].append(json_text([
                    {"Timestamp": iso_nanos(event.time_unix_nano), "Name": event.name,
                     "Attributes": attributes(event.attributes)} for event in span.events]))
                columns["Links"].append(json_text([
                    {"TraceId": link.trace_id.hex(), "SpanId": link.span_id.hex(), "TraceState": link.trace_state,
                     "Attributes": attributes(link.attributes)} for link in span.links]))
    converted = Converted("traces")
    if columns["Timestamp"]:
        converted.batches["traces"] = _batch(columns, SPAN_COLUMNS)
    if rejected:
        converted.rejected["traces"] = rejected
    return converted


def convert_metrics(request) -> Converted:
    """One row per data point, in the table of its metric's type."""
    tables = {kind: {name: [] for name in columns} for kind, columns in METRIC_KINDS.values()}
    rejected = []
    for resource_metrics in request.resource_metrics:
        resource_attributes = attributes(resource_metrics.resource.attributes)
        service = resource_attributes.get("service.name")
        shared = {"ResourceAttributes": json_text(resource_attributes),
                  "ResourceSchemaUrl": resource_metrics.schema_url,
                  "ServiceName": service if isinstance(service, str) else ""}
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            in_scope = {**shared, "ScopeName": scope.name, "ScopeVersion": scope.version,
                        "ScopeAttributes": json_text(attributes(scope.attributes)),
                        "ScopeSchemaUrl": scope_metrics.schema_url}
            for metric in scope_metrics.metrics:
                data_type = metric.WhichOneof("data")
                if data_type not in METRIC_KINDS:
                    reason = f"metric {metric.name!r}: {data_type or 'no'} data is not stored (yet)"
                    if data_type is None:
                        rejected.append((_record_json(metric), reason))
                    else:  # one per data point: partial_success counts data points
                        points = getattr(metric, data_type).data_points
                        rejected.extend((_record_json(point), reason) for point in points)
                    continue
                kind, _ = METRIC_KINDS[data_type]
                columns, data = tables[kind], getattr(metric, data_type)
                described = {**in_scope, "MetricName": metric.name, "MetricDescription": metric.description,
                             "MetricUnit": metric.unit}
                for point in data.data_points:
                    row = {**described, "Attributes": json_text(attributes(point.attributes)),
                           "StartTimeUnix": point.start_time_unix_nano // 1000 or None,
                           "TimeUnix": point.time_unix_nano // 1000, "Flags": point.flags,
                           "Exemplars": json_text([_exemplar(e) for e in point.exemplars])}
                    if data_type == "histogram":
                        row.update(Count=point.count, Sum=point.sum if point.HasField("sum") else None,
                                   BucketCounts=list(point.bucket_counts), ExplicitBounds=list(point.explicit_bounds),
                                   Min=point.min if point.HasField("min") else None,
                                   Max=point.max if point.HasField("max") else None,
                                   AggregationTemporality=int(data.aggregation_temporality))
                    else:
                        row["Value"] = _number(point)
                        if data_type == "sum":
                            row.update(AggregationTemporality=int(data.aggregation_temporality),
                                       IsMonotonic=data.is_monotonic)
                    for name, value in row.items():
                        columns[name].append(value)
    converted = Converted("metrics")
    for kind, columns_of_kind in METRIC_KINDS.values():
        if tables[kind]["TimeUnix"]:
            converted.batches[kind] = _batch(tables[kind], columns_of_kind)
    if rejected:
        converted.rejected["metrics_gauge"] = rejected  # kept beside the gauges: no table of their own yet
    return converted


def _number(point) -> float | None:
    """A NumberDataPoint's or Exemplar's value as a double (ClickHouse's exporter stores Float64 too)."""
    which = point.WhichOneof("value")
    return None if which is None else float(getattr(point, which))


def _exemplar(exemplar) -> dict:
    return {"FilteredAttributes": attributes(exemplar.filtered_attributes),
            "TimeUnix": iso_nanos(exemplar.time_unix_nano),
            "Value": _number(exemplar), "SpanId": exemplar.span_id.hex(), "TraceId": exemplar.trace_id.hex()}


CONVERTERS = {"logs": convert_logs, "traces": convert_spans, "metrics": convert_metrics}


def _id_problem(trace_id: bytes, span_id: bytes) -> str | None:
    """Why a log record's ids cannot be read (they are optional there), or None."""
    if len(trace_id) not in (0, TRACE_ID_BYTES):
        return f"traceId has {len(trace_id)} bytes, not {TRACE_ID_BYTES}"
    if len(span_id) not in (0, SPAN_ID_BYTES):
        return f"spanId has {len(span_id)} bytes, not {SPAN_ID_BYTES}"
    return None


def _span_problem(span) -> str | None:
    """Why a span cannot be a row (a span must carry both ids), or None."""
    if len(span.trace_id) != TRACE_ID_BYTES or not any(span.trace_id):
        return f"a span needs a traceId of {TRACE_ID_BYTES} bytes, not all zero (it has {len(span.trace_id)})"
    if len(span.span_id) != SPAN_ID_BYTES or not any(span.span_id):
        return f"a span needs a spanId of {SPAN_ID_BYTES} bytes, not all zero (it has {len(span.span_id)})"
    if len(span.parent_span_id) not in (0, SPAN_ID_BYTES):
        return f"parentSpanId has {len(span.parent_span_id)} bytes, not {SPAN_ID_BYTES}"
    return None


def _named(names: tuple, number: int) -> str:
    return names[number] if 0 <= number < len(names) else str(number)


def _record_json(record) -> bytes:
    """A record kept for the dead-letter store: its OTLP/JSON text (ids as protobuf's base64)."""
    return messages().json_format.MessageToJson(record, indent=None).encode()


def _batch(columns: dict[str, list], declared: dict[str, str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(columns[name], ARROW_TYPES[kind]) for name, kind in declared.items()],
                                      names=list(declared))


# ---------------------------------------------------------------------------
# AnyValue -> JSON


def any_value(value):
    """An OTLP AnyValue as natural JSON: bytes as base64, non-finite doubles as strings."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else NON_FINITE[str(number)]  # JSON has no NaN or Infinity
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes(pairs) -> dict:
    """A repeated KeyValue as a JSON object (a repeated key: the last one wins)."""
    return {pair.key: any_value(pair.value) for pair in pairs}


def body_text(value) -> str | None:
    """A log body: a string as it is, any other value as its JSON text."""
    if value.WhichOneof("value") == "string_value":
        return value.string_value
    converted = any_value(value)
    return None if converted is None else json_text(converted)


def json_text(document) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def iso_nanos(nanos: int) -> str:
    """A UTC time in nanoseconds as RFC 3339 text with all nine digits."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    try:
        whole = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return str(nanos)
    return f"{whole}.{fraction:09d}Z"
