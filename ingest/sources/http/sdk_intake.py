"""What the SDK endpoints (Segment, PostHog) share once their envelope is
read: who is calling, and landing the messages exactly once.

Who: an SDK sends its key in the Authorization header (Segment: Basic with
the write key as user; PostHog v1: Bearer) or in the body (Segment's
`writeKey`, PostHog's `api_key`). Once tokens are configured the key must be
a token's secret with the write scope on every table the body lands in:
401 / 403 / 429 as on /v1/ingest. Without tokens any key, or none, is taken.

Exactly once: each table's share of a body is logged as one record, with a
receipt, under an idempotency key made of the messages' own ids (Segment's
messageId, PostHog's uuid). An SDK that retries a batch (after a timeout, a
503, a dropped connection) sends the same messages again: their key is
found, nothing is logged twice, and the answer waits for the first copy to
be durable. Keys outlive restarts as an Idempotency-Key does
(durability/keys.py), for --idempotency-window seconds; as every SDK batch
has one, at most MAX_KEYS are kept, the oldest going first.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Iterable, NamedTuple

from ingest.sources.auth import CHALLENGE, Token, Unauthenticated, presented_secret
from ingest.sources.base import IntakeContext
from ingest.sources.formats.ndjson import decode_ndjson
from ingest.sources.http.ingest_api import Accepted, IngestApi, admit
from ingest.sources.http.responses import JSON_TYPE, HttpError, token_refusal
from ingest.sources.http.router import Request


class Message(NamedTuple):
    table: str
    line: bytes  # the row, one JSON object
    id: str  # the message's own id: a retry of it carries the same


class Rejected(NamedTuple):
    table: str  # where it is kept in the dead-letter store
    line: bytes  # the message as it came
    reason: str  # names the message and the field


class SdkIntake:
    def __init__(self, intake: IntakeContext, source: str):
        self._intake = intake
        self._api = IngestApi(intake)
        self.source = source

    def admit(self) -> HttpError | None:
        return admit(self._intake)

    def caller(self, request: Request, body_key: str | None, tables: Iterable[str], where: str) -> Token | None:
        """The token the request's key names, checked for the write scope on
        `tables` and for its quota; None when the server has no tokens.
        `where` tells a client without a key how to send one."""
        tokens, observe = self._intake.tokens, self._intake.observe_refusal
        if not tokens.enabled:
            return None
        try:
            token = tokens.by_secret(presented_secret(request.headers.get("authorization")) or body_key, where)
        except Unauthenticated as exc:
            observe("unauthenticated", "")
            raise HttpError(401, str(exc), headers=CHALLENGE) from None
        refusal = token_refusal(token, ("write",), tables, f"send {self.source} messages", observe)
        if refusal is not None:
            raise refusal
        return token

    async def land(self, request: Request, token: Token | None, messages: list[Message],
                   rejected: list[Rejected] = ()) -> None:
        """Logs each table's messages as one keyed record, keeps `rejected` in
        the dead-letter store, and returns once everything logged (now or by
        an earlier copy of the request) is durable. HttpError 503 when the
        log cannot take them; what was logged before stays, and the retry
        finds it by its key."""
        if token is not None:
            token.charge(len(messages) + len(rejected), len(request.body))
        source = f"http {request.peer} POST {request.path}"
        for table, lines, reasons in _by_table((r.table, r.line, r.reason) for r in rejected):
            self._intake.pipeline(table).rejected_at_source(lines, reasons, source)
        keys, waits = self._intake.idempotency, []
        for table, group in _distinct_by_table(messages):
            digest = hashlib.sha256("\n".join(sorted(m.id for m in group)).encode()).hexdigest()
            key = f"{self.source}:{table}:{digest}"
            entry = keys.find(key, table, digest)
            if entry is not None:  # an earlier copy of this request logged them: wait for it, log nothing
                waits.append(asyncio.shield(entry.reply))
                continue
            entry = keys.begin(key, table, digest)
            try:
                logged = self._api.accept(table, request, decode_ndjson(b"\n".join(m.line for m in group)), None,
                                          {"key": key, "digest": digest, "table": table})
            except BaseException as exc:
                self._forget(key, entry, exc)
                raise
            # a task: it settles the key even when a later table's share is refused and this request fails
            waits.append(asyncio.ensure_future(self._durable(key, entry, logged)))
        await asyncio.gather(*waits)

    async def _durable(self, key: str, entry, logged: Accepted) -> None:
        """Returns once the record is durable (or, when its fsync failed, once
        its events have landed); then a retry of the request may answer too."""
        try:
            if logged.lsn is not None:
                try:
                    await self._intake.wal.durable(logged.lsn)
                except OSError:  # the log may not hold them, but the buffer does
                    self._intake.pipeline(logged.receipt.table).expedite()
                    await asyncio.shield(logged.receipt.finished())
        except BaseException as exc:
            self._forget(key, entry, exc)
            raise
        entry.reply.set_result((200, logged.body, JSON_TYPE, ()))

    def _forget(self, key: str, entry, exc: BaseException) -> None:
        """A request that did not get its messages logged: a retry logs them."""
        self._intake.idempotency.forget(key)
        if not entry.reply.done():
            entry.reply.set_exception(HttpError(503, f"an earlier copy of this request failed ({exc}); retry"))
            entry.reply.exception()  # retrieved: nobody may be waiting on it


def _distinct_by_table(messages: list[Message]) -> list[tuple[str, list[Message]]]:
    """Messages grouped by table in the order they came, each id once."""
    groups: dict[str, dict[str, Message]] = {}
    for message in messages:
        groups.setdefault(message.table, {}).setdefault(message.id, message)
    return [(table, list(group.values())) for table, group in groups.items()]


def _by_table(rows: Iterable[tuple[str, bytes, str]]) -> list[tuple[str, list[bytes], list[str]]]:
    grouped: dict[str, tuple[list, list]] = {}
    for table, line, reason in rows:
        lines, reasons = grouped.setdefault(table, ([], []))
        lines.append(line)
        reasons.append(reason)
    return [(table, lines, reasons) for table, (lines, reasons) in grouped.items()]
