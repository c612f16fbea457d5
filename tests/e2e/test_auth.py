"""Tokens with scopes, table lists and quotas, against a real server on
loopback: every route without a token, with a wrong one, with each scope."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import poll

ADMIN = "admin-secret-0123456789abcdef"
WRITER = "writer-secret-0123456789abcdef"
READER = "reader-secret-0123456789abcdef"
LIMITED = "limited-secret-0123456789abcdef"
CLICKS_READER = "clicks-reader-secret-0123456789"
FROM_ENV = "from-env-secret-0123456789abcdef"
FROM_FILE = "from-file-secret-0123456789abcdef"
SECRETS = (ADMIN, WRITER, READER, LIMITED, CLICKS_READER, FROM_ENV, FROM_FILE)

CONFIG = """
[auth]
open_probes = {open_probes}

[[auth.tokens]]
name = "ops"
secret = "{admin}"
scopes = ["admin"]

[[auth.tokens]]
name = "app"
secret = "{writer}"
scopes = ["write"]
tables = ["events", "clicks_*"]

[[auth.tokens]]
name = "analyst"
secret = "{reader}"
scopes = ["query"]

[[auth.tokens]]
name = "clicks-analyst"
secret = "{clicks_reader}"
scopes = ["query"]
tables = ["clicks_*"]

[[auth.tokens]]
name = "metered"
secret = "{limited}"
scopes = ["write"]
events_per_second = 50

[[auth.tokens]]
name = "env"
secret_env = "TEST_INGEST_TOKEN"
scopes = ["write"]

[[auth.tokens]]
name = "file"
secret_file = "{secret_file}"
scopes = ["write"]
"""

NDJSON = {"Content-Type": "application/x-ndjson"}
ROUTES = [  # (method, path, body): every route the server answers
    ("POST", "/v1/ingest/events", b'{"a":1}\n'),
    ("POST", "/v1/query", b"SELECT 1 AS one"),
    ("GET", "/v1/receipts/abc", None),
    ("GET", "/v1/stats", None),
    ("GET", "/metrics", None),
    ("GET", "/ready", None),
]


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def start_auth_server(start_server, tmp_path):
    def start_with_tokens(*args, open_probes=False, env=None):
        secret_file = tmp_path / "token.secret"
        secret_file.write_text(FROM_FILE + "\n")
        config = tmp_path / "ingest.toml"
        config.write_text(CONFIG.format(open_probes=str(open_probes).lower(), admin=ADMIN, writer=WRITER,
                                        reader=READER, limited=LIMITED, clicks_reader=CLICKS_READER,
                                        secret_file=secret_file))
        return start_server("--config", config, "--flush-interval", 50, *args,
                            extra_env={"TEST_INGEST_TOKEN": FROM_ENV, **(env or {})})
    return start_with_tokens


def call(server, method, path, body=None, headers=None):
    return server.http(method, path, body, {**NDJSON, **(headers or {})})


def test_every_route_but_health_needs_a_token(start_auth_server):
    server = start_auth_server()
    assert call(server, "GET", "/health")[0] == 200
    for method, path, body in ROUTES:
        for headers in ({}, bearer("not-a-configured-secret-at-all"), {"Authorization": "Bearer"},
                        {"Authorization": "Token " + ADMIN}):
            status, reply_headers, payload = call(server, method, path, body, headers)
            assert status == 401, (method, path, headers, payload)
            assert reply_headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in json.loads(payload)["error"]
    log = server.log()
    assert server.stop() == 0
    assert not any(secret in log for secret in SECRETS)


def test_each_scope_reaches_what_it_may_and_only_that(start_auth_server):
    server = start_auth_server()
    # write: its tables, and its own receipts; nothing else
    status, _, payload = call(server, "POST", "/v1/ingest/events?wait=none", b'{"a":1}\n', bearer(WRITER))
    assert status == 202
    receipt = json.loads(payload)["receipt"]
    assert call(server, "POST", "/v1/ingest/clicks_eu", b'{"a":1}\n', bearer(WRITER))[0] == 200
    assert call(server, "POST", "/v1/ingest/CLICKS_us", b'{"a":1}\n', bearer(WRITER))[0] == 200  # names ignore case
    status, _, payload = call(server, "POST", "/v1/ingest/payments", b'{"a":1}\n', bearer(WRITER))
    assert status == 403 and "payments" in json.loads(payload)["error"]
    assert call(server, "GET", f"/v1/receipts/{receipt}", headers=bearer(WRITER))[0] == 200
    for method, path, body in ROUTES[1:2] + ROUTES[3:]:
        status, _, payload = call(server, method, path, body, bearer(WRITER))
        assert status == 403 and "scope" in json.loads(payload)["error"], (path, payload)
    # query: the query endpoint and receipts, no writes, no probes
    assert call(server, "POST", "/v1/query", b"SELECT 1 AS one", bearer(READER))[0] == 200
    assert call(server, "GET", f"/v1/receipts/{receipt}", headers=bearer(READER))[0] == 200
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', bearer(READER))[0] == 403
    assert call(server, "GET", "/metrics", headers=bearer(READER))[0] == 403
    # admin: everything
    for method, path, body in ROUTES:
        status = call(server, method, path, body, bearer(ADMIN))[0]
        assert status in (200, 404), (path, status)  # 404: the receipt "abc" does not exist
    # secrets from the environment and from a file
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', bearer(FROM_ENV))[0] == 200
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', bearer(FROM_FILE))[0] == 200
    server.authorization = f"Bearer {ADMIN}"
    server.wait_landed("events", 3)
    assert server.stop() == 0


def test_a_write_token_sees_only_its_own_tables_receipts(start_auth_server):
    server = start_auth_server()
    status, _, payload = call(server, "POST", "/v1/ingest/payments", b'{"a":1}\n', bearer(ADMIN))
    assert status == 200
    receipt = json.loads(payload)["receipt"]
    assert call(server, "GET", f"/v1/receipts/{receipt}", headers=bearer(WRITER))[0] == 404
    assert call(server, "GET", f"/v1/receipts/{receipt}", headers=bearer(ADMIN))[0] == 200
    assert server.stop() == 0


def test_a_query_token_with_a_table_list_reads_only_those_tables(start_auth_server):
    server = start_auth_server()
    for table in ("clicks_eu", "payments"):
        assert call(server, "POST", f"/v1/ingest/{table}?wait=flushed", b'{"a":1}\n', bearer(ADMIN))[0] == 200
    reader = bearer(CLICKS_READER)
    assert call(server, "POST", "/v1/query", b"SELECT count(*) AS n FROM clicks_eu", reader)[0] == 200
    for sql in ("SELECT * FROM payments", "SELECT * FROM clicks_eu JOIN payments ON true",
                "WITH p AS (SELECT * FROM payments) SELECT * FROM p",
                "SELECT (SELECT count(*) FROM payments) AS n", "SELECT * FROM _ingest_ledger",
                "SELECT * FROM query_table('payments')", "SELECT * FROM Query_Table ('payments')",
                "SELECT * FROM query('SELECT * FROM payments')"):
        status, _, payload = call(server, "POST", "/v1/query", sql.encode(), reader)
        assert status == 403 and "may not" in json.loads(payload)["error"], (sql, payload)
    assert call(server, "POST", "/v1/query", b"SELECT * FROM payments", bearer(READER))[0] == 200  # no list: any table
    assert server.stop() == 0


def test_basic_auth_with_the_secret_as_user_name(start_auth_server):
    """How Segment SDKs send their write key."""
    server = start_auth_server()
    for credentials in (f"{WRITER}:", f"{WRITER}:ignored", f":{WRITER}"):
        header = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
        assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', header)[0] == 200, credentials
    header = {"Authorization": "Basic " + base64.b64encode(b"wrong-user-name:").decode()}
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', header)[0] == 401
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', {"Authorization": "Basic %%%"})[0] == 401
    assert server.stop() == 0


def test_open_probes_leave_metrics_and_ready_open(start_auth_server):
    server = start_auth_server(open_probes=True)
    for path in ("/health", "/ready", "/metrics"):
        assert call(server, "GET", path)[0] == 200, path
    assert call(server, "GET", "/v1/stats")[0] == 401
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n')[0] == 401
    assert server.stop() == 0


def test_refusals_are_counted_by_reason_and_token_name(start_auth_server):
    server = start_auth_server()
    call(server, "GET", "/v1/stats")
    call(server, "GET", "/v1/stats", headers=bearer("wrong-secret-wrong-secret"))
    call(server, "POST", "/v1/ingest/payments", b'{"a":1}\n', bearer(WRITER))
    call(server, "GET", "/metrics", headers=bearer(READER))
    server.authorization = f"Bearer {ADMIN}"
    status, _, text = server.http("GET", "/metrics")
    assert status == 200 and not any(secret.encode() in text for secret in SECRETS)
    metrics = server.metrics()

    def refused(reason, token):
        return metrics.get(("ingest_refusals_total", frozenset({"reason": reason, "token": token}.items())), 0)
    assert refused("unauthenticated", "") == 2
    assert refused("forbidden", "app") == 1 and refused("forbidden", "analyst") == 1
    assert server.stop() == 0


def test_a_quota_admits_its_burst_then_answers_429_until_it_refills(start_auth_server):
    server = start_auth_server()
    # two seconds' worth of events_per_second = 50: admitted (the bucket was full), and it leaves a debt
    burst = b"".join(b'{"n":%d}\n' % i for i in range(100))
    status, _, _ = call(server, "POST", "/v1/ingest/events", burst, bearer(LIMITED))
    assert status == 200
    status, headers, payload = call(server, "POST", "/v1/ingest/events", b'{"n":1}\n', bearer(LIMITED))
    assert status == 429, payload
    assert "metered" in json.loads(payload)["error"] and "events_per_second" in json.loads(payload)["error"]
    assert int(headers["Retry-After"]) >= 1
    assert headers["X-RateLimit-Limit"] == "50" and headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Reset"]) >= 1
    # other tokens are not held back by it
    assert call(server, "POST", "/v1/ingest/events", b'{"a":1}\n', bearer(WRITER))[0] == 200
    # the bucket refills: the same request goes through again
    poll(lambda: call(server, "POST", "/v1/ingest/events", b'{"late":1}\n', bearer(LIMITED))[0] == 200,
         what="the quota to refill")
    server.authorization = f"Bearer {ADMIN}"
    metrics = server.metrics()
    assert metrics[("ingest_refusals_total", frozenset({"reason": "rate_limited", "token": "metered"}.items()))] >= 1
    server.wait_landed("events", 102)
    assert server.stop() == 0


def serve(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "ingest", "serve", "--tcp-port", "0", "--http-port", "0", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_beyond_loopback_without_tokens_refuses_to_start(tmp_path):
    done = serve("--data-dir", str(tmp_path / "data"), "--host", "0.0.0.0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-unauthenticated" in lines[0] and "Traceback" not in done.stderr


def test_allow_unauthenticated_starts_beyond_loopback(start_server):
    server = start_server("--host", "0.0.0.0", "--allow-unauthenticated")
    assert "--allow-unauthenticated" in server.log()
    assert server.stop() == 0


def test_a_secret_on_the_command_line_is_refused(tmp_path):
    done = serve("--data-dir", str(tmp_path / "data"), "--webhook-secret", "visible-in-ps")
    assert done.returncode == 2
    assert "INGEST_WEBHOOK_SECRET" in done.stderr and "cmdline" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_webhook_secret_from_a_file_stays_out_of_argv(start_server, tmp_path):
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("file-held-webhook-secret\n")
    server = start_server("--webhook-secret-file", secret_file)
    status, _, payload = server.http("POST", "/v1/ingest/t?callback=http://127.0.0.1:9/hook", b'{"a":1}\n', NDJSON)
    assert status == 200, payload  # webhooks are on: the secret was read
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    assert b"file-held-webhook-secret" not in cmdline
    assert server.stop() == 0


@pytest.mark.parametrize("bad, message", [
    ('name = "x"\nsecret = "short"\nscopes = ["write"]', "at least 16"),
    ('name = "x"\nsecret = "0123456789abcdef0"\nscopes = ["root"]', "scopes"),
    ('name = "x"\nsecret = "0123456789abcdef0"\nsecret_env = "A"\nscopes = ["write"]', "exactly one"),
    ('name = "x"\nsecret_env = "TEST_UNSET_INGEST_VARIABLE"\nscopes = ["write"]', "TEST_UNSET_INGEST_VARIABLE"),
    ('name = "x"\nsecret_file = "/nonexistent/secret"\nscopes = ["write"]', "/nonexistent/secret"),
    ('name = "x"\nsecret = "0123456789abcdef0"\nscopes = ["write"]\nevents_per_second = -1', "events_per_second"),
    ('name = "x"\nsecret = "0123456789abcdef0"\nscopes = ["write"]\npassword = "p"', "password"),
])
def test_a_bad_token_is_a_one_line_error(tmp_path, bad, message):
    config = tmp_path / "bad.toml"
    config.write_text(f"[[auth.tokens]]\n{bad}\n")
    done = serve("--data-dir", str(tmp_path / "data"), "--config", str(config))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "0123456789abcdef0" not in done.stderr  # the error never repeats a secret


BYPASSES = [  # callback URLs that tried to leave the allow-list (loopback names only, by default)
    "http://127.0.0.1:80@169.254.169.254/latest/meta-data",  # userinfo
    "http://localhost@10.0.0.1/x",
    "http://127.0.0.1\\@169.254.169.254/",  # backslash
    "http://0x7f000001/hook",  # hex
    "http://0xa9fea9fe/latest/meta-data",
    "http://2130706433/hook",  # decimal
    "http://2852039166/latest/meta-data",
    "http://[::ffff:169.254.169.254]/x",  # IPv4-mapped IPv6
    "http://[::ffff:127.0.0.1]/x",
    "http://localhost./hook",  # trailing dot
    "http://169.254.169.254./x",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/x",
    "http://127.0.0.1:99999/x",  # a port out of range
]


@pytest.mark.parametrize("auth", ["tokens", "no tokens"])
def test_callback_urls_cannot_leave_the_allow_list(start_server, start_auth_server, auth):
    env = {"INGEST_WEBHOOK_SECRET": "webhook-signing-secret"}
    server = start_auth_server(env=env) if auth == "tokens" else start_server(extra_env=env)
    if auth == "tokens":
        server.authorization = f"Bearer {WRITER}"
    for url in BYPASSES:
        status, _, payload = server.http("POST", "/v1/ingest/events", b'{"a":1}\n', {**NDJSON, "Ingest-Callback": url})
        assert status == 400 and "callback" in json.loads(payload)["error"], (url, payload)
    server.authorization = f"Bearer {ADMIN}" if auth == "tokens" else None
    assert server.stats("events").get("received", 0) == 0
    assert server.stop() == 0


def test_a_callback_may_not_name_the_servers_own_endpoint(start_server):
    server = start_server(extra_env={"INGEST_WEBHOOK_SECRET": "webhook-signing-secret"})
    for host in ("127.0.0.1", "localhost", "[::1]"):
        url = f"http://{host}:{server.http_port}/v1/ingest/loop?callback=http://{host}:{server.http_port}/v1/ingest/x"
        status, _, payload = server.http("POST", "/v1/ingest/events", b'{"a":1}\n', {**NDJSON, "Ingest-Callback": url})
        assert status == 400 and "own HTTP endpoint" in json.loads(payload)["error"], (host, payload)
    # a webhook delivery (it is signed) may land as events, but may not ask for a notice of its own
    status, _, payload = server.http("POST", "/v1/ingest/events?callback=http://127.0.0.1:9/hook", b'{"a":1}\n',
                                     {**NDJSON, "Ingest-Signature": "t=1,v1=00"})
    assert status == 400 and "Ingest-Signature" in json.loads(payload)["error"]
    assert server.http("POST", "/v1/ingest/events", b'{"a":1}\n', {**NDJSON, "Ingest-Signature": "t=1,v1=00"})[0] == 200
    assert server.stop() == 0


def test_a_redirecting_receiver_is_not_followed(start_server):
    """A receiver on the allow-list answering 302 to elsewhere: the notice fails, the target is never reached."""
    import socket
    import threading

    target = socket.create_server(("127.0.0.1", 0))
    reached = []
    threading.Thread(target=lambda: reached.append(target.accept()), daemon=True).start()
    redirector = socket.create_server(("127.0.0.1", 0))

    def redirect_every_request():
        while True:
            try:
                conn, _ = redirector.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/stolen\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n" % target.getsockname()[1])
    threading.Thread(target=redirect_every_request, daemon=True).start()
    server = start_server("--flush-interval", 20, extra_env={"INGEST_WEBHOOK_SECRET": "webhook-signing-secret"})
    url = f"http://127.0.0.1:{redirector.getsockname()[1]}/hook"
    assert server.http("POST", f"/v1/ingest/events?callback={url}", b'{"a":1}\n', NDJSON)[0] == 200

    def failed():
        return server.metrics().get(("ingest_webhooks_failed_total", frozenset()), 0) >= 1
    poll(failed, what="the redirected notice to be recorded as failed")
    assert not reached
    assert server.stop() == 0
    redirector.close()
    target.close()


def test_the_python_client_and_ingest_query_send_a_token(start_auth_server):
    from ingest.client import Client

    server = start_auth_server()
    url = f"http://{server.host}:{server.http_port}"
    with Client(url, token=WRITER, flush_interval=0.01) as client:
        for i in range(10):
            client.send("events", {"i": i})
        client.flush()
    assert client.acknowledged == 10 and not client.failed
    with Client(url, flush_interval=0.01) as anonymous:
        anonymous.send("events", {"i": -1})
        anonymous.flush()
    assert anonymous.failed and anonymous.failed[0].status == 401
    server.authorization = f"Bearer {ADMIN}"
    server.wait_landed("events", 10)
    command = [sys.executable, "-m", "ingest", "query", "--data-dir", str(server.data_dir), "--format", "json",
               "SELECT count(*) AS n FROM events"]
    env = {k: v for k, v in os.environ.items() if k != "INGEST_TOKEN"}
    done = subprocess.run(command, capture_output=True, text=True, env={**env, "INGEST_TOKEN": READER}, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout) == {"n": 10}, done.stderr
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "INGEST_TOKEN" in done.stderr
    assert server.stop() == 0
