"""TLS on both listeners, with certificates made in the test by openssl:
HTTP and TCP over TLS, plain text to a TLS port, client certificates."""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys

import pytest
from conftest import poll

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")

NDJSON = {"Content-Type": "application/x-ndjson"}


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem"


def make_cert(directory, ca, name, server=False):
    (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else
                                           "extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    server = make_cert(directory, "ca", "server", server=True)
    client = make_cert(directory, "ca", "sensor-1")
    stranger = make_cert(directory, "other-ca", "stranger")
    analyst = make_cert(directory, "ca", "analyst")
    unknown = make_cert(directory, "ca", "unknown-device")
    return {"dir": directory, "ca": ca, "server": server, "client": client, "stranger": stranger,
            "analyst": analyst, "unknown": unknown}


def client_context(pki, cert=None):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert is not None:
        context.load_cert_chain(*map(str, pki[cert]))
    return context


def tls_args(pki, client_ca=False):
    cert, key = pki["server"]
    return ["--tls-cert", cert, "--tls-key", key, *(["--tls-client-ca", pki["ca"]] if client_ca else [])]


def test_http_and_tcp_over_tls(start_server, pki):
    server = start_server(*tls_args(pki), "--flush-interval", 20)
    assert server.tls
    server.tls_context = client_context(pki)
    status, _, payload = server.http("POST", "/v1/ingest/events?wait=flushed", b'{"via":"https"}\n', NDJSON)
    assert status == 200, payload
    with server.tcp_connect() as sock:
        sock.sendall(b'{"via":"tcp+tls"}\n' * 100)
    server.wait_landed("events", 101)
    rows = server.query("SELECT via, count(*) AS n FROM events GROUP BY via ORDER BY via").to_pylist()
    assert rows == [{"via": "https", "n": 1}, {"via": "tcp+tls", "n": 100}]
    state = json.loads((server.data_dir / "server.json").read_text())
    assert state["tls"] is True
    assert server.stop() == 0


def test_plain_text_to_a_tls_port_fails_cleanly_and_the_server_keeps_serving(start_server, pki):
    server = start_server(*tls_args(pki), "--flush-interval", 20)
    for port in (server.http_port, server.tcp_port):
        with socket.create_connection((server.host, port)) as sock:
            sock.sendall(b"POST /v1/ingest/events HTTP/1.1\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n" if
                         port == server.http_port else b'{"plain":"text"}\n' * 10)
            sock.settimeout(30)
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"HTTP/"), answer  # no plain-text answer, and nothing ingested
    server.tls_context = client_context(pki)
    assert server.http("POST", "/v1/ingest/events?wait=flushed", b'{"a":1}\n', NDJSON)[0] == 200
    assert server.stats("events")["landed"] == 1
    log = server.log()
    assert server.stop() == 0
    assert "Traceback" not in log and "Error" not in log, log


def test_client_certificates_are_required_and_checked(start_server, pki):
    server = start_server(*tls_args(pki, client_ca=True), "--flush-interval", 20)
    for context in (client_context(pki), client_context(pki, "stranger")):
        server.tls_context = context
        try:
            with server.tcp_connect() as sock:
                sock.sendall(b'{"from":"no one"}\n')
                # TLS 1.3 reports a refused client certificate on the first read: an alert, or the connection closed
                assert sock.recv(1) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    server.tls_context = client_context(pki, "client")
    with server.tcp_connect() as sock:
        sock.sendall(b'{"from":"sensor-1"}\n' * 5)
    server.wait_landed("events", 5)
    assert server.query("SELECT DISTINCT \"from\" AS f FROM events").to_pylist() == [{"f": "sensor-1"}]
    log = server.log()
    assert server.stop() == 0
    assert "Traceback" not in log


def test_the_common_name_of_a_client_certificate_is_what_a_source_sees(pki):
    import asyncio

    from ingest.sources.tls import peer_common_name, server_context

    async def run():
        seen = asyncio.get_running_loop().create_future()

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport):
                seen.set_result(peer_common_name(transport))

        server = await asyncio.get_running_loop().create_server(
            Protocol, "127.0.0.1", 0, ssl=server_context(*pki["server"], pki["ca"]))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, "client"))
        name = await asyncio.wait_for(seen, 30)
        writer.close()
        server.close()
        return name
    assert asyncio.run(run()) == "sensor-1"


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "{server}"], "together"),
    (["--tls-key", "{key}"], "together"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "{key}"], "no such file"),
    (["--tls-cert", "{server}", "--tls-key", "{other_key}"], "--tls-key"),
    (["--tls-client-ca", "{ca}"], "needs --tls-cert"),
    (["--tls-cert", "{server}", "--tls-key", "{key}", "--tls-client-ca", "{key}"], "--tls-client-ca"),
])
def test_bad_tls_settings_are_a_one_line_error(tmp_path, pki, args, message):
    names = {"server": pki["server"][0], "key": pki["server"][1], "other_key": pki["client"][1], "ca": pki["ca"]}
    done = subprocess.run([sys.executable, "-m", "ingest", "serve", "--data-dir", str(tmp_path / "d"), "--tcp-port",
                           "0", "--http-port", "0", *(a.format(**names) for a in args)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr


TOKENS = """
[[auth.tokens]]
name = "sensor-1"
secret = "sensor-secret-0123456789abcdef"
scopes = ["write"]
tables = ["events"]

[[auth.tokens]]
name = "analyst"
secret = "analyst-secret-0123456789abcdef"
scopes = ["query"]

[[auth.tokens]]
name = "ops"
secret = "ops-secret-0123456789abcdef"
scopes = ["admin"]
"""


def test_under_tokens_a_tcp_sender_is_its_certificates_common_name(start_server, pki, tmp_path):
    config = tmp_path / "tokens.toml"
    config.write_text(TOKENS)
    server = start_server(*tls_args(pki, client_ca=True), "--config", config, "--flush-interval", 20)
    for refused in ("analyst", "unknown"):  # a token without the write scope; a name no token has
        server.tls_context = client_context(pki, refused)
        with server.tcp_connect() as sock:
            try:
                sock.sendall(b'{"from":"%s"}\n' % refused.encode())
                assert sock.recv(1) == b""  # closed at once
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                pass
    server.tls_context = client_context(pki, "client")
    with server.tcp_connect() as sock:
        sock.sendall(b'{"from":"sensor-1"}\n' * 3)
    server.authorization = "Bearer ops-secret-0123456789abcdef"
    server.wait_landed("events", 3)
    assert server.query("SELECT DISTINCT \"from\" AS f FROM events").to_pylist() == [{"f": "sensor-1"}]
    metrics = server.metrics()
    assert metrics[("ingest_refusals_total", frozenset({"reason": "forbidden", "token": "analyst"}.items()))] == 1
    assert metrics[("ingest_refusals_total", frozenset({"reason": "unauthenticated", "token": ""}.items()))] == 1
    assert server.stop() == 0


def test_under_tokens_without_client_certificates_tcp_is_refused(start_server, tmp_path):
    config = tmp_path / "tokens.toml"
    config.write_text(TOKENS)
    server = start_server("--config", config, "--flush-interval", 20)
    with server.tcp_connect() as sock:
        try:
            sock.sendall(b'{"anonymous":1}\n')
            assert sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
    server.authorization = "Bearer ops-secret-0123456789abcdef"
    poll(lambda: server.metrics().get(("ingest_refusals_total",
                                       frozenset({"reason": "unauthenticated", "token": ""}.items()))) == 1,
         what="the refusal to be counted")
    assert server.stats("events").get("received", 0) == 0
    log = server.log()
    assert server.stop() == 0
    assert "--tls-client-ca" in log and "refused 401 tcp connection" in log
