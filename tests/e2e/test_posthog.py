"""PostHog's capture API against a real server on loopback, driven by the
real posthog SDK, unmodified (v0 /batch/ plain and gzip'd, v1 with its
per-event results), and by hand for what posthog-js and retries send: form
bodies, a batch posted twice, a bad event among good ones, a project key
that is not a token."""
from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import uuid
from urllib.parse import quote

import pytest
from posthog import Posthog

TABLE = "posthog_events"
JSON_BODY = {"Content-Type": "application/json"}
FORM_BODY = {"Content-Type": "application/x-www-form-urlencoded"}
ADMIN = "admin-secret-0123456789abcdef"
PROJECT_KEY = "phc_project-key-0123456789abcdef"
TOKENS = f"""
[[auth.tokens]]
name = "ops"
secret = "{ADMIN}"
scopes = ["admin"]

[[auth.tokens]]
name = "posthog-project"
secret = "{PROJECT_KEY}"
scopes = ["write"]
tables = ["{TABLE}"]
"""


def sdk(server, api_key="phc_anything", **options) -> tuple[Posthog, list]:
    """The real SDK pointed at the server, and the errors it reports."""
    errors = []
    client = Posthog(api_key, host=f"http://127.0.0.1:{server.http_port}", sync_mode=False, max_retries=1,
                     on_error=lambda exc, batch: errors.append(exc), **options)
    return client, errors


def landed(server) -> dict[str, dict]:
    rows = server.query(f"SELECT uuid, event, distinct_id, properties, \"set\", set_once, session_id, timestamp, "
                        f"sent_at, received_at FROM {TABLE}").to_pylist()
    return {row["uuid"]: row for row in rows}


def as_object(value):
    return json.loads(value) if isinstance(value, str) else value


def event(name="clicked", distinct_id="user-1", **fields) -> dict:
    return {"event": name, "distinct_id": distinct_id, "uuid": str(uuid.uuid4()),
            "timestamp": "2026-01-02T03:04:05.000Z", "properties": {"page": "/home"}, **fields}


def deadletter(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "ingest", "deadletter", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("gzipped", [False, True])
def test_the_sdks_events_land_once_with_their_columns(start_server, gzipped):
    server = start_server("--flush-interval", 20)
    client, errors = sdk(server, gzip=gzipped)
    sent = {client.capture("signed up", distinct_id="user-1", properties={"plan": "pro", "seats": 3,
                                                                          "$session_id": "session-9"}): "signed up",
            client.capture("clicked", distinct_id="user-2", properties={"button": "buy"}): "clicked",
            client.set(distinct_id="user-1", properties={"email": "a@example.com"}): "$set",
            client.set_once(distinct_id="user-1", properties={"first_seen": "today"}): "$set_once",
            client.alias(previous_id="anon-7", distinct_id="user-1"): "$create_alias",
            client.group_identify("company", "acme", {"name": "Acme"}): "$groupidentify"}
    client.flush()
    client.shutdown()
    assert errors == []
    server.wait_landed(TABLE, len(sent))
    rows = landed(server)
    assert {uid: row["event"] for uid, row in rows.items()} == sent  # each event once, by its uuid
    signed_up = next(row for row in rows.values() if row["event"] == "signed up")
    properties = as_object(signed_up["properties"])
    assert (signed_up["distinct_id"], properties["plan"], properties["seats"]) == ("user-1", "pro", 3)
    assert properties["$lib"] == "posthog-python" and signed_up["session_id"] == "session-9"
    assert signed_up["sent_at"] is not None and signed_up["received_at"] is not None
    set_event = next(row for row in rows.values() if row["event"] == "$set")
    assert as_object(set_event["set"]) == {"email": "a@example.com"}
    set_once_event = next(row for row in rows.values() if row["event"] == "$set_once")
    assert as_object(set_once_event["set_once"]) == {"first_seen": "today"}
    assert server.assert_accounted()[TABLE]["landed"] == len(sent)
    assert server.stop() == 0


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_v1_answers_each_event_and_drops_the_bad_one(start_server, compression):
    server = start_server("--flush-interval", 20)
    bad = []

    def spoil_one(message):  # a distinct_id no PostHog takes: that event alone is dropped
        if message["event"] == "spoiled":
            message["distinct_id"] = {"not": "an id"}
            bad.append(message["uuid"])
        return message

    client, errors = sdk(server, capture_mode="v1", capture_compression=compression, before_send=spoil_one)
    sent = {client.capture(f"event {n}", distinct_id="user-1", properties={"n": n, "$session_id": "s-1"}): n
            for n in range(5)}
    client.capture("spoiled", distinct_id="user-1")
    client.flush()
    client.shutdown()
    (error,) = errors  # the SDK reports the dropped event, with the server's reason, and nothing else
    assert [uid for uid, _ in error.drops] == bad and "distinct_id must be a string" in error.drops[0][1]
    server.wait_landed(TABLE, len(sent))
    rows = landed(server)
    assert {uid: as_object(row["properties"])["n"] for uid, row in rows.items()} == sent
    first = rows[next(iter(sent))]
    properties = as_object(first["properties"])
    # what v1 moves out of the properties goes back, as PostHog keeps it
    assert (first["session_id"], properties["$session_id"], properties["$lib"]) == ("s-1", "s-1", "posthog-python")
    server.stop()
    listed = deadletter(server.data_dir, "list", "--format", "json")
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["table"], entry["rows"]) == (TABLE, 1)


def test_a_batch_posted_twice_lands_once(start_server):
    server = start_server("--flush-interval", 20)
    events = [event(distinct_id=f"user-{n}") for n in range(3)]
    body = json.dumps({"api_key": "phc_x", "batch": events, "sent_at": "2026-01-02T03:04:06.000Z"}).encode()
    for path, payload in (("/batch/", body), ("/batch", body), ("/e/", json.dumps(events).encode())):
        status, _, answer = server.http("POST", path, payload, JSON_BODY)
        assert (status, json.loads(answer)) == (200, {"status": 1}), answer
    server.wait_landed(TABLE, 3)
    rows = landed(server)
    assert sorted(rows) == sorted(e["uuid"] for e in events)
    # sent a second after it happened: the row is a second before the server received it
    row = rows[events[0]["uuid"]]
    assert (row["received_at"] - row["timestamp"]).total_seconds() == pytest.approx(1, abs=1e-3)
    assert server.assert_accounted()[TABLE]["received"] == 3  # the copies were not received again
    assert server.stop() == 0


def test_a_token_protected_server_takes_the_project_key_and_refuses_others(start_server, tmp_path):
    config = tmp_path / "tokens.toml"
    config.write_text(TOKENS)
    server = start_server("--config", config, "--flush-interval", 20)
    client, errors = sdk(server, api_key=PROJECT_KEY, gzip=True)
    uid = client.capture("paid", distinct_id="user-1")
    client.shutdown()
    assert errors == []
    wrong, wrong_errors = sdk(server, api_key="phc_wrong-key")
    wrong.capture("paid", distinct_id="user-2")
    wrong.shutdown()
    assert [error.status for error in wrong_errors] == [401]  # the SDK does not retry a 401
    body = json.dumps({"api_key": "phc_wrong-key", "batch": [event()]}).encode()
    status, _, answer = server.http("POST", "/batch/", body, JSON_BODY)
    assert status == 401 and "not valid" in json.loads(answer)["error"], answer
    status, _, answer = server.http("POST", "/batch/", json.dumps({"batch": [event()]}).encode(), JSON_BODY)
    assert status == 401 and "api_key" in json.loads(answer)["error"], answer  # without a key: how to send one
    status, _, answer = server.http("POST", "/i/v1/analytics/events", json.dumps({"batch": [event()]}).encode(),
                                    {**JSON_BODY, "Authorization": "Bearer phc_wrong-key"})
    assert status == 401, answer
    # posthog-js puts the key in each event's properties, and in the query
    status, _, _ = server.http("POST", f"/e/?api_key={PROJECT_KEY}", json.dumps(event()).encode(), JSON_BODY)
    assert status == 200
    status, _, _ = server.http("POST", "/e/", json.dumps(event(properties={"token": PROJECT_KEY})).encode(), JSON_BODY)
    assert status == 200
    server.authorization = f"Bearer {ADMIN}"
    server.wait_landed(TABLE, 3)
    assert uid in landed(server)
    assert server.stop() == 0


def test_the_bodies_posthog_js_sends(start_server):
    server = start_server("--flush-interval", 20)
    events = [event(name="$pageview", properties={"token": "phc_js", "$current_url": "https://example.com/é"}),
              event(name="$autocapture")]
    as_json = json.dumps(events).encode()
    # a form with data=<base64 JSON>, the query's _ the moment it was sent
    form = b"data=" + quote(base64.b64encode(as_json)).encode()
    status, _, answer = server.http("POST", "/e/?ip=1&_=1767323046000&ver=1.200.0", form, FORM_BODY)
    assert (status, json.loads(answer)) == (200, {"status": 1}), answer
    # gzip'd JSON as the body, said by ?compression=gzip-js
    gzipped = [event(name="$pageleave")]
    status, _, answer = server.http("POST", "/e/?compression=gzip-js&_=1767323046000",
                                    gzip.compress(json.dumps(gzipped).encode()), {"Content-Type": "text/plain"})
    assert status == 200, answer
    # a single event, base64'd without saying so, on /capture
    single = event(name="single")
    status, _, answer = server.http("POST", "/capture", base64.b64encode(json.dumps(single).encode()), JSON_BODY)
    assert status == 200, answer
    status, _, answer = server.http("POST", "/e/?compression=lz64", b"data=N4Ig", FORM_BODY)
    assert status == 400 and "lz64" in json.loads(answer)["error"], answer
    status, _, answer = server.http("POST", "/batch/", b"{not json", JSON_BODY)
    assert status == 400 and "not JSON" in json.loads(answer)["error"], answer
    server.wait_landed(TABLE, 4)
    rows = landed(server)
    assert sorted(row["event"] for row in rows.values()) == ["$autocapture", "$pageleave", "$pageview", "single"]
    pageview = rows[events[0]["uuid"]]
    assert as_object(pageview["properties"])["$current_url"] == "https://example.com/é"
    # _=1767323046000 is 2026-01-02T03:04:06Z, a second after the event's timestamp
    assert (pageview["received_at"] - pageview["timestamp"]).total_seconds() == pytest.approx(1, abs=1e-3)
    assert server.stop() == 0


def test_a_bad_event_is_dead_lettered_with_its_reason_and_the_others_land(start_server, tmp_path):
    config = tmp_path / "limits.toml"
    config.write_text("[sources.posthog]\nmax_batch_bytes = 4096\n")
    server = start_server("--config", config, "--flush-interval", 20)
    good = [event(distinct_id="user-1"), event(distinct_id="user-2")]
    batch = [good[0], event(distinct_id=None), event(uuid="not-a-uuid"), good[1]]
    status, _, answer = server.http("POST", "/batch/", json.dumps({"api_key": "k", "batch": batch}).encode(),
                                    JSON_BODY)
    assert (status, json.loads(answer)) == (200, {"status": 1}), answer
    # one event alone is answered for: its client hears why
    status, _, answer = server.http("POST", "/capture/", json.dumps(event(name="")).encode(), JSON_BODY)
    assert status == 400 and "needs event" in json.loads(answer)["error"], answer
    status, _, answer = server.http("POST", "/batch/", json.dumps({"batch": [event()] * 40}).encode(), JSON_BODY)
    assert status == 413 and "max_batch_bytes" in json.loads(answer)["error"], answer
    server.wait_landed(TABLE, 2)
    assert sorted(landed(server)) == sorted(e["uuid"] for e in good)
    assert server.stop() == 0
    listed = deadletter(server.data_dir, "list", "--format", "json")
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {e["table"] for e in entries} == {TABLE} and sum(e["rows"] for e in entries) == 3, listed.stdout
    shown = "".join(deadletter(server.data_dir, "show", e["file"]).stdout for e in entries)
    for reason in ("event 2: needs distinct_id", 'event 3: uuid \\"not-a-uuid\\" is not a UUID',
                   "the event: needs event"):
        assert reason in shown, shown


def test_the_sdk_retries_a_429_and_every_event_lands_once(start_server, tmp_path):
    config = tmp_path / "tokens.toml"
    config.write_text(TOKENS + "events_per_second = 40\n")  # the project key's quota: a 50-event batch runs into debt
    server = start_server("--config", config, "--flush-interval", 20)
    errors = []
    client = Posthog(PROJECT_KEY, host=f"http://127.0.0.1:{server.http_port}", sync_mode=False, max_retries=10,
                     flush_at=50, on_error=lambda exc, batch: errors.append(exc))
    uuids = {client.capture("tick", distinct_id="user-1", properties={"n": n}) for n in range(150)}
    client.shutdown()
    assert errors == []
    server.authorization = f"Bearer {ADMIN}"
    server.wait_landed(TABLE, 150)
    assert set(landed(server)) == uuids  # every one, once
    metrics = server.metrics()
    assert metrics.get(("ingest_refusals_total", frozenset({"reason": "rate_limited", "token": "posthog-project"}.items())), 0) >= 1
