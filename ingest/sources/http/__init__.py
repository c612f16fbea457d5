"""The HTTP source: HTTP/1.1 with keep-alive and pipelining, parsed by httptools.

  connection.py   the asyncio.Protocol: limits, Content-Encoding, pipelined order, linger
  router.py       (method, path template) -> handler; 404 and 405
  responses.py    HttpError, Reply and their rendering
  ingest_api.py   POST /v1/ingest/{table}: wait modes, receipts, idempotency keys, WAL acks
  otlp_api.py     POST /v1/logs, /v1/traces, /v1/metrics: OTLP/HTTP (protobuf or JSON) into the otel_* tables
  admin_api.py    receipts, query, stats, metrics, health, ready
  sdk_intake.py   what the SDK endpoints share: the key, landing each table's messages once
  segment_api.py  Segment's HTTP Tracking API (/v1/batch, /v1/track, ...)
  posthog_api.py  PostHog's capture API (/batch/, /e/, /capture/, ..., /i/v1/analytics/events)

An endpoint is a handler in an API module and a Route in its routes().
"""
from __future__ import annotations

from ingest.sources.base import AdminContext, IntakeContext
from ingest.sources.http import admin_api, ingest_api, otlp_api, posthog_api, segment_api
from ingest.sources.http.connection import HttpIngestProtocol
from ingest.sources.http.router import Router

__all__ = ["HttpIngestProtocol", "http_router"]

NOT_FOUND_HINT = (f"ingest with POST {ingest_api.INGEST_TEMPLATE}, or an SDK's own endpoint (Segment /v1/batch, "
                  "PostHog /batch/, OTLP /v1/logs, /v1/traces, /v1/metrics)")


def http_router(intake: IntakeContext, admin: AdminContext) -> Router:
    """Every endpoint the server answers."""
    return Router([*ingest_api.routes(intake), *segment_api.routes(intake), *posthog_api.routes(intake),
                   *otlp_api.routes(intake), *admin_api.routes(admin)], NOT_FOUND_HINT)
