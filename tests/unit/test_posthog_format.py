"""PostHog capture bodies in each spelling the SDKs send, and the rows their events become."""
from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from ingest.sources.formats import posthog

NOW = datetime(2026, 1, 2, 3, 4, 10, tzinfo=timezone.utc)
EVENT = {"event": "clicked", "distinct_id": "u1", "uuid": "0b0c9d5e-2a39-4bd3-8d0e-1a2b3c4d5e6f",
         "properties": {"url": "/é"}}
FORM = "application/x-www-form-urlencoded"


def events_of(body: bytes, content_type="application/json", query=b"", limit=1 << 20) -> list:
    return posthog.read_envelope(body, content_type, posthog.query_fields(query), limit).events


@pytest.mark.parametrize("body, content_type, query", [
    (json.dumps([EVENT]).encode(), "application/json", b""),
    (json.dumps({"batch": [EVENT]}).encode(), "application/json", b""),
    (base64.b64encode(json.dumps([EVENT]).encode()), "text/plain", b""),
    (b"data=" + quote(json.dumps([EVENT])).encode(), FORM, b""),
    (b"data=" + quote(base64.b64encode(json.dumps([EVENT]).encode())).encode(), FORM, b""),
    (b"data=" + base64.b64encode(json.dumps([EVENT]).encode()), FORM, b""),  # "+" left unescaped: read as a space
    (b"data=" + base64.urlsafe_b64encode(json.dumps([EVENT]).encode()).rstrip(b"="), FORM, b""),
    (gzip.compress(json.dumps([EVENT]).encode()), "text/plain", b"compression=gzip-js"),
    (b"compression=gzip&data=" + quote(base64.b64encode(gzip.compress(json.dumps([EVENT]).encode()))).encode(),
     FORM, b""),
])
def test_every_spelling_of_a_body_gives_the_same_events(body, content_type, query):
    assert events_of(body, content_type, query) == [EVENT]


def test_a_single_event_is_its_own_envelope():
    envelope = posthog.read_envelope(json.dumps({**EVENT, "api_key": "k"}).encode(), "", {}, 1 << 20)
    assert envelope.single and posthog.body_key(envelope, {}) == "k"


@pytest.mark.parametrize("body, query, message", [
    (b"data=abc", b"compression=lz64", "lz64"),
    (b"[]", b"compression=br", "unknown compression"),
    (b"{not json", b"", "not JSON"),
    (b"!!!", b"", "neither JSON nor base64"),
    (b'{"batch": 5}', b"", '"batch" must be an array'),
    (base64.b64encode(b"5"), b"", "must be a JSON object or array"),
    (gzip.compress(b"[]")[:-4], b"compression=gzip", "truncated"),
])
def test_a_body_that_cannot_be_read_says_why(body, query, message):
    with pytest.raises(posthog.InvalidBody, match=message):
        events_of(body, "text/plain", query)


def test_gzip_that_inflates_past_the_limit_is_too_large():
    with pytest.raises(posthog.TooLarge, match="max_batch_bytes"):
        events_of(gzip.compress(b"[" + b" " * 5000 + b"]"), limit=1000)


def test_rows_correct_the_clock_and_name_each_bad_event():
    envelope = posthog.Envelope({"sent_at": "2026-01-02T03:04:06Z"}, [
        {**EVENT, "timestamp": "2026-01-02T03:04:05Z", "$set": {"plan": "pro"}},
        {"event": "no id", "properties": {"$distinct_id": 7, "$set_once": {"a": 1}}, "offset": 500},
        {"event": "x"}, {**EVENT, "uuid": "nope"}, {**EVENT, "properties": []}, "text"], False)
    rows = list(posthog.rows(envelope, NOW, 1 << 20))
    first, second = (json.loads(row.line) for row in rows[:2])
    assert first["timestamp"] == "2026-01-02T03:04:09.000000Z"  # sent a second after it happened
    assert first["set"] == {"plan": "pro"} and first["uuid"] == EVENT["uuid"]
    assert (second["distinct_id"], second["set_once"], second["timestamp"]) == ("7", {"a": 1},
                                                                                 "2026-01-02T03:04:09.500000Z")
    assert rows[1].uuid is None and rows[1].id == second["uuid"]  # derived from the event: a retry gets the same
    assert [row.reason for row in rows[2:]] == [
        "event 3: needs distinct_id (top-level or in properties)", 'event 4: uuid "nope" is not a UUID',
        "event 5: properties must be an object", "event 6: not a JSON object"]


def test_v1_events_get_back_what_the_sdk_moved_out_of_their_properties():
    envelope = posthog.read_v1(json.dumps({"batch": [{**EVENT, "session_id": "s1", "properties": {},
                                                      "options": {"disable_skew_correction": True},
                                                      "timestamp": "2026-01-02T03:04:05Z"}]}).encode())
    (row,) = posthog.rows(envelope, NOW, 1 << 20, "2026-01-02T03:04:06Z", "posthog-python/7.0.0")
    line = json.loads(row.line)
    assert line["properties"] == {"$session_id": "s1", "$lib": "posthog-python", "$lib_version": "7.0.0"}
    assert line["session_id"] == "s1" and line["timestamp"] == "2026-01-02T03:04:05.000000Z"  # not corrected


def test_identical_events_without_a_uuid_are_told_apart_by_their_place_in_the_batch():
    twice = {"event": "tick", "distinct_id": "u1", "timestamp": "2026-01-02T03:04:05Z"}
    rows = list(posthog.rows(posthog.Envelope({}, [twice, twice], False), NOW, 1 << 20))
    again = list(posthog.rows(posthog.Envelope({}, [twice, twice], False), NOW, 1 << 20))
    assert rows[0].id != rows[1].id and [row.id for row in rows] == [row.id for row in again]
