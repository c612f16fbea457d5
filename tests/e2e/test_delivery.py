"""The async patterns clients expect: ack modes, receipts, idempotent
retries, signed webhooks, all against a real server on loopback."""
import http.client
import http.server
import json
import queue
import socket
import threading

import duckdb
import pytest
from conftest import poll

from ingest.server.webhooks import SIGNATURE_HEADER, verify

NDJSON = {"Content-Type": "application/x-ndjson"}
SECRET_ENV = {"INGEST_WEBHOOK_SECRET": "s3cret"}  # secrets come from the environment or a file, never argv


def post(server, path, body, headers=None):
    status, reply_headers, payload = server.http("POST", path, body, {**NDJSON, **(headers or {})})
    return status, reply_headers, json.loads(payload)


def test_receipts_can_be_polled_to_their_final_state(start_server):
    server = start_server("--flush-interval", 100)
    status, headers, reply = post(server, "/v1/ingest/clicks?wait=none", b'{"a":1}\n{"a":2}\n')
    assert status == 202 and reply["accepted"] == 2
    receipt = reply["receipt"]

    def final():
        code, _, payload = server.http("GET", f"/v1/receipts/{receipt}")
        assert code == 200
        document = json.loads(payload)
        return document if document["status"] != "pending" else None

    document = poll(final, what="the receipt to settle")
    assert document["status"] == "landed" and document["landed"] == 2 and document["dead_lettered"] == 0
    assert server.http("GET", "/v1/receipts/nope")[0] == 404
    assert server.stop() == 0


def test_wait_flushed_reports_dead_lettered_rows(start_server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with duckdb.connect(str(data_dir / "ingest.duckdb")) as con:
        con.execute("CREATE TABLE guarded (a INTEGER CHECK (a < 10))")
    server = start_server(data_dir=data_dir)
    status, _, reply = post(server, "/v1/ingest/guarded?wait=flushed", b'{"a":1}\n{"a":50}\n{"a":2}\n')
    assert status == 422
    assert (reply["status"], reply["landed"], reply["dead_lettered"]) == ("dead_lettered", 2, 1)
    assert any("refused by the sink" in reason for reason in reply["reasons"])
    assert server.stop() == 0


def test_wait_flushed_past_its_timeout_is_504_and_still_lands(start_server):
    server = start_server("--sink-delay-ms", 1500, "--flush-interval", 10)
    status, _, reply = post(server, "/v1/ingest/slow?wait=flushed&timeout=0.1", b'{"a":1}\n')
    assert status == 504 and reply["status"] == "pending"
    server.wait_landed("slow", 1)
    code, _, payload = server.http("GET", f"/v1/receipts/{reply['receipt']}")
    assert json.loads(payload)["status"] == "landed"
    assert server.stop() == 0


def raw_request(path: str, body: bytes, key: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def test_a_retry_after_the_connection_was_cut_lands_once(start_server):
    server = start_server("--flush-interval", 50)
    body = b"".join(b'{"id":%d}\n' % i for i in range(100))
    with socket.create_connection((server.host, server.http_port)) as sock:
        sock.sendall(raw_request("/v1/ingest/payments", body, "key-1"))
        # the client gives up before reading the answer
    server.wait_received("payments", 100)
    status, headers, reply = post(server, "/v1/ingest/payments", body, {"Idempotency-Key": "key-1"})
    assert status == 200 and headers.get("Idempotent-Replayed") == "true" and reply["accepted"] == 100
    server.wait_landed("payments", 100)
    assert server.stats("payments")["received"] == 100
    assert server.query("SELECT count(*) AS n FROM payments").to_pylist() == [{"n": 100}]
    conflict = post(server, "/v1/ingest/payments", b'{"id":1000}\n', {"Idempotency-Key": "key-1"})
    assert conflict[0] == 422
    assert server.stop() == 0


def test_idempotency_keys_survive_a_restart(start_server, tmp_path):
    data_dir = tmp_path / "data"
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    first = post(server, "/v1/ingest/t", b'{"id":1}\n{"id":2}\n', {"Idempotency-Key": "order-7"})
    server.wait_landed("t", 2)
    assert server.stop() == 0
    server = start_server("--flush-interval", 20, data_dir=data_dir)
    again = post(server, "/v1/ingest/t", b'{"id":1}\n{"id":2}\n', {"Idempotency-Key": "order-7"})
    assert again[0] == 200 and again[2]["receipt"] == first[2]["receipt"]
    assert server.stats("t").get("received", 0) == 0
    assert server.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 2}]
    assert server.stop() == 0


class WebhookReceiver:
    """A real HTTP server on loopback that checks each notice's signature."""

    def __init__(self, secret: bytes):
        notices: queue.Queue = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                notices.put((verify(secret, self.headers[SIGNATURE_HEADER], body), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.notices = notices
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/ingest"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def receiver():
    receiver = WebhookReceiver(b"s3cret")
    yield receiver
    receiver.close()


def test_signed_webhook_is_delivered_when_events_land(start_server, receiver):
    server = start_server("--flush-interval", 20, extra_env=SECRET_ENV)
    status, _, reply = post(server, f"/v1/ingest/signups?callback={receiver.url}", b'{"u":"ada"}\n{"u":"bob"}\n')
    assert status == 200
    verified, notice = receiver.notices.get(timeout=60)
    assert verified, "the signature did not verify"
    assert (notice["receipt"], notice["status"], notice["landed"], notice["table"]) == (reply["receipt"], "landed", 2, "signups")
    assert server.stop() == 0


def test_callbacks_must_be_signed_and_on_the_allow_list(start_server, receiver):
    unsigned = start_server(name="unsigned")
    status, _, reply = post(unsigned, f"/v1/ingest/t?callback={receiver.url}", b'{"a":1}\n')
    assert status == 400 and "INGEST_WEBHOOK_SECRET" in reply["error"]
    assert unsigned.stop() == 0
    server = start_server(extra_env=SECRET_ENV)
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x", "file:///etc/passwd"):
        status, _, reply = post(server, "/v1/ingest/t", b'{"a":1}\n', {"Ingest-Callback": url})
        assert status == 400, url
    assert server.stats("t").get("received", 0) == 0
    assert server.stop() == 0


def test_unknown_wait_mode_is_400(start_server):
    server = start_server()
    assert post(server, "/v1/ingest/t?wait=sometimes", b'{"a":1}\n')[0] == 400
    assert server.stop() == 0


class HangingReceiver:
    """A real socket on loopback that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks/hang"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hanging():
    receiver = HangingReceiver()
    yield receiver
    receiver.close()


def test_a_hanging_receiver_does_not_delay_another_receivers_notices(start_server, receiver, hanging):
    server = start_server("--flush-interval", 20, "--shutdown-grace", 2, extra_env=SECRET_ENV)
    for _ in range(5):  # each is tried for half a minute before it is given up
        assert post(server, f"/v1/ingest/t?wait=flushed&callback={hanging.url}", b'{"a":1}\n')[0] == 200
    status, _, reply = post(server, f"/v1/ingest/t?wait=flushed&callback={receiver.url}", b'{"a":2}\n')
    assert status == 200
    verified, notice = receiver.notices.get(timeout=60)
    assert verified and notice["receipt"] == reply["receipt"]
    assert server.stop(timeout=30) == 0


def test_sigterm_with_notices_queued_behind_a_hanging_receiver_ends_within_the_grace(start_server, hanging):
    grace, notices = 3, 10_000
    server = start_server("--flush-interval", 20, "--shutdown-grace", grace, extra_env=SECRET_ENV)
    request = (f"POST /v1/ingest/t?wait=none&callback={hanging.url} HTTP/1.1\r\nHost: x\r\n"
               "Content-Type: application/x-ndjson\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n").encode()
    with socket.create_connection((server.host, server.http_port)) as sock:
        sock.sendall(request * notices)
        answers = b""
        while answers.count(b"HTTP/1.1 202") < notices:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            answers += chunk
    server.wait_landed("t", notices)  # every notice is queued
    assert server.stop(timeout=grace + 10) == 0
    failed = [json.loads(line) for line in (server.data_dir / "webhooks" / "failed.ndjson").read_text().splitlines()]
    # none is lost: each undelivered notice is kept, once
    assert len(failed) == notices == len({f["notice"]["receipt"] for f in failed})
    assert {f["url"] for f in failed} == {hanging.url}
    assert "not delivered before the shutdown grace ran out" in {f["error"] for f in failed}
