"""Segment's HTTP Tracking API, driven by the real Segment Python SDK
(`segment-analytics-python`, unmodified) pointed at a server subprocess:
every message lands once, in its warehouse table, and the SDK's retry
logic does the right thing with our answers."""
from __future__ import annotations

import base64
import gzip
import json

import pyarrow as pa
import pytest
from conftest import poll
from segment.analytics import Client
from segment.analytics.request import APIError

WRITE_KEY = "wk-segment-0123456789"
BATCH = {"Content-Type": "application/json"}


def sdk(server, errors: list, **options) -> Client:
    """The SDK as an app would configure it, but for the host."""
    return Client(WRITE_KEY, host=f"http://127.0.0.1:{server.http_port}", on_error=lambda e, batch: errors.append(e),
                  max_retries=20, **options)


def count(server, table: str) -> int:
    status, _, payload = server.http("POST", "/v1/query", f"SELECT count(*) AS n FROM {table}".encode())
    return pa.ipc.open_stream(payload).read_all().to_pylist()[0]["n"] if status == 200 else 0


def wait_rows(server, table: str, expected: int) -> None:
    poll(lambda: count(server, table) >= expected, what=f"{expected} rows in {table}")
    assert count(server, table) == expected


def refusals(server, reason: str, token: str) -> float:
    return server.metrics().get(("ingest_refusals_total", frozenset({"reason": reason, "token": token}.items())), 0)


def post_batch(server, messages: list, sent_at="2026-01-01T00:00:10Z", headers=None) -> tuple[int, dict]:
    body = json.dumps({"batch": messages, "sentAt": sent_at, "writeKey": WRITE_KEY}).encode()
    status, _, payload = server.http("POST", "/v1/batch", body, {**BATCH, **(headers or {})})
    return status, json.loads(payload)


@pytest.mark.parametrize("sink", ["duckdb", "parquet"])
def test_every_message_type_lands_once_in_its_warehouse_table(start_server, sink):
    server = start_server("--sink", sink, "--flush-interval", 20)
    errors: list = []
    client = sdk(server, errors, upload_size=100)
    for n in range(250):
        client.track(f"user{n % 5}", "Signed Up", {"plan": "pro", "n": n})
    client.identify("user1", {"email": "ada@example.com"})
    client.page("user1", "Docs", "Home", {"url": "https://example.com/docs"})
    client.screen("user1", "App", "Main")
    client.group("user1", "acme", {"name": "Acme"})
    client.alias("user1", "user-renamed")
    client.flush()
    client.shutdown()
    assert errors == []
    wait_rows(server, "tracks", 250)
    tracks = server.query("SELECT n FROM (SELECT CAST(properties->>'n' AS INT) AS n FROM tracks) ORDER BY n")
    assert tracks.column("n").to_pylist() == list(range(250))  # each once
    track = server.query("SELECT * FROM tracks WHERE properties->>'n' = '7'").to_pylist()[0]
    assert (track["user_id"], track["event"], track["anonymous_id"]) == ("user2", "Signed Up", None)
    assert len(track["message_id"]) == 36 and json.loads(track["properties"]) == {"plan": "pro", "n": 7}
    assert json.loads(track["context"])["library"]["name"] == "analytics-python"
    assert track["original_timestamp"] <= track["sent_at"] <= track["received_at"]  # one clock: the SDK's and ours
    for table, column, value in (("identifies", "traits", {"email": "ada@example.com"}),
                                 ("pages", "properties", {"url": "https://example.com/docs"}),
                                 ("groups", "traits", {"name": "Acme"})):
        wait_rows(server, table, 1)
        assert json.loads(server.query(f"SELECT {column} FROM {table}").to_pylist()[0][column]) == value
    wait_rows(server, "screens", 1)
    assert server.query("SELECT name, category FROM screens").to_pylist() == [{"name": "Main", "category": "App"}]
    assert server.query("SELECT name, category FROM pages").to_pylist() == [{"name": "Home", "category": "Docs"}]
    wait_rows(server, "aliases", 1)
    assert server.query("SELECT user_id, previous_id FROM aliases").to_pylist() == [
        {"user_id": "user-renamed", "previous_id": "user1"}]
    assert server.query("SELECT group_id FROM groups").to_pylist() == [{"group_id": "acme"}]


def test_the_device_clock_is_corrected_as_segment_does(start_server):
    server = start_server("--flush-interval", 20)
    # the device's clock runs 1 hour behind: it sent at 09:00:10 what happened at 09:00:00 by its clock
    status, answer = post_batch(server, [{"type": "track", "userId": "u", "event": "e", "messageId": "m1",
                                          "timestamp": "2026-01-01T09:00:00Z"}], sent_at="2026-01-01T09:00:10Z")
    assert (status, answer) == (200, {"success": True})
    wait_rows(server, "tracks", 1)
    row = server.query("SELECT epoch(received_at) - epoch(timestamp) AS behind, original_timestamp, sent_at "
                       "FROM tracks").to_pylist()[0]
    assert abs(row["behind"] - 10) < 1e-3  # happened 10 s before it was received, whatever the device's clock said
    assert (row["original_timestamp"].isoformat(), row["sent_at"].isoformat()) == (
        "2026-01-01T09:00:00+00:00", "2026-01-01T09:00:10+00:00")


def test_a_retried_batch_lands_once_even_after_a_crash(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--flush-interval", 60_000, data_dir=data_dir)
    messages = [{"type": "track", "userId": "u", "event": "e", "messageId": f"m{n}"} for n in range(20)]
    messages.append({"type": "identify", "userId": "u", "traits": {"a": 1}, "messageId": "i1"})
    assert post_batch(server, messages)[0] == 200
    # the SDK's retry: the same messages, a new sentAt
    assert post_batch(server, messages, sent_at="2026-01-01T00:00:11Z") == (200, {"success": True})
    server.stop(sig=9)  # acknowledged twice, landed never: both copies were in the write-ahead log, once
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    assert post_batch(server, messages, sent_at="2026-01-01T00:00:12Z") == (200, {"success": True})
    assert post_batch(server, messages[::-1])[0] == 200  # the same messages in another order: the same batch
    wait_rows(server, "tracks", 20)
    wait_rows(server, "identifies", 1)
    assert server.stop() == 0  # a clean stop: everything landed, the log's segments go, their keys are saved
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    assert post_batch(server, messages, sent_at="2026-01-01T00:00:13Z") == (200, {"success": True})
    assert server.stats("tracks").get("received", 0) == 0  # found by its key: nothing logged again
    wait_rows(server, "tracks", 20)
    assert server.query("SELECT count(DISTINCT message_id) AS n FROM tracks").to_pylist() == [{"n": 20}]
    # a message twice within one batch lands once too
    assert post_batch(server, [messages[0] | {"messageId": "twice"}] * 2)[0] == 200
    wait_rows(server, "tracks", 21)


def test_the_sdk_retries_a_429_and_every_message_lands_once(start_server, tmp_path):
    config = tmp_path / "tokens.toml"
    config.write_text(f'[[auth.tokens]]\nname = "web"\nsecret = "{WRITE_KEY}"\nscopes = ["write"]\n'
                      'events_per_second = 50\n'
                      '[[auth.tokens]]\nname = "ops"\nsecret = "ops-secret-0123456789"\nscopes = ["admin"]\n')
    server = start_server("--config", config, "--flush-interval", 20)
    server.authorization = "Bearer ops-secret-0123456789"
    errors: list = []
    client = sdk(server, errors, upload_size=100)  # 100 a batch on a 50/s token: the second batch gets a 429
    for n in range(300):
        client.track("u", "Clicked", {"n": n})
    client.flush()
    client.shutdown()
    assert errors == []
    wait_rows(server, "tracks", 300)
    assert server.query("SELECT count(DISTINCT message_id) AS n FROM tracks").to_pylist() == [{"n": 300}]
    assert refusals(server, "rate_limited", "web") >= 1


def test_the_write_key_is_a_token_once_tokens_exist(start_server, tmp_path):
    config = tmp_path / "tokens.toml"
    config.write_text(f'[[auth.tokens]]\nname = "web"\nsecret = "{WRITE_KEY}"\nscopes = ["write"]\n'
                      'tables = ["tracks"]\n'
                      '[[auth.tokens]]\nname = "ops"\nsecret = "ops-secret-0123456789"\nscopes = ["admin"]\n')
    server = start_server("--config", config, "--flush-interval", 20)
    track = {"type": "track", "userId": "u", "event": "e"}
    # Basic auth with the write key as user (the SDK), or writeKey in the body
    basic = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    status, _, payload = server.http("POST", "/v1/track", json.dumps(track).encode(), {**BATCH, "Authorization": basic})
    assert (status, json.loads(payload)) == (200, {"success": True})
    assert post_batch(server, [track | {"messageId": "in-body"}])[0] == 200
    status, headers, _ = server.http("POST", "/v1/track", json.dumps(track | {"writeKey": "wrong-key-0123456789"}).encode(), BATCH)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert server.http("POST", "/v1/track", json.dumps(track).encode(), BATCH)[0] == 401
    status, _, payload = server.http("POST", "/v1/identify", json.dumps({"userId": "u", "writeKey": WRITE_KEY}).encode(), BATCH)
    assert status == 403 and "identifies" in json.loads(payload)["error"]  # not on the token's list
    server.authorization = "Bearer ops-secret-0123456789"
    wait_rows(server, "tracks", 2)
    # the SDK hears 401 as final: it does not retry, and raises it
    client = Client("not-a-token-0123456789", host=f"http://127.0.0.1:{server.http_port}", max_retries=3,
                    sync_mode=True)
    with pytest.raises(APIError) as refused:
        client.track("u", "e")
    assert refused.value.status == 401
    assert refusals(server, "unauthenticated", "") == 3  # the wrong key, no key, the SDK's one request
    assert refusals(server, "forbidden", "web") == 1


def test_gzip_bodies_and_limits(start_server, tmp_path):
    config = tmp_path / "segment.toml"
    config.write_text('[sources.segment]\ntables = {track = "web_tracks"}\nmax_event_bytes = 2000\n'
                      'max_batch_bytes = 20000\n')
    server = start_server("--config", config, "--flush-interval", 20)
    errors: list = []
    client = sdk(server, errors, gzip=True)
    for n in range(10):
        client.track("u", "Gzipped", {"n": n})
    client.flush()
    client.shutdown()
    assert errors == []
    wait_rows(server, "web_tracks", 10)
    assert count(server, "tracks") == 0
    # over max_batch_bytes: 400, which the SDK does not retry (nothing could make it fit)
    big = [{"type": "track", "userId": "u", "event": "e", "properties": {"pad": "x" * 1500}} for _ in range(20)]
    status, answer = post_batch(server, big)
    assert status == 400 and "max_batch_bytes" in answer["error"]
    body = gzip.compress(json.dumps({"batch": big[:2], "writeKey": WRITE_KEY}).encode())
    status, _, _ = server.http("POST", "/v1/batch", body, {**BATCH, "Content-Encoding": "gzip"})
    assert status == 200
    wait_rows(server, "web_tracks", 12)
    # one message over max_event_bytes: kept in the dead-letter store, the others land
    status, answer = post_batch(server, [big[0], {**big[0], "properties": {"pad": "y" * 3000}}])
    assert (status, answer) == (200, {"success": True})
    wait_rows(server, "web_tracks", 13)
    assert server.http("POST", "/v1/track", b"not json", BATCH)[0] == 400


def test_bad_messages_are_dead_lettered_with_their_reason_and_the_rest_land(start_server):
    server = start_server("--flush-interval", 20)
    status, answer = post_batch(server, [
        {"type": "track", "userId": "u", "event": "good", "messageId": "g1"},
        {"type": "track", "userId": "u", "messageId": "no-event"},
        {"type": "launch", "userId": "u", "messageId": "unknown-type"},
        {"type": "identify", "messageId": "nobody"},
        {"type": "track", "userId": "u", "event": "late", "timestamp": "yesterday"},
        {"type": "track", "anonymousId": 42, "event": "good too", "messageId": "g2"},
    ])
    assert (status, answer) == (200, {"success": True})  # what Segment answers: the SDK must not retry these
    wait_rows(server, "tracks", 2)
    assert sorted(server.query("SELECT anonymous_id FROM tracks").column("anonymous_id").to_pylist(),
                  key=str) == ["42", None]
    status, _, payload = server.http("POST", "/v1/track", json.dumps({"userId": "u"}).encode(), BATCH)
    assert status == 400 and "needs event" in json.loads(payload)["error"]
    def kept() -> dict:  # each refused message, as it came, with its reason
        rows = [row for path in sorted((server.data_dir / "deadletter").glob("*/*.arrow"))
                for row in pa.ipc.open_file(path).read_all().to_pylist()]
        return {row["error"]: json.loads(row["line"]) for row in rows}
    poll(lambda: len(kept()) == 5, what="the refused messages in the dead-letter store")
    reasons = kept()
    assert reasons["message 2 (track): needs event"]["messageId"] == "no-event"
    assert reasons["message 3: type 'launch' is not one of track, identify, page, screen, group, alias"]["type"] == "launch"
    assert reasons["message 4 (identify): needs userId or anonymousId"]["messageId"] == "nobody"
    assert reasons['message 5 (track): timestamp "yesterday" is not an ISO-8601 timestamp']["event"] == "late"
    assert reasons["the message (track): needs event"] == {"userId": "u"}
