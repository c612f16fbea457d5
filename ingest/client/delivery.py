"""Delivery decisions, apart from any socket: what an answer means (final or
worth a retry), how long to back off, what is counted, and the one loop that
sends a request until its answer is final, over an injected `io`
(transport.BlockingIO or transport.AsyncIO)."""
from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass

from ingest.backoff import full_jitter
from ingest.client.errors import ABANDONED, Abandoned, FlushTimeout, IngestError, RequestTooLarge
from ingest.client.wire import Request, Response

RETRY_AFTER_STATUSES = (429, 503)
# What a request can raise when the connection, not the server, failed: worth a retry.
CONNECTION_ERRORS = (OSError, EOFError, http.client.HTTPException)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 8  # re-sends after the first attempt
    backoff_base: float = 0.1  # seconds
    backoff_max: float = 10.0  # seconds

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `attempt` (0 for the first): full jitter,
        but never less than the server asked for."""
        return max(full_jitter(attempt, self.backoff_base, self.backoff_max), retry_after or 0.0)


def is_final(response: Response) -> bool:
    """Whether retrying could not change the outcome."""
    if response.reply is not None:
        return True  # the server's word on the data; a retry would replay it
    status = response.status
    return not (status == 408 or status == 429 or status >= 500)


def final_reply(table: str, response: Response) -> dict:
    """post()'s answer: the ingest reply, or the error that explains why there is none."""
    reply = response.reply
    if reply is not None and response.status in (200, 202, 400):
        return reply
    raise {413: RequestTooLarge, 504: FlushTimeout}.get(response.status, IngestError)(
        f"POST /v1/ingest/{table}: {response.describe()}", response.status, reply)


class Counters:
    """What both clients count. The shipper and post() callers update it from
    different threads, hence the lock."""

    def __init__(self):
        self._counters_lock = threading.Lock()
        self.acknowledged = 0  # events the server confirmed (as the wait mode says)
        self.unflushed = 0  # of those, events a flushed wait timed out on (504): durable, not yet committed
        self.failed_events = 0  # events in `failed`
        self.failed: list = []  # of errors.Failure
        self.retries = 0  # requests sent again
        self.throttled = 0  # 429 and 503 answers
        self.replayed = 0  # answers the server replayed for a repeated Idempotency-Key

    def _count(self, **amounts: int) -> None:
        with self._counters_lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


async def send_until_final(request: Request, policy: RetryPolicy, counters: Counters, io) -> Response:
    """Sends `request` (the same bytes, the same Idempotency-Key) until an answer
    that retrying cannot change; raises IngestError once retries run out."""
    attempt = 0
    while True:
        retry_after = status = None
        try:
            response = await io.exchange(request)
        except CONNECTION_ERRORS as exc:
            reason = f"cannot reach the server ({type(exc).__name__}: {exc})"
        else:
            if response.replayed:
                counters._count(replayed=1)
            if is_final(response):
                return response
            reason, status = response.describe(), response.status
            if status in RETRY_AFTER_STATUSES:
                counters._count(throttled=1)
                retry_after = response.retry_after
        if attempt >= policy.max_retries:
            raise IngestError(f"gave up after {attempt + 1} attempts; the last: {reason}", status)
        if not await io.pause(policy.delay(attempt, retry_after)):
            raise Abandoned(ABANDONED)
        attempt += 1
        counters._count(retries=1)
