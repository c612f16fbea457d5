"""POST /v1/logs, /v1/traces and /v1/metrics: OTLP/HTTP, so that an unmodified
OpenTelemetry SDK or Collector exports here by pointing its endpoint at
this server.

Each signal lands in the tables [sources.otlp] names for it (otel_logs,
otel_traces, otel_metrics_{gauge,sum,histogram}). The answer follows the OTLP/HTTP spec: 200 with an
Export*ServiceResponse in the request's encoding once the rows are durable
in the write-ahead log, its partial_success counting records that could not
be rows (kept in the dead-letter store); 400 with a google.rpc.Status for a
body that cannot be read; 415 for another Content-Type; 503 or 429 with
Retry-After, which exporters retry.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging

from ingest.core.ports import LogUnavailable
from ingest.sources.base import IntakeContext
from ingest.sources.formats import otlp
from ingest.sources.formats.base import InvalidBody
from ingest.sources.http.ingest_api import OFF_LOOP_BYTES, admit
from ingest.sources.http.responses import RETRY_LATER, Reply
from ingest.sources.http.router import Request, Route

log = logging.getLogger("ingest.http")

SIGNALS = tuple(otlp.SIGNAL_KINDS)  # /v1/{signal}
# google.rpc.Code values the spec's Status bodies carry
INVALID_ARGUMENT, PERMISSION_DENIED, UNAVAILABLE = 3, 7, 14
REJECTED_FIELD = {"logs": "rejected_log_records", "traces": "rejected_spans", "metrics": "rejected_data_points"}


def routes(intake: IntakeContext) -> list[Route]:
    api = OtlpApi(intake)
    # the table comes from the signal, not the path: the handler checks it against the token's list
    return [Route("POST", f"/v1/{signal}", functools.partial(api.export, signal),
                  admit=functools.partial(admit, intake), budgeted=True,
                  scopes=("write",)) for signal in SIGNALS]


class OtlpApi:
    def __init__(self, intake: IntakeContext):
        self._intake = intake

    def export(self, signal: str, request: Request):
        """A Reply now when the body cannot be taken in, else an awaitable
        that answers once its rows are durable."""
        media = otlp.media_type(request.headers.get("content-type"))
        if media not in otlp.MEDIA_TYPES:
            return status_reply(415, INVALID_ARGUMENT, f"unsupported Content-Type {media!r}; OTLP/HTTP is "
                                f"{otlp.PROTOBUF_TYPE} or {otlp.JSON_TYPE}", otlp.JSON_TYPE)
        if request.token is not None:  # every table the signal may land in: the token must be allowed them all
            tables = self._intake.sources["otlp"].tables
            for kind in otlp.SIGNAL_KINDS[signal]:
                forbidden = request.token.forbids(("write",), tables[kind], f"send OTLP {signal}")
                if forbidden is not None:
                    self._intake.observe_refusal("forbidden", request.token.name)
                    return status_reply(403, PERMISSION_DENIED, forbidden, media)
        if len(request.body) >= OFF_LOOP_BYTES and self._intake.parse_pool is not None:
            return self._export_decoded_off_loop(signal, request, media)
        try:
            converted = otlp.decode(signal, media, request.body)
        except InvalidBody as exc:
            return status_reply(400, INVALID_ARGUMENT, str(exc), media)
        return self._take_in(signal, request, media, converted)

    async def _export_decoded_off_loop(self, signal: str, request: Request, media: str) -> Reply:
        """A large body is decoded in the parse pool while the loop goes on;
        its rows are then logged and buffered on the loop."""
        intake, size = self._intake, len(request.body)
        intake.budget.take(size)  # the body stays counted while it is read
        try:
            converted = await asyncio.get_running_loop().run_in_executor(
                intake.parse_pool, otlp.decode, signal, media, request.body)
        except InvalidBody as exc:
            return status_reply(400, INVALID_ARGUMENT, str(exc), media)
        finally:
            intake.budget.give_back(size)
        refusal = intake.refusal()  # e.g. shutdown began meanwhile: nothing was accepted yet
        if refusal:
            return status_reply(503, UNAVAILABLE, refusal, media, RETRY_LATER)
        answer = self._take_in(signal, request, media, converted)
        return answer if isinstance(answer, Reply) else await answer

    def _take_in(self, signal: str, request: Request, media: str, converted: otlp.Converted):
        """Logs and buffers the rows of each table, keeps the records that
        could not be rows; the answer now, or a coroutine of it once durable."""
        intake = self._intake
        tables = intake.sources["otlp"].tables
        where = f"http {request.peer} POST /v1/{signal}"
        if request.token is not None:  # what the body carried is taken from the token's quotas
            request.token.charge(converted.rows + converted.rejected_count, len(request.body))
        rejected = {kind: list(records) for kind, records in converted.rejected.items()}
        lsns = []
        for kind, batch in converted.batches.items():
            pipeline = intake.pipeline(tables[kind])
            try:
                batch = pipeline.conform(batch)
            except ValueError as exc:  # the config declares the table otherwise: these rows do not fit it
                reason = f"OTLP {signal} rows do not fit table {tables[kind]!r}: {exc}"
                rejected.setdefault(kind, []).extend(
                    (json.dumps(row, default=str).encode(), reason) for row in batch.to_pylist())
                continue
            try:
                lsn = pipeline.append_batch(batch)
            except LogUnavailable as exc:  # a metrics body's tables before this one were taken: a retry repeats them
                return status_reply(503, UNAVAILABLE, f"the write-ahead log cannot be written ({exc}); retry later",
                                    media, RETRY_LATER)
            if lsn is not None:
                lsns.append(lsn)
        for kind, records in rejected.items():
            intake.pipeline(tables[kind]).rejected_at_source([line for line, _ in records],
                                                             [reason for _, reason in records], where)
        count = sum(len(records) for records in rejected.values())
        message = ""
        if count:
            first = next(reason for records in rejected.values() for _, reason in records)
            message = f"{count} record(s) could not be stored and are kept in the dead-letter store; first: {first}"
        reply = export_reply(signal, media, count, message)
        if not lsns or intake.wal is None:
            return reply
        return self._when_durable(max(lsns), reply, media)

    async def _when_durable(self, lsn: int, reply: Reply, media: str) -> Reply:
        try:
            await self._intake.wal.durable(lsn)
        except OSError as exc:  # the rows are buffered and will land; a retry may store them twice (at least once)
            log.error("write-ahead log fsync failed (%s); asking the OTLP exporter to retry", exc)
            return status_reply(503, UNAVAILABLE, f"the write-ahead log could not be synced ({exc}); retry later",
                                media, RETRY_LATER)
        return reply


def export_reply(signal: str, media: str, rejected: int, message: str) -> Reply:
    """200 with an Export*ServiceResponse in the request's encoding."""
    m = otlp.messages()
    response = m.responses[signal]()
    if rejected:
        setattr(response.partial_success, REJECTED_FIELD[signal], rejected)
        response.partial_success.error_message = message
    if media == otlp.PROTOBUF_TYPE:
        return Reply(200, response.SerializeToString(), otlp.PROTOBUF_TYPE)
    return Reply(200, m.json_format.MessageToJson(response, indent=None).encode(), otlp.JSON_TYPE)


def status_reply(status: int, code: int, message: str, media: str, headers: tuple = ()) -> Reply:
    """An error as the spec's google.rpc.Status {code, message}, in the
    request's encoding; encoded here (two fields) so that no googleapis
    protos are needed at run time."""
    if media == otlp.PROTOBUF_TYPE:
        text = message.encode()
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text  # field 1 varint, field 2 bytes
        return Reply(status, body, otlp.PROTOBUF_TYPE, headers)
    return Reply(status, json.dumps({"code": code, "message": message}).encode(), otlp.JSON_TYPE, headers)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
