"""POST /v1/ingest/{table}: a body of events, answered per ?wait= once what
that mode waits for has happened; receipts, Idempotency-Key, WAL acks.

Query options (or headers): ?wait=none|received|flushed (Ingest-Wait),
?timeout= seconds for flushed, ?callback= a webhook URL (Ingest-Callback).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from typing import NamedTuple
from urllib.parse import parse_qs

from ingest.core.receipts import IdempotencyConflict, Receipt
from ingest.core.ports import LogUnavailable
from ingest.protocol import DEFAULT_WAIT, WAIT_MODES, table_name_problem
from ingest.server.webhooks import CallbackRefused
from ingest.sources import formats
from ingest.sources.base import IntakeContext
from ingest.sources.http.admin_api import RECEIPTS_PREFIX
from ingest.sources.http.responses import JSON_TYPE, RETRY_LATER, HttpError, Reply, json_body
from ingest.sources.http.router import Request, Route

log = logging.getLogger("ingest.http")

INGEST_TEMPLATE = "/v1/ingest/{table}"
RECEIPT_HEADER = "Ingest-Receipt"
DEFAULT_FLUSH_TIMEOUT = "30"  # seconds a wait=flushed request waits before answering 504
MAX_ERRORS_REPORTED = 100
OFF_LOOP_BYTES = 64 << 10  # a body this large is decoded in the parse pool, beside the loop
KNOWN_OPTIONS = 1024  # distinct (table, query, headers) remembered, checked, at most

# What each ?wait= mode waits for before it answers: "logged" = the lines are in the
# write-ahead log (fsynced per --wal-fsync), "landed" = every line landed or was dead-lettered.
WAITS_FOR = {
    "none": frozenset(),
    "received": frozenset({"logged"}),
    "flushed": frozenset({"logged", "landed"}),
}
assert tuple(WAITS_FOR) == WAIT_MODES


def routes(intake: IntakeContext) -> list[Route]:
    api = IngestApi(intake)
    return [Route("POST", INGEST_TEMPLATE, api.ingest, admit=api.admit, budgeted=True, scopes=("write",),
                  table_param="table")]


def admit(intake: IntakeContext) -> HttpError | None:
    """Whether the server takes in events now, asked before a body is read:
    503 with Retry-After when it does not (every intake route's `admit`)."""
    refusal = intake.refusal()
    return HttpError(503, refusal, headers=RETRY_LATER) if refusal else None


class IngestApi:
    def __init__(self, intake: IntakeContext):
        self._intake = intake
        self._options: dict[tuple, tuple] = {}  # (table, query, wait and callback headers) -> checked options
        self._loop: asyncio.AbstractEventLoop | None = None  # the one the requests come in on

    def admit(self) -> HttpError | None:
        return admit(self._intake)

    def ingest(self, request: Request):
        """Answers now (a Reply) when nothing needs waiting for, else an
        awaitable that answers once it may."""
        table = request.params["table"]
        headers = request.headers
        options = (table, request.query, headers.get("ingest-wait"), headers.get("ingest-callback"))
        known = self._options.get(options)
        if known is None:
            known = self._read_options(*options)
            if known[2] is None:  # a callback URL is checked every time: what it resolves to may change
                if len(self._options) >= KNOWN_OPTIONS:
                    self._options.clear()
                self._options[options] = known
        wait, timeout, callback = known
        if callback is not None and "ingest-signature" in headers:
            # a webhook notice (from this server or another) asking for a notice of its own: a loop
            raise HttpError(400, "a webhook delivery (it carries Ingest-Signature) may not ask for a callback")
        key = headers.get("idempotency-key")
        if len(request.body) >= OFF_LOOP_BYTES and self._intake.parse_pool is not None:
            return self._ingest_decoded_off_loop(request, table, key, wait, timeout, callback)
        return self._ingest(request, table, key, wait, timeout, callback, self._decode(request), None)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the requests come in on (asyncio.get_running_loop() costs a getpid() call in 3.11)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def _ingest_decoded_off_loop(self, request: Request, table: str, key: str | None, wait: str, timeout: float,
                                       callback):
        """A large body is decoded and checked (its key's digest taken too) in
        the parse pool, the GIL released, so that several are read at once on
        all cores while the loop goes on; its lines are then logged and
        buffered on the loop, as a small body's are at once."""
        intake, size = self._intake, len(request.body)
        intake.budget.take(size)  # the body stays counted while it is read
        try:
            decoded, digest = await self._event_loop().run_in_executor(
                intake.parse_pool, self._decode_and_digest, request, table, key)
        finally:
            intake.budget.give_back(size)
        refusal = intake.refusal()  # e.g. shutdown began meanwhile: nothing was accepted yet
        if refusal:
            raise HttpError(503, refusal, headers=RETRY_LATER)
        answer = self._ingest(request, table, key, wait, timeout, callback, decoded, digest)
        return answer if isinstance(answer, Reply) else await answer

    def _decode_and_digest(self, request: Request, table: str, key: str | None):
        return self._decode(request), None if key is None else self._digest(table, request)

    @staticmethod
    def _digest(table: str, request: Request) -> str:
        """What a retry under the same Idempotency-Key must match: the table and the body."""
        return hashlib.sha256(table.encode() + b"\0" + request.body).hexdigest()

    @staticmethod
    def _decode(request: Request) -> formats.Decoded:
        """The body's events by its Content-Type, each line checked."""
        try:
            return formats.decode(request.headers.get("content-type"), request.body)
        except formats.UnsupportedContentType as exc:
            raise HttpError(415, str(exc)) from None
        except formats.InvalidBody as exc:
            raise HttpError(400, str(exc)) from None

    def _ingest(self, request: Request, table: str, key: str | None, wait: str, timeout: float, callback,
                decoded: formats.Decoded, digest: str | None):
        if request.token is not None:  # what the body carried is taken from the token's quotas
            request.token.charge(decoded.received, len(request.body))
        if key is None:
            accepted = self.accept(table, request, decoded, callback, {})
            waits, receipt = WAITS_FOR[wait], accepted.receipt
            if receipt is None or not waits:
                return self._reply(202 if receipt is not None and not waits else accepted.status, accepted.body, receipt)
            if "landed" not in waits:
                if accepted.lsn is None:  # not logged: --wal off
                    return self._reply(accepted.status, accepted.body, receipt)
                return self._reply_when_synced(accepted)  # answered from a callback: no task
            return self._answer_when(wait, timeout, accepted)
        digest = digest or self._digest(table, request)
        keys = self._intake.idempotency
        try:
            entry = keys.find(key, table, digest)
        except IdempotencyConflict as exc:
            raise HttpError(422, str(exc)) from None
        if entry is not None:
            return self._original_reply(entry)
        entry = keys.begin(key, table, digest)
        try:
            accepted = self.accept(table, request, decoded, callback, {"key": key, "digest": digest, "table": table})
        except BaseException:
            keys.forget(key)
            raise
        return self._remember(key, entry, self._answer_when(wait, timeout, accepted))

    def _read_options(self, table: str, query: bytes | None, wait_header: str | None, callback_header: str | None):
        """(wait, timeout, callback) of a request, checked; remembered for the
        next request with the same table, query and headers."""
        problem = table_name_problem(table)
        if problem:
            raise HttpError(400, problem)
        options = parse_qs(query.decode("latin-1")) if query else {}
        wait = (options.get("wait", [""])[0] or wait_header or DEFAULT_WAIT).lower()
        if wait not in WAIT_MODES:
            raise HttpError(400, f"wait must be one of {', '.join(WAIT_MODES)}, not {wait!r}")
        try:
            timeout = float(options.get("timeout", [DEFAULT_FLUSH_TIMEOUT])[0])
        except ValueError:
            timeout = math.nan
        if not 0 < timeout < math.inf:
            raise HttpError(400, "timeout must be a positive, finite number of seconds")
        callback = options.get("callback", [""])[0] or callback_header or None
        if callback is not None:
            try:
                self._intake.webhooks.check(callback)
            except CallbackRefused as exc:
                raise HttpError(400, str(exc)) from None
        return wait, timeout, callback

    @staticmethod
    def _reply(status: int, body: dict | bytes, receipt) -> Reply:
        """A JSON answer (`body` a document, or one encoded already) with the receipt's header."""
        body = body if isinstance(body, bytes) else json_body(body)
        return Reply(status, body, JSON_TYPE, ((RECEIPT_HEADER, receipt.id),) if receipt is not None else ())

    def _reply_when_synced(self, accepted: "Accepted") -> Reply | asyncio.Future:
        """The reply now if the request's record is durable already, else a
        future of it, set by the log as its fsync ends."""
        reply = self._event_loop().create_future()

        def answer(error: OSError | None) -> None:
            if error is not None:  # the lines are buffered: answer once they have landed instead
                landed = asyncio.ensure_future(self._answer_when("flushed", float(DEFAULT_FLUSH_TIMEOUT),
                                                                 accepted._replace(lsn=None)))
                landed.add_done_callback(lambda t: reply.set_exception(t.exception()) if t.exception()
                                         else reply.set_result(t.result()))
            else:
                reply.set_result(self._reply(accepted.status, accepted.body, accepted.receipt))

        if not self._intake.wal.when_synced(accepted.lsn, answer):
            return self._reply(accepted.status, accepted.body, accepted.receipt)
        return reply

    async def _answer_when(self, wait: str, timeout: float, accepted: "Accepted") -> Reply:
        waits = WAITS_FOR[wait]
        status, document, lsn, receipt = accepted.status, accepted.document, accepted.lsn, accepted.receipt
        if not waits or receipt is None:
            return self._reply(202 if not waits and receipt is not None else status, accepted.body, receipt)
        if lsn is not None:  # logged (an lsn only comes with a log); durable() returns at once under fsync off
            try:
                await self._intake.wal.durable(lsn)
            except OSError as exc:  # the log may not hold them, but the buffer does: wait for them to land
                log.error("write-ahead log fsync failed (%s); answering once the request's events have landed", exc)
                waits = WAITS_FOR["flushed"]
        if "landed" not in waits:
            return self._reply(status, accepted.body, receipt)
        self._intake.pipeline(receipt.table).expedite()
        try:
            await asyncio.wait_for(asyncio.shield(receipt.finished()), timeout)
        except asyncio.TimeoutError:
            return self._reply(504, {**receipt.as_dict(), "error": f"not flushed within {timeout:g}s; the events will "
                                     f"still land: poll GET {RECEIPTS_PREFIX}{receipt.id}"}, receipt)
        result = {**document, **receipt.as_dict()}
        if receipt.dead_lettered:
            refused = any(reason.startswith("refused by the sink") for reason in receipt.reasons)
            result["error"] = f"{receipt.dead_lettered} event(s) could not land and were dead-lettered"
            return self._reply(422 if refused else 500, result, receipt)
        return self._reply(status, result, receipt)

    @staticmethod
    async def _original_reply(entry) -> Reply:
        status, body, content_type, headers = await asyncio.shield(entry.reply)
        return Reply(status, body, content_type, headers + (("Idempotent-Replayed", "true"),))

    async def _remember(self, key: str, entry, answer) -> Reply:
        """Keeps the reply under the key, so a retry gets the same answer."""
        try:
            reply = await answer
        except BaseException:
            self._intake.idempotency.forget(key)
            raise
        entry.reply.set_result(reply)
        return reply

    def accept(self, table: str, request: Request, decoded: formats.Decoded, callback, meta: dict) -> "Accepted":
        """Logs and buffers the decoded body's good lines into `table` as one
        record with its receipt and `meta` (an idempotency key's, when it
        has one), and keeps its bad lines in the dead-letter store.
        HttpError 503 when the log cannot take them: nothing was accepted."""
        errors, accepted = decoded.errors, decoded.accepted
        pipeline = self._intake.pipeline(table)
        if decoded.batch is not None:
            decoded = self._conformed(pipeline, decoded, request, table)
        document = {"accepted": accepted, "rejected": len(errors), "errors": []}
        if errors:
            document["errors"] = [{"line": index + 1, "error": reason} for index, reason in errors[:MAX_ERRORS_REPORTED]]
        lsn = receipt = None
        reply = None
        if accepted:
            receipts = self._intake.receipts
            receipt = receipts.issue(table, accepted, len(errors), callback)
            document["receipt"] = receipt.id
            reply = (b'{"accepted":%d,"rejected":0,"errors":[],"receipt":"%s"}' % (accepted, receipt.id.encode())
                     if not errors else json_body(document))  # a receipt id is letters and digits
            # the reply is encoded once; the logged meta wraps it as it is
            head = (b'{"receipt":"%s","created":%d.%06d,"callback":null' % (receipt.id.encode(), *divmod(
                        round(receipt.created * 1e6), 1_000_000))  # integers: repr(float) costs more than the rest
                    if not meta and callback is None else
                    json_body({**meta, "receipt": receipt.id, "created": receipt.created, "callback": callback})[:-1])
            logged = head + b',"reply":' + reply + b"}"
            try:
                if decoded.batch is not None:  # a columnar body: its rows skip the encoder
                    lsn = pipeline.append_batch(decoded.batch, receipt=receipt, meta=logged, keyed="key" in meta)
                else:
                    lsn = pipeline.append_lines(decoded.lines, decoded.rejected, receipt=receipt, meta=logged,
                                                keyed="key" in meta)
            except LogUnavailable as exc:  # nothing was buffered: the refusal is whole
                receipts.withdraw(receipt)
                raise HttpError(503, f"the write-ahead log cannot be written ({exc}); nothing was accepted, retry later",
                                headers=RETRY_LATER) from None
        if errors and decoded.lines is not None:  # a columnar decoder keeps what it could not read itself
            pipeline.rejected_at_source([decoded.lines.line(i) for i, _ in errors], [reason for _, reason in errors],
                                        f"http {request.peer} POST {request.path}")
        return Accepted(400 if accepted == 0 and errors else 200, document, reply or json_body(document), lsn, receipt)

    @staticmethod
    def _conformed(pipeline, decoded: formats.Decoded, request: Request, table: str) -> formats.Decoded:
        """A columnar body's rows in the table's types; a 400 naming the
        column when they do not fit, the rows kept in the dead-letter store."""
        try:
            return formats.Decoded(batch=pipeline.conform(decoded.batch))
        except ValueError as exc:
            rows = [json.dumps(row, default=str).encode() for row in decoded.batch.to_pylist()]
            pipeline.rejected_at_source(rows, [f"Arrow IPC body: {exc}"] * len(rows),
                                        f"http {request.peer} POST /v1/ingest/{table}")
            raise HttpError(400, f"Arrow IPC body: {exc}; nothing was accepted (the rows are kept in the "
                                 "dead-letter store)") from None


class Accepted(NamedTuple):
    """What became of a request's body: the answer to give, and what to wait for before giving it."""

    status: int
    document: dict  # the reply's fields
    body: bytes  # the reply, encoded (once: it is logged too)
    lsn: int | None  # its record in the write-ahead log
    receipt: Receipt | None  # None: nothing was accepted
