"""PostHog's capture API: its events as rows of one table shaped like
PostHog's own `events` table: `uuid`, `event`, `distinct_id`, `timestamp`,
`properties` as JSON, and the person updates an event carries (`$set`,
`$set_once`) as JSON columns of their own. `session_id` ($session_id) is a
column too, as in PostHog's table: sessions are what PostHog queries group by.

A body comes in many spellings (what posthog-js, the server SDKs and the
capture v1 protocol send): JSON, a batch `{"batch": [...]}` or `[...]` or one
event; or a form `data=<JSON or base64>`; gzip'd (`compression=gzip` or
`gzip-js`) or base64'd. read_envelope undoes them all.

As PostHog's own pipeline does, `timestamp` is corrected for the sending
device's clock: received_at + (timestamp - sent_at), unless the event asks
not to be ($ignore_sent_at, v1's disable_skew_correction); an event with only
an `offset` (milliseconds before it was sent) is received_at - offset.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator, NamedTuple
from urllib.parse import parse_qs

from ingest.sources.formats.compression import GZIP_MAGIC, CorruptBody, GzipBody
from ingest.sources.sdk import SdkSource, instant

COLUMNS = {
    "uuid": "string",
    "event": "string",
    "distinct_id": "string",
    "timestamp": "timestamp",
    "sent_at": "timestamp",
    "received_at": "timestamp",
    "properties": "json",
    "set": "json",
    "set_once": "json",
    "session_id": "string",
}
SOURCE = SdkSource(
    "posthog",
    tables={"event": "posthog_events"},
    columns={"event": COLUMNS},
    # PostHog's capture takes bodies up to 20 MB and events up to 1 MB
    limits={"max_event_bytes": 1 << 20, "max_batch_bytes": 20 << 20},
)
# the uuid of an event sent without one: from its content and place in the batch, which a retry sends again
DERIVED_UUID_NAMESPACE = uuid.UUID("6f1f3c2e-8d0a-4a7e-9b61-2f5d9c4e7a10")
FORM_TYPE = "application/x-www-form-urlencoded"
GZIP_SPELLINGS = ("gzip", "gzip-js")
IDENTITY_SPELLINGS = ("", "none", "identity", "base64")  # base64 is undone whenever the data is not JSON
DISTINCT_ID_FIELDS = ("distinct_id", "$distinct_id")
BASE64_STANDARD = bytes.maketrans(b"-_", b"+/")


class Row(NamedTuple):
    line: bytes  # the row as one JSON object
    id: str  # the uuid (derived from the event and its place in the batch when it has none)
    uuid: str | None  # the uuid as the event sent it: the key of its v1 result


class Refused(NamedTuple):
    line: bytes  # the event as it came
    reason: str
    uuid: str | None  # the uuid as the event sent it, when it sent one


class InvalidBody(ValueError):
    """The body cannot be read as PostHog events at all: 400."""


class TooLarge(ValueError):
    """The body inflates past the batch limit: 413."""


class Envelope(NamedTuple):
    fields: dict  # the body's own fields (api_key, token, sent_at, ...); a single event is its own envelope
    events: list
    single: bool  # the body was one event, not a batch


def query_fields(query: bytes | None) -> dict[str, str]:
    """A raw query string's parameters, the first value of each."""
    if not query:
        return {}
    # latin-1 both ways: each byte, raw or %XX-escaped, becomes one character and back, whatever its encoding
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return {name: values[0] for name, values in params.items()}


def read_envelope(body: bytes, content_type: str, query: dict[str, str], limit: int) -> Envelope:
    """The events of a v0 capture body (/batch/, /e/, /capture/, ...), its
    compression named by `compression=` in the form or the query, or seen by
    its magic bytes; `limit` bounds what the body inflates to."""
    compression = query.get("compression", "")
    data: bytes = body
    if content_type.split(";")[0].strip().lower() == FORM_TYPE or body.startswith(b"data="):
        form = query_fields(body)
        if "data" not in form:
            raise InvalidBody("a form body must carry data=<JSON or base64 JSON>")
        compression = form.get("compression", compression)
        data = form["data"].encode("latin-1")  # parse_qs read the bytes as latin-1: this gives them back
    compression = compression.strip().lower()
    if compression == "lz64":
        raise InvalidBody("compression=lz64 (LZ-string) is not supported; send gzip-js, base64 or plain JSON")
    if compression not in GZIP_SPELLINGS + IDENTITY_SPELLINGS:
        raise InvalidBody(f"unknown compression {compression!r}; send gzip, gzip-js, base64 or none")
    if compression in GZIP_SPELLINGS and not data.startswith(GZIP_MAGIC):
        data = _unbase64(data, "the gzip data")  # a form carries the gzip bytes base64'd
    if data.startswith(GZIP_MAGIC):
        data = _gunzip(data, limit)
    stripped = data.lstrip()
    if not stripped.startswith((b"{", b"[")):  # posthog-js sends base64 JSON without saying so
        data = _unbase64(stripped, "the body")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"the body is not JSON: {exc}") from None
    if isinstance(document, list):
        return Envelope({}, document, False)
    if not isinstance(document, dict):
        raise InvalidBody("the body must be a JSON object or array of events")
    if "batch" in document:
        if not isinstance(document["batch"], list):
            raise InvalidBody('"batch" must be an array of events')
        return Envelope(document, document["batch"], False)
    return Envelope(document, [document], True)


def read_v1(body: bytes) -> Envelope:
    """The events of a capture v1 body: {"created_at", "batch": [...]}."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
        raise InvalidBody('the body must be {"created_at": ..., "batch": [events...]}')
    return Envelope(document, document["batch"], False)


def body_key(envelope: Envelope, query: dict[str, str]) -> str | None:
    """The project key a v0 body carries: api_key or token in the body, in
    the query, or in an event's properties (posthog-js puts it there)."""
    candidates = [envelope.fields.get("api_key"), envelope.fields.get("token"), query.get("api_key"),
                  query.get("token")]
    for event in envelope.events[:1]:
        properties = event.get("properties") if isinstance(event, dict) else None
        if isinstance(properties, dict):
            candidates += [properties.get("token"), properties.get("api_key")]
        if isinstance(event, dict):
            candidates += [event.get("api_key"), event.get("token")]
    return next((key for key in candidates if isinstance(key, str) and key), None)


def epoch_ms(value: str | None) -> datetime | None:
    """posthog-js's `_=` query parameter, the moment it sent the body; None
    when absent or not a time (it is the transport's, not worth an event)."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, timezone.utc) if value else None
    except (ValueError, OverflowError, OSError):
        return None


def rows(envelope: Envelope, received_at: datetime, max_event_bytes: int, sent_at=None,
         sdk_info: str | None = None) -> Iterator[Row | Refused]:
    """Each event as a row, or refused with the reason. `sent_at` stands in
    when the body carries none (posthog-js's `_=` milliseconds, v1's request
    timestamp); `sdk_info` (v1's PostHog-Sdk-Info, "name/version") gives the
    $lib and $lib_version the v1 SDKs leave out of the properties."""
    batch_sent_at = envelope.fields.get("sent_at", sent_at)
    for number, event in enumerate(envelope.events, 1):
        where = "the event" if envelope.single else f"event {number}"
        if not isinstance(event, dict):
            yield Refused(json.dumps(event).encode(), f"{where}: not a JSON object", None)
            continue
        text = _compact(event)
        sent_uuid = event.get("uuid") if isinstance(event.get("uuid"), str) else None
        if len(text) > max_event_bytes:
            yield Refused(text, f"{where}: {len(text)} bytes, over the limit of {max_event_bytes} (max_event_bytes)",
                          sent_uuid)
            continue
        try:
            row = _row(event, b"%d:%b" % (number, text), event.get("sent_at", batch_sent_at), received_at, sdk_info)
        except ValueError as exc:
            yield Refused(text, f"{where}: {exc}", sent_uuid)
            continue
        except OverflowError:  # the skew correction or the offset ran past the calendar
            yield Refused(text, f"{where}: timestamp, sent_at or offset out of range", sent_uuid)
            continue
        yield Row(_compact(row), row["uuid"], sent_uuid)


def _compact(value) -> bytes:
    """One line of JSON; escaped where a lone surrogate (valid JSON, not UTF-8) would not encode."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), default=str).encode()


def _row(event: dict, placed: bytes, sent_at_value, received_at: datetime, sdk_info: str | None) -> dict:
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise ValueError("needs event, the event's name (a string)")
    properties = event.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise ValueError("properties must be an object")
    properties = _v1_properties(event, properties, sdk_info)
    distinct_id = next((source[field] for source in (event, properties) for field in DISTINCT_ID_FIELDS
                        if source.get(field) not in (None, "")), None)
    if distinct_id is None:
        raise ValueError("needs distinct_id (top-level or in properties)")
    distinct_id = _identifier(distinct_id, "distinct_id")
    updates = {}
    for field in ("$set", "$set_once"):  # top-level (the server SDKs) or in properties (posthog-js, v1)
        value = event.get(field, properties.get(field))
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{field} must be an object")
        updates[field] = value
    timestamp = instant(event.get("timestamp"), "timestamp")
    sent_at = instant(sent_at_value, "sent_at")
    offset = event.get("offset")
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, (int, float))):
        raise ValueError(f"offset must be a number of milliseconds, not {json.dumps(offset)[:40]}")
    ignore_sent_at = properties.get("$ignore_sent_at") is True or \
        (isinstance(event.get("options"), dict) and event["options"].get("disable_skew_correction") is True)
    if timestamp is not None and sent_at is not None and not ignore_sent_at:
        timestamp = received_at + (timestamp - sent_at)  # the device's clock, corrected by how far off it was
    elif timestamp is None and offset is not None:
        timestamp = received_at - timedelta(milliseconds=offset)
    session_id = properties.get("$session_id")
    return {
        "uuid": _uuid(event.get("uuid"), placed),
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": _iso(timestamp or received_at),
        "sent_at": _iso(sent_at),
        "received_at": _iso(received_at),
        "properties": properties,
        "set": updates["$set"],
        "set_once": updates["$set_once"],
        "session_id": _identifier(session_id, "$session_id") if session_id not in (None, "") else None,
    }


def _v1_properties(event: dict, properties: dict, sdk_info: str | None) -> dict:
    """The properties as PostHog keeps them: v1 lifts $session_id and
    $window_id to the top level and leaves $lib to a header; they go back."""
    restored = {}
    for field, prop in (("session_id", "$session_id"), ("window_id", "$window_id")):
        if isinstance(event.get(field), str) and prop not in properties:
            restored[prop] = event[field]
    if sdk_info and "$lib" not in properties:
        library, _, version = sdk_info.partition("/")
        restored["$lib"] = library
        if version:
            restored["$lib_version"] = version
    return {**properties, **restored} if restored else properties


def _uuid(value, placed: bytes) -> str:
    if value is None:
        return str(uuid.uuid5(DERIVED_UUID_NAMESPACE, hashlib.sha256(placed).hexdigest()))
    if not isinstance(value, str):
        raise ValueError(f"uuid must be a string, not {json.dumps(value)[:40]}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"uuid {json.dumps(value)[:60]} is not a UUID") from None


def _identifier(value, field: str) -> str:
    """PostHog ids are strings; typed SDKs send numbers too."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{field} must be a string, not {json.dumps(value)[:40]}")


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    # isoformat, not strftime: %Y drops the leading zeros of a year before 1000
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _unbase64(data: bytes, what: str) -> bytes:
    # a form's unescaped "+" arrives as a space; the URL-safe alphabet is taken too; padding may be left off
    data = data.strip().translate(BASE64_STANDARD).replace(b" ", b"+")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBody(f"{what} is neither JSON nor base64") from None


def _gunzip(data: bytes, limit: int) -> bytes:
    """gzip data inflated by the body decompressor HTTP bodies use, within `limit`."""
    inflate = GzipBody()
    try:
        inflated = inflate.feed(data, limit)
        inflate.finish()
    except CorruptBody as exc:
        raise InvalidBody(str(exc).replace("gzip body", "gzip data")) from None
    except OverflowError:
        raise TooLarge(f"the body inflates past the limit of {limit} bytes (max_batch_bytes); send smaller batches") from None
    return inflated
