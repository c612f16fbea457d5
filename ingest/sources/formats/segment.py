"""Segment's HTTP Tracking API: its messages as rows of Segment's warehouse
schema, one table per message type (`tracks`, `identifies`, `pages`,
`screens`, `groups`, `aliases`), snake_case columns, and `properties`,
`traits`, `context` and `integrations` kept as JSON.

As Segment's own pipeline does, `timestamp` is corrected for the sending
device's clock: received_at - (sent_at - original_timestamp), with the
device's own value kept in `original_timestamp`.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Iterator, NamedTuple

from ingest.sources.sdk import SdkSource, instant

KINDS = ("track", "identify", "page", "screen", "group", "alias")
COMMON = {
    "message_id": "string",
    "user_id": "string",
    "anonymous_id": "string",
    "timestamp": "timestamp",
    "original_timestamp": "timestamp",
    "sent_at": "timestamp",
    "received_at": "timestamp",
    "context": "json",
    "integrations": "json",
}
# kind -> (its own columns: column -> (the message's field, declared type)), the fields it needs
FIELDS = {
    "track": ({"event": ("event", "string"), "properties": ("properties", "json")}, ("event",)),
    "identify": ({"traits": ("traits", "json")}, ()),
    "page": ({"name": ("name", "string"), "category": ("category", "string"),
              "properties": ("properties", "json")}, ()),
    "screen": ({"name": ("name", "string"), "category": ("category", "string"),
                "properties": ("properties", "json")}, ()),
    "group": ({"group_id": ("groupId", "string"), "traits": ("traits", "json")}, ("groupId",)),
    "alias": ({"previous_id": ("previousId", "string")}, ("previousId",)),
}
SOURCE = SdkSource(
    "segment",
    tables={"track": "tracks", "identify": "identifies", "page": "pages", "screen": "screens", "group": "groups",
            "alias": "aliases"},
    columns={kind: {**COMMON, **{column: kind_type for column, (_, kind_type) in FIELDS[kind][0].items()}}
             for kind in KINDS},
    limits={"max_event_bytes": 32 << 10, "max_batch_bytes": 500 << 10},  # Segment's own limits
)
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
ID_FIELDS = {"message_id": "messageId", "user_id": "userId", "anonymous_id": "anonymousId"}


class Row(NamedTuple):
    kind: str
    line: bytes  # the row as one JSON object
    # messageId; without one, the digest of the message and its place in the batch (a retry sends both again)
    id: str


class Refused(NamedTuple):
    kind: str | None  # None: not a known type
    line: bytes  # the message as it came
    reason: str


class InvalidEnvelope(ValueError):
    """The body is not a Segment request at all: 400."""


def read_envelope(body: bytes, kind: str | None) -> tuple[dict, list]:
    """(the envelope, its messages) of a /v1/batch body (`kind` None) or of
    a single-message body (/v1/track: `kind` "track")."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEnvelope(f"the body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise InvalidEnvelope("the body must be a JSON object")
    if kind is not None:
        return envelope, [envelope]
    batch = envelope.get("batch")
    if not isinstance(batch, list):
        raise InvalidEnvelope('the body must be {"batch": [messages...]}')
    return envelope, batch


def rows(envelope: dict, messages: list, kind: str | None, received_at: datetime,
         max_event_bytes: int) -> Iterator[Row | Refused]:
    """Each message as a row of its type's table, or refused with the reason."""
    shared_context = envelope.get("context") if kind is None and isinstance(envelope.get("context"), dict) else {}
    batch = Batch(received_at, received_at.isoformat(), envelope.get("sentAt"), shared_context)
    for number, message in enumerate(messages, 1):
        where = f"message {number}" if kind is None else "the message"
        if not isinstance(message, dict):
            yield Refused(None, _text(message), f"{where}: not a JSON object")
            continue
        message_kind = kind or message.get("type")
        if message_kind not in FIELDS:
            yield Refused(None, _text(message), f"{where}: type {message_kind!r} is not one of {', '.join(KINDS)}")
            continue
        try:
            line = _ENCODE(_row(message, message_kind, batch)).encode()
        except (ValueError, OverflowError) as exc:
            yield Refused(message_kind, _text(message), f"{where} ({message_kind}): {exc}")
            continue
        if len(line) > max_event_bytes:  # its row: the message's fields, less its type and key
            yield Refused(message_kind, _text(message), f"{where}: {len(line)} bytes, over the limit of "
                                                        f"{max_event_bytes} (max_event_bytes)")
            continue
        message_id = message.get("messageId")
        yield Row(message_kind, line, str(message_id) if message_id is not None else
                  hashlib.sha256(b"%d:%b" % (number, line)).hexdigest())


UNPARSED = object()


class Batch:
    """What the messages of one request share: when it came, when the device sent it, its context."""

    def __init__(self, received_at: datetime, received_text: str, sent_at, context: dict):
        self.received_at = received_at
        self.received_text = received_text
        self.sent_text = sent_at
        self._sent_at = None if sent_at is None else UNPARSED  # parsed when a message first needs it
        self.context = context

    def sent_at(self, value) -> datetime | None:
        """The device's send time of a message: its own sentAt, else the batch's."""
        if value is None:
            if self._sent_at is UNPARSED:
                self._sent_at = instant(self.sent_text, "sentAt")
            return self._sent_at
        return instant(value, "sentAt")


def _row(message: dict, kind: str, batch: Batch) -> dict:
    own, needed = FIELDS[kind]
    row = {column: _identifier(message.get(field), field) for column, field in ID_FIELDS.items()}
    if kind != "alias" and row["user_id"] is None and row["anonymous_id"] is None:
        raise ValueError("needs userId or anonymousId")
    if kind == "alias" and row["user_id"] is None:
        raise ValueError("needs userId")
    for field in needed:
        if message.get(field) in (None, ""):
            raise ValueError(f"needs {field}")
    for column, (field, kind_type) in own.items():
        value = message.get(field)
        row[column] = _identifier(value, field) if kind_type == "string" else value
    original = instant(message.get("timestamp"), "timestamp")
    sent_at = batch.sent_at(message.get("sentAt"))
    timestamp = original if original is not None else batch.received_at
    if original is not None and sent_at is not None:  # the device's clock, corrected by how far off it was
        timestamp = batch.received_at - (sent_at - original)
    context = message.get("context")
    if context is not None and not isinstance(context, dict):
        raise ValueError("context must be an object")
    row.update(timestamp=timestamp.isoformat(), original_timestamp=_iso(original), sent_at=_iso(sent_at),
               received_at=batch.received_text, context={**batch.context, **context} if batch.context and context
               else context or batch.context or None, integrations=message.get("integrations"))
    return row


def _identifier(value, field: str) -> str | None:
    """Segment ids are strings; SDKs in typed languages send numbers too."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{field} must be a string, not {json.dumps(value)[:40]}")


def _iso(moment: datetime | None) -> str | None:
    """ISO-8601 with its offset: the encoder normalises it to UTC."""
    return None if moment is None else moment.isoformat()


def _text(message) -> bytes:
    """A refused message as it came, for the dead-letter store."""
    return _ENCODE(message).encode()
