"""PostHog's capture API, so that an unmodified PostHog SDK lands here by
changing its host: v0 POST /batch/, /e/, /i/v0/e/, /capture/, /track/ (each
also without its trailing slash, as SDKs spell them either way), and v1 POST
/i/v1/analytics/events.

The contract the SDKs' retry logic relies on: exactly 200 once the events are
durable (v0 {"status": 1}; v1 {"results": {uuid: {"result": "ok"}}}, "drop"
with the reason for an event kept in the dead-letter store), and the rest of
a batch still lands beside a bad event; 400 only for a body that cannot be
read, 413 over a limit (the SDK drops it: a retry cannot succeed); 429 and
503 with Retry-After when the server cannot take it now (the SDK retries).
The key comes as v1's Bearer, or v0's api_key / token in the body, the query
or an event's properties; a retried batch lands once (sdk_intake.py).
"""
from __future__ import annotations

from datetime import datetime, timezone

from ingest.sources.base import IntakeContext
from ingest.sources.formats import posthog
from ingest.sources.http.responses import HttpError, json_reply
from ingest.sources.http.router import Request, Route
from ingest.sources.http.sdk_intake import Message, Rejected, SdkIntake

SUCCESS = {"status": 1}  # what PostHog's capture answers
V0_PATHS = ("/batch/", "/batch", "/e/", "/e", "/i/v0/e/", "/i/v0/e", "/capture/", "/capture", "/track/", "/track")
V1_PATH = "/i/v1/analytics/events"
KEY_HINT = "the project API key as api_key in the body (what PostHog SDKs do), ?api_key= in the query, or Bearer auth"


def routes(intake: IntakeContext) -> list[Route]:
    api = PosthogApi(intake)
    return [Route("POST", path, api.capture, admit=api.sdk.admit, budgeted=True, scopes=()) for path in V0_PATHS] + [
        Route("POST", V1_PATH, api.capture_v1, admit=api.sdk.admit, budgeted=True, scopes=())]


class PosthogApi:
    def __init__(self, intake: IntakeContext):
        self.sdk = SdkIntake(intake, "posthog")
        settings = intake.sources["posthog"]
        self._table = settings.tables["event"]
        self._max_event_bytes = settings.limits["max_event_bytes"]
        self._max_batch_bytes = settings.limits["max_batch_bytes"]

    async def capture(self, request: Request):
        """v0: the legacy capture endpoints every PostHog SDK and posthog-js speak."""
        self._check_size(request)
        query = posthog.query_fields(request.query)
        try:
            envelope = posthog.read_envelope(request.body, request.headers.get("content-type", ""), query,
                                             self._max_batch_bytes)
        except posthog.TooLarge as exc:
            raise HttpError(413, str(exc)) from None
        except posthog.InvalidBody as exc:
            raise HttpError(400, str(exc)) from None
        sent_at = posthog.epoch_ms(query.get("_"))
        landing, refused = self._split(posthog.rows(envelope, datetime.now(timezone.utc), self._max_event_bytes,
                                                    sent_at))
        await self._land(request, posthog.body_key(envelope, query), landing, refused)
        if envelope.single and refused:  # the request's one event could not land: its client hears why
            raise HttpError(400, f"{refused[0].reason} (kept in the dead-letter store)")
        return json_reply(200, SUCCESS)

    async def capture_v1(self, request: Request):
        """v1: one answer per event, keyed by its uuid."""
        self._check_size(request)
        try:
            envelope = posthog.read_v1(request.body)
        except posthog.InvalidBody as exc:
            raise HttpError(400, str(exc)) from None
        sent_at = request.headers.get("posthog-request-timestamp") or envelope.fields.get("created_at")
        landing, refused = self._split(posthog.rows(envelope, datetime.now(timezone.utc), self._max_event_bytes,
                                                    sent_at, request.headers.get("posthog-sdk-info")))
        await self._land(request, None, landing, refused)
        results = {row.uuid: {"result": "ok"} for row in landing if row.uuid is not None}
        results.update({row.uuid: {"result": "drop", "details": f"{row.reason} (kept in the dead-letter store)"}
                        for row in refused if row.uuid is not None})
        return json_reply(200, {"results": results})

    def _check_size(self, request: Request) -> None:
        if len(request.body) > self._max_batch_bytes:
            raise HttpError(413, f"the body is {len(request.body)} bytes, over the limit of {self._max_batch_bytes} "
                                 "(max_batch_bytes); send smaller batches")

    @staticmethod
    def _split(rows) -> tuple[list[posthog.Row], list[posthog.Refused]]:
        landing, refused = [], []
        for row in rows:
            (landing if isinstance(row, posthog.Row) else refused).append(row)
        return landing, refused

    async def _land(self, request: Request, body_key: str | None, landing: list[posthog.Row],
                    refused: list[posthog.Refused]) -> None:
        token = self.sdk.caller(request, body_key, {self._table} if landing or refused else set(), KEY_HINT)
        await self.sdk.land(request, token, [Message(self._table, row.line, row.id) for row in landing],
                            [Rejected(self._table, row.line, row.reason) for row in refused])

