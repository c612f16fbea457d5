"""ClickHouse as a baseline for the HTTP cases: the same client processes send
the same events as `INSERT INTO t FORMAT JSONEachRow` over ClickHouse's HTTP
interface, into a MergeTree table (answered once the part is written) or a
Buffer table in front of one (answered once the rows are in memory; they
reach the MergeTree table at its next flush).

The bench starts its own `clickhouse-server` (a temporary directory, free
loopback ports, the minimal configuration below) or uses the one `--clickhouse
URL` names. ClickHouse 18.16's JSONEachRow cannot read a JSON object into a
String column, so it is sent the flat corpus (`context` spread into three
scalar columns); `ts` lands as DateTime (seconds: 18.16 has no DateTime64).
"""
from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

from ingest.bench.server_process import BenchError, KeepAliveConnection, ProcessProbe, listening_pid, terminate

SERVER_BINARY = "clickhouse-server"
START_TIMEOUT = 60  # seconds until GET /ping answers
STOP_TIMEOUT = 60
ENGINES = ("mergetree", "buffer")  # the sink names of ClickHouse's cases: clickhouse-mergetree, clickhouse-buffer
BUFFER_BATCHES = (1, 1_000)  # events per request of the cases that also run into a Buffer table
ROW_INSERT_EVENTS = 1_000  # at most, one event per INSERT into MergeTree: each INSERT writes a part (~60/s here)
# Buffer(database, table, layers, min_time, max_time, min_rows, max_rows, min_bytes, max_bytes): flushed at
# 250,000 rows (the servers' --batch-events) or after 1 s, its shortest max_time (whole seconds).
BUFFER_FLUSH = "16, 0, 1, 250000, 250000, 0, 268435456"
BUFFER_MAX_SECONDS = 1
COLUMNS = (  # the flat corpus (ingest.testing.corpus.flat_ndjson)
    ("id", "UInt64"), ("ts", "DateTime"), ("user_id", "UInt64"), ("event", "String"), ("amount", "Float64"),
    ("ok", "UInt8"), ("country", "String"), ("context_plan", "String"), ("context_session", "String"),
    ("context_retries", "Int64"), ("coupon", "Nullable(String)"), ("path", "String"),
)
SHAPE = "flat"

CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{directory}/server.log</log><errorlog>{directory}/error.log</errorlog>
    <console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <keep_alive_timeout>300</keep_alive_timeout>
  <path>{directory}/data/</path>
  <tmp_path>{directory}/tmp/</tmp_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
</yandex>
"""
USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile>
    <quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"""


def installed() -> bool:
    return shutil.which(SERVER_BINARY) is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ClickHouse:
    """A ClickHouse server over HTTP: the one the bench started (stopped by its
    PID) or the one at --clickhouse URL (left running)."""

    def __init__(self, host: str, http_port: int, process: subprocess.Popen | None = None,
                 directory: Path | None = None):
        self.host, self.http_port = host, http_port
        self.process, self.directory = process, directory
        pid = process.pid if process else listening_pid(http_port)
        self.probe = ProcessProbe(pid) if pid is not None else None
        self.connection = KeepAliveConnection(host, http_port)

    @classmethod
    def start(cls, directory: Path) -> "ClickHouse":
        directory.mkdir(parents=True, exist_ok=True)
        http_port = free_port()
        (directory / "config.xml").write_text(CONFIG.format(directory=directory, http_port=http_port,
                                                            tcp_port=free_port()))
        (directory / "users.xml").write_text(USERS)
        log = open(directory / "stdout.log", "w")
        process = subprocess.Popen([shutil.which(SERVER_BINARY) or SERVER_BINARY,
                                    f"--config-file={directory / 'config.xml'}"],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        log.close()
        server = cls("127.0.0.1", http_port, process, directory)
        deadline = time.monotonic() + START_TIMEOUT
        while not server.answers_ping():
            if process.poll() is not None or time.monotonic() > deadline:
                reason = server.log_tail() or f"exit code {process.poll()}"
                server.stop()
                raise BenchError(f"clickhouse-server did not start: {reason}")
            time.sleep(0.1)
        return server

    @classmethod
    def connect(cls, url: str) -> "ClickHouse":
        parsed = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
        if parsed.scheme != "http" or not parsed.hostname:
            raise BenchError(f"--clickhouse wants http://HOST:PORT (its HTTP interface), not {url!r}")
        server = cls(parsed.hostname, parsed.port or 8123)
        if not server.answers_ping():
            raise BenchError(f"no ClickHouse answers GET /ping at {url}")
        return server

    def answers_ping(self) -> bool:
        try:
            return self._request("GET", "/ping") == "Ok.\n"
        except BenchError:
            return False

    def log_tail(self) -> str:
        if self.directory is None:
            return ""
        for name in ("error.log", "stdout.log"):
            path = self.directory / name
            lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
            if lines:
                return lines[-1]
        return ""

    def query(self, sql: str) -> str:
        return self._request("POST", "/", sql.encode())

    def version(self) -> str:
        return self.query("SELECT version()").strip()

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count() FROM {table}"))

    def create_table(self, name: str, engine: str) -> str:
        """A fresh MergeTree table `name` for one case (its count says the events
        are written) and the table to insert into: itself, or a Buffer in front of it."""
        columns = ", ".join(f"{column} {kind}" for column, kind in COLUMNS)
        self.drop_tables(name)
        self.query(f"CREATE TABLE {name} ({columns}) ENGINE = MergeTree ORDER BY tuple()")
        if engine == "mergetree":
            return name
        database = self.query("SELECT currentDatabase()").strip()
        self.query(f"CREATE TABLE {name}_buffer AS {name} ENGINE = Buffer({database}, {name}, {BUFFER_FLUSH})")
        return f"{name}_buffer"

    def drop_tables(self, name: str) -> None:
        for table in (f"{name}_buffer", name):
            self.query(f"DROP TABLE IF EXISTS {table}")

    @staticmethod
    def insert_path(table: str) -> str:
        query = urllib.parse.quote(f"INSERT INTO {table} FORMAT JSONEachRow")
        return f"/?query={query}&date_time_input_format=best_effort"

    def _request(self, method: str, path: str, body: bytes | None = None) -> str:
        try:
            status, answer = self.connection.request(method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise BenchError(f"ClickHouse at {self.host}:{self.http_port} does not answer: {exc}") from None
        text = answer.decode("utf-8", "replace")
        if status != 200:
            raise BenchError(f"ClickHouse at {self.host}:{self.http_port} answered {status}: {text.strip()[:300]}")
        return text

    def stop(self) -> None:
        """Closes the connection; a server the bench started is stopped by its PID."""
        self.connection.close()
        if self.process is not None:
            terminate(self.process, STOP_TIMEOUT)
