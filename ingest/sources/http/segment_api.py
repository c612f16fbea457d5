"""Segment's HTTP Tracking API, so that an unmodified Segment SDK lands here
by changing its host: POST /v1/batch (and /v1/import), /v1/track,
/v1/identify, /v1/page, /v1/screen, /v1/group, /v1/alias.

The contract the SDKs' retry logic relies on: 200 {"success": true} once the
messages are durable (a message that cannot be a row is kept in the
dead-letter store with its reason, and the rest still land); 400 only for a
body that is not JSON or is over max_batch_bytes (the SDK drops it: a retry
cannot succeed); 429 and 503 with Retry-After when the server cannot take it
now (the SDK retries). The write key comes as Basic auth's user, or as
`writeKey` in the body; a retried batch lands once (sdk_intake.py).
"""
from __future__ import annotations

from datetime import datetime, timezone

from ingest.sources.base import IntakeContext
from ingest.sources.formats import segment
from ingest.sources.http.responses import HttpError, json_reply
from ingest.sources.http.router import Request, Route
from ingest.sources.http.sdk_intake import Message, Rejected, SdkIntake

SUCCESS = {"success": True}
KEY_HINT = "the write key as HTTP Basic auth's user name (what Segment SDKs do), or as writeKey in the body"


def routes(intake: IntakeContext) -> list[Route]:
    api = SegmentApi(intake)
    batch = [Route("POST", path, api.batch, admit=api.sdk.admit, budgeted=True, scopes=())
             for path in ("/v1/batch", "/v1/import")]
    return batch + [Route("POST", f"/v1/{kind}", api.single(kind), admit=api.sdk.admit, budgeted=True, scopes=())
                    for kind in segment.KINDS]


class SegmentApi:
    def __init__(self, intake: IntakeContext):
        self.sdk = SdkIntake(intake, "segment")
        settings = intake.sources["segment"]
        self._tables = settings.tables
        self._max_event_bytes = settings.limits["max_event_bytes"]
        self._max_batch_bytes = settings.limits["max_batch_bytes"]

    def batch(self, request: Request):
        return self._ingest(request, None)

    def single(self, kind: str):
        return lambda request: self._ingest(request, kind)

    async def _ingest(self, request: Request, kind: str | None):
        limit = self._max_batch_bytes if kind is None else self._max_event_bytes
        if len(request.body) > limit:
            raise HttpError(400, f"the body is {len(request.body)} bytes, over the limit of {limit} "
                                 f"({'max_batch_bytes' if kind is None else 'max_event_bytes'}); send smaller batches")
        try:
            envelope, messages = segment.read_envelope(request.body, kind)
        except segment.InvalidEnvelope as exc:
            raise HttpError(400, str(exc)) from None
        landing, refused = [], []
        for row in segment.rows(envelope, messages, kind, datetime.now(timezone.utc), self._max_event_bytes):
            table = self._tables[row.kind or "track"]  # a message of no known type is kept beside the tracks
            if isinstance(row, segment.Row):
                landing.append(Message(table, row.line, row.id))
            else:
                refused.append(Rejected(table, row.line, row.reason))
        write_key = envelope.get("writeKey") if isinstance(envelope.get("writeKey"), str) else None
        token = self.sdk.caller(request, write_key, {m.table for m in (*landing, *refused)}, KEY_HINT)
        await self.sdk.land(request, token, landing, refused)
        if kind is not None and refused:  # the request's one message could not land: its client hears why
            raise HttpError(400, f"{refused[0].reason} (kept in the dead-letter store)")
        return json_reply(200, SUCCESS)
