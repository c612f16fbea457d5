"""`ingest serve` in a subprocess on free loopback ports, for tests and tools:
the one ServerProcess, and the parser of the line the server prints once it
listens."""
from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import pyarrow as pa

# what ingest.server.app prints on stdout once both listeners are bound
LISTENING = re.compile(r"^ingest: listening tcp=(?P<host>[^:]+):(?P<tcp>\d+) http=[^:]+:(?P<http>\d+)(?P<tls> tls=on)?$")
START_TIMEOUT = 60  # a server that never says it listens fails its test instead of hanging it
POLL_TIMEOUT = 60


class Listening(NamedTuple):
    host: str
    tcp_port: int
    http_port: int


def parse_listening(line: str) -> Listening | None:
    """The addresses in the server's "listening" line, or None for any other line."""
    match = LISTENING.match(line.strip())
    return Listening(match["host"], int(match["tcp"]), int(match["http"])) if match else None


def poll(predicate, timeout=POLL_TIMEOUT, interval=0.02, what="condition"):
    """Polls until predicate() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class ServerProcess:
    """`ingest serve` in a subprocess, with helpers to talk to it."""

    def __init__(self, data_dir: Path, args: list[str], env: dict):
        self.data_dir = data_dir
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ingest-test-{os.getpid()}-{id(self)}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "serve", "--data-dir", str(data_dir),
             "--tcp-port", "0", "--http-port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().strip() if ready else f"(nothing within {START_TIMEOUT}s)"
        listening = parse_listening(line)
        if listening is None:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line!r}\n{self.log()}")
        self.host, self.tcp_port, self.http_port = listening
        self.authorization: str | None = None  # sent with every request the helpers make, when set
        self.tls = " tls=on" in line  # then the helpers need tls_context (a client context trusting its CA)
        self.tls_context = None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    # talking to it

    def tcp_connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.tcp_port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_context is not None:
            sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        return sock

    def send_tcp(self, payload: bytes) -> None:
        with self.tcp_connect() as sock:
            sock.sendall(payload)

    def http(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
        if self.tls_context is not None:
            conn = http.client.HTTPSConnection(self.host, self.http_port, timeout=60, context=self.tls_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.http_port, timeout=60)
        headers = dict(headers or {})
        if self.authorization is not None:
            headers.setdefault("Authorization", self.authorization)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def ingest(self, table: str, body: bytes, content_type="application/x-ndjson", gzipped=False):
        headers = {"Content-Type": content_type}
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        status, _, payload = self.http("POST", f"/v1/ingest/{table}", body, headers)
        return status, json.loads(payload)

    def stats(self, table: str | None = None) -> dict:
        status, _, payload = self.http("GET", "/v1/stats")
        assert status == 200
        stats = json.loads(payload)
        return stats["tables"].get(table, {}) if table else stats

    def wait_landed(self, table: str, landed: int) -> dict:
        return self._wait_for(table, "landed", landed, f"{landed} events landed in {table}")

    def wait_received(self, table: str, received: int) -> dict:
        return self._wait_for(table, "received", received, f"{received} events received for {table}")

    def _wait_for(self, table: str, counter: str, count: int, what: str) -> dict:
        """The table's counters, once `counter` has reached `count`."""
        def reached():
            counters = self.stats(table)
            return counters if counters.get(counter, 0) >= count else None
        return poll(reached, what=what)

    def query_after_stop(self, sql: str) -> list[dict]:
        """SQL straight from the files the stopped server left."""
        from ingest.cli import run_query

        return run_query(self.data_dir, sql).to_pylist()

    def metrics(self) -> dict:
        """GET /metrics parsed: {(sample name, frozenset(labels)): value}."""
        from prometheus_client.parser import text_string_to_metric_families

        status, _, payload = self.http("GET", "/metrics")
        assert status == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(payload.decode())
            for sample in family.samples
        }

    def assert_accounted(self) -> dict:
        """Every event received is landed, rejected, dead-lettered or still
        buffered, in one scrape; returns {table: {counter: value}}."""
        scraped = self.metrics()
        tables: dict = {}
        for (name, labels), value in scraped.items():
            labels = dict(labels)
            if name.startswith("ingest_events_") and "table" in labels:
                tables.setdefault(labels["table"], {})[name.removeprefix("ingest_events_").removesuffix("_total")] = value
        for table, c in tables.items():
            assert c["received"] == c["landed"] + c["rejected"] + c["dead_lettered"] + c["buffered"], (table, c)
        return tables

    def final_counts(self) -> dict:
        """The per-table totals the server logs as it stops."""
        for line in reversed(self.log().splitlines()):
            if "stopped; per table: " in line:
                return json.loads(line.split("stopped; per table: ", 1)[1])
        raise AssertionError(f"no final counts in the server log\n{self.log()}")

    def query(self, sql: str) -> pa.Table:
        status, _, payload = self.http("POST", "/v1/query", sql.encode(), {"Content-Type": "text/plain"})
        assert status == 200, payload
        import pyarrow as pa

        return pa.ipc.open_stream(payload).read_all()

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"server did not stop within {timeout}s\n{self.log()}")
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode
