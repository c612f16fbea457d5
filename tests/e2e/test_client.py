"""The Python client (ingest.client), end to end through a real server subprocess."""
import asyncio
import http.client
from datetime import datetime, timezone
import json
import socket
import threading

import pytest

from ingest.client import wire as client_module  # where encode_event looks for orjson
from ingest.client import (ABANDONED, AsyncClient, Client, ClientClosed, FlushTimeout, IngestError, QueueFull,
                           RequestTooLarge, RetryPolicy, encode_event, post_ndjson)
from ingest.testing.corpus import ndjson

FAST = ["--flush-interval", 50]  # the server lands batches soon after they arrive
# A server that never answers: every batch stays queued (retried, never settled) until close() gives up.
UNREACHABLE = dict(max_queue=10, batch_events=4, max_retries=100, backoff_base=1.0, backoff_max=1.0)


def url(server) -> str:
    return f"http://{server.host}:{server.http_port}"


def events(count: int, start: int = 0) -> list[bytes]:
    return ndjson(count, start=start).splitlines()


def assert_exactly_once(server, table: str, count: int) -> None:
    """Every id 0..count-1 received once and landed once."""
    assert server.stats(table)["received"] == count
    server.wait_landed(table, count)
    rows = server.query(f"SELECT count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi FROM {table}")
    assert rows.to_pylist() == [{"n": count, "ids": count, "lo": 0, "hi": count - 1}]


def assert_all_acknowledged(client, count: int) -> None:
    assert (client.sent, client.acknowledged, client.pending, client.failed_events, client.failed) == (count, count, 0, 0, [])


def server_has_receipts(server) -> bool:
    """Feature detection while the server side of wait=flushed and
    Idempotency-Key lands: its replies then carry a receipt."""
    status, reply = server.ingest("_probe", b'{"probe": 1}\n')
    assert status == 200
    return "receipt" in reply


@pytest.fixture
def refused_url():
    """A port bound (so nobody else takes it) but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_events_serialise_the_same_without_orjson(monkeypatch):
    event = {"user": "ådå", "n": 1, "x": 1.5, "ok": True, "gone": None, "tags": [1, "a"],
             "at": datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)}
    with_orjson = encode_event(event)
    monkeypatch.setattr(client_module, "orjson", None)
    assert encode_event(event) == with_orjson
    assert json.loads(with_orjson)["at"] == "2024-05-01T12:00:00.123000+00:00"
    assert encode_event('{"a": 1}\r\n') == encode_event(b'{"a": 1}') == b'{"a": 1}'
    for not_one_line in (b'{"a":\n1}', ""):
        with pytest.raises(ValueError):
            encode_event(not_one_line)


def test_backoff_is_full_jitter_but_never_shorter_than_retry_after():
    policy = RetryPolicy(backoff_base=0.1, backoff_max=10.0)
    assert all(0 <= policy.delay(attempt) <= min(0.1 * 2 ** attempt, 10.0) for attempt in range(12) for _ in range(50))
    assert all(policy.delay(attempt, retry_after=2.0) >= 2.0 for attempt in range(12))


def test_threads_send_every_event_exactly_once(start_server):
    server = start_server(*FAST)
    lines = events(8000)
    client = Client(url(server), batch_events=100, flush_interval=0.05)

    def sender(share):
        for n, line in enumerate(share):
            client.send("threads", json.loads(line) if n % 2 else line)  # dicts and ready JSON alike

    threads = [threading.Thread(target=sender, args=(lines[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.close() is True
    assert_all_acknowledged(client, 8000)
    with pytest.raises(ClientClosed):
        client.send("threads", {"id": -1})
    assert_exactly_once(server, "threads", 8000)
    assert server.stop() == 0


def test_async_client_sends_every_event_exactly_once(start_server):
    server = start_server(*FAST)
    lines = events(6000)

    async def sender(client, share):
        for n, line in enumerate(share):
            await client.send("tasks", json.loads(line) if n % 2 else line)
            if n % 100 == 0:
                await asyncio.sleep(0)  # let the tasks interleave

    async def main():
        async with AsyncClient(url(server), batch_events=100, flush_interval=0.05, gzip=True) as client:
            await asyncio.gather(*(sender(client, lines[i::4]) for i in range(4)))
            assert await client.flush() is True
            assert client.pending == 0
        return client

    client = asyncio.run(main())
    assert_all_acknowledged(client, 6000)
    assert_exactly_once(server, "tasks", 6000)
    assert server.stop() == 0


def test_backpressure_429_is_waited_out_and_every_event_lands_once(start_server):
    server = start_server("--sink-delay-ms", 100, "--batch-events", 500, "--flush-interval", 50,
                          "--max-buffer-bytes", 1_000_000)
    with Client(url(server)) as client:
        for line in events(12_000):
            client.send("busy", line)
    assert client.throttled >= 1 and client.retries >= client.throttled
    assert_all_acknowledged(client, 12_000)
    assert_exactly_once(server, "busy", 12_000)
    assert server.stop() == 0


def test_gzip_and_post_return_the_servers_reply(start_server):
    server = start_server(*FAST)
    with Client(url(server), gzip=True, max_request_bytes=4096) as client:
        reply = client.post("posted", [{"id": 0}, b'{"id": 1', '{"id": 2}\n'])
        assert (reply["accepted"], reply["rejected"], [e["line"] for e in reply["errors"]]) == (2, 1, [2])
        assert client.post("posted", ["not json"])["accepted"] == 0  # 400: nothing valid, still a reply
        assert client.post("posted", [{"id": 3}], wait="none")["accepted"] == 1
        with pytest.raises(RequestTooLarge):
            client.post("posted", [{"pad": "x" * 3000}, {"pad": "y" * 3000}])  # each fits, not both
        with pytest.raises(ValueError, match="invalid table name"):
            client.post("no-dashes", [{"id": 4}])
    assert (client.sent, client.acknowledged, client.failed) == (0, 0, [])  # post() is not the queue
    server.wait_landed("posted", 3)
    assert server.query("SELECT id FROM posted ORDER BY id").to_pylist() == [{"id": 0}, {"id": 2}, {"id": 3}]
    assert server.stop() == 0


def test_rejected_lines_fail_with_the_lines_and_are_not_retried(start_server):
    server = start_server(*FAST)
    failures = []
    with Client(url(server), batch_events=4, flush_interval=60, on_error=failures.append) as client:
        for line in [b'{"id": 0}', b'{"id": 1', b'{"id": 2}', b'{"id": 3}', b"bad", b"also bad"]:
            client.send("rejects", line)
    assert failures == client.failed
    assert [(f.table, f.count, f.status, f.events) for f in failures] == [
        ("rejects", 1, 200, [b'{"id": 1']),  # the first batch: one line of four rejected
        ("rejects", 2, 400, [b"bad", b"also bad"]),  # the second: nothing valid
    ]
    assert "line 2" in failures[0].reason
    assert (client.sent, client.acknowledged, client.failed_events, client.retries) == (6, 3, 3, 0)
    server.wait_landed("rejects", 3)
    assert server.stop() == 0


def test_413_halves_the_batch_until_it_fits(start_server):
    server = start_server("--max-body-bytes", 2000, *FAST)
    too_big = b'{"id": -1, "pad": "' + b"x" * 3000 + b'"}'
    with Client(url(server), batch_events=301, flush_interval=60) as client:
        for line in events(300):
            client.send("split", line)
        client.send("split", too_big)
    assert client.acknowledged == 300
    assert [(f.count, f.status, f.events) for f in client.failed] == [(1, 413, [too_big])]
    assert_exactly_once(server, "split", 300)
    assert server.stop() == 0


def test_overflow_drop_counts_what_it_drops(refused_url):
    failures = []
    client = Client(refused_url, overflow="drop", on_error=failures.append, **UNREACHABLE)
    assert [client.send("t", {"n": n}) for n in range(25)] == [True] * 10 + [False] * 15
    assert (client.sent, client.dropped, client.pending) == (10, 15, 10)
    assert client.close(timeout=0) is False  # gives up on what is still being retried
    assert (client.pending, client.acknowledged, client.failed_events) == (0, 0, 10)
    assert failures == client.failed and {f.reason for f in failures} == {ABANDONED}
    assert sorted(json.loads(line)["n"] for f in failures for line in f.events) == list(range(10))


def test_overflow_raise_and_block_with_a_timeout(refused_url):
    raising = Client(refused_url, overflow="raise", **UNREACHABLE)
    blocking = Client(refused_url, overflow="block", **UNREACHABLE)
    for client in (raising, blocking):
        for n in range(10):
            assert client.send("t", {"n": n}) is True
    with pytest.raises(QueueFull, match="max_queue=10"):
        raising.send("t", {"n": 10})
    with pytest.raises(QueueFull, match="max_queue=10"):
        blocking.send("t", {"n": 10}, timeout=0.01)
    blocked = []

    def send_blocked():
        try:
            blocking.send("t", {"n": 11})
        except ClientClosed as exc:
            blocked.append(exc)

    sender = threading.Thread(target=send_blocked)
    sender.start()  # blocks until close(): the queue never drains
    for client in (raising, blocking):
        assert client.close(timeout=0) is False
        assert (client.sent, client.dropped, client.failed_events, client.pending) == (10, 0, 10, 0)
    sender.join()
    assert len(blocked) == 1


def test_async_overflow_drop(refused_url):
    async def main():
        client = AsyncClient(refused_url, overflow="drop", **UNREACHABLE)
        sent = [await client.send("t", {"n": n}) for n in range(25)]
        return client, sent, await client.close(timeout=0)

    client, sent, closed = asyncio.run(main())
    assert sent == [True] * 10 + [False] * 15 and closed is False
    assert (client.sent, client.dropped, client.failed_events, client.pending) == (10, 15, 10, 0)


def test_post_gives_up_after_max_retries(refused_url):
    with Client(refused_url, max_retries=2, backoff_base=0.001, backoff_max=0.001) as client:
        with pytest.raises(IngestError, match="gave up after 3 attempts") as error:
            client.post("t", [{"n": 1}])
        assert error.value.status is None and client.retries == 2
    with pytest.raises(IngestError, match="gave up after 1 attempts"):
        post_ndjson(refused_url, "t", b'{"n": 1}\n', retry=RetryPolicy(max_retries=0))


class CuttingProxy:
    """Forwards TCP to the server, but cuts the first `cuts` connections the
    moment the server's answer arrives: the server took the request, the
    client never hears so and has to retry."""

    def __init__(self, server, cuts: int):
        self._upstream = (server.host, server.http_port)
        self._cuts = cuts
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            cut, self._cuts = self._cuts > 0, self._cuts - 1
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, cut), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, cut: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if cut:
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def test_a_cut_connection_is_retried_under_the_same_idempotency_key(start_server):
    server = start_server(*FAST)
    proxy = CuttingProxy(server, cuts=2)
    with Client(proxy.url, batch_events=100, flush_interval=60, backoff_base=0.01) as client:
        for line in events(1000):
            client.send("cut", line)
    proxy.close()
    assert client.retries >= 2
    assert_all_acknowledged(client, 1000)
    if not server_has_receipts(server):
        pytest.skip("the server does not remember Idempotency-Keys yet: delivered, but at least once")
    assert client.replayed >= 1
    assert_exactly_once(server, "cut", 1000)
    assert server.stop() == 0


def test_wait_flushed_answers_once_the_events_are_committed(start_server):
    server = start_server("--flush-interval", 100)
    if not server_has_receipts(server):
        pytest.skip("the server does not support wait=flushed yet")
    with Client(url(server), wait="flushed", batch_events=50) as client:
        assert client.post("flushed", events(50))["accepted"] == 50
        # committed when answered: counted at once, without polling
        assert server.query("SELECT count(*) AS n FROM flushed").to_pylist() == [{"n": 50}]
        for line in events(100, start=50):
            client.send("flushed", line)
        assert client.flush() is True
        assert server.query("SELECT count(*) AS n FROM flushed").to_pylist() == [{"n": 150}]
    assert_all_acknowledged(client, 100)
    assert client.unflushed == 0
    assert server.stop() == 0


def test_flushed_wait_timing_out_is_acknowledged_not_resent(start_server):
    server = start_server("--sink-delay-ms", 500, *FAST)  # every commit takes ten times the wait
    if not server_has_receipts(server):
        pytest.skip("the server does not support wait=flushed yet")
    with Client(url(server), wait="flushed", wait_timeout=0.05, batch_events=100, flush_interval=60) as client:
        with pytest.raises(FlushTimeout) as timed_out:
            client.post("slow", events(10, start=1000))
        assert timed_out.value.status == 504 and timed_out.value.reply["receipt"]
        for line in events(100):
            client.send("slow", line)
    assert_all_acknowledged(client, 100)
    assert (client.unflushed, client.retries) == (100, 0)
    server.wait_landed("slow", 110)
    assert server.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM slow").to_pylist() == [{"n": 110, "ids": 110}]
    assert server.stop() == 0


def test_a_repeated_idempotency_key_is_ingested_once(start_server):
    server = start_server(*FAST)
    if not server_has_receipts(server):
        pytest.skip("the server does not support Idempotency-Key yet")
    body = ndjson(20)
    first = post_ndjson(url(server), "idem", body, idempotency_key="batch-1", wait="flushed")
    connection = http.client.HTTPConnection(server.host, server.http_port)
    again = post_ndjson(connection, "idem", body, idempotency_key="batch-1", wait="flushed")
    assert again == first and first["accepted"] == 20
    with pytest.raises(IngestError) as conflict:
        post_ndjson(connection, "idem", ndjson(5), idempotency_key="batch-1")
    assert conflict.value.status == 422
    connection.close()
    assert server.stats("idem")["received"] == 20
    assert server.query("SELECT count(*) AS n FROM idem").to_pylist() == [{"n": 20}]
    assert server.stop() == 0
