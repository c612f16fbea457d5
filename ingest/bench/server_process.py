"""The server under test, seen from outside: started as `ingest serve` on free
loopback ports, or found already running (`--target`), with its CPU time and
peak memory read from /proc and its counters from GET /v1/stats."""
from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from ingest.testing.server_process import parse_listening

START_TIMEOUT = 60
STOP_TIMEOUT = 120
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def child_environment() -> dict:
    """The environment for the server and client processes: they import the
    same `ingest` as this process, installed or not."""
    import ingest

    env = dict(os.environ)
    root = str(Path(ingest.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def child_command(module: str, *args: str) -> list[str]:
    """`python -m module args` for the server and client processes. -P keeps the
    caller's directory off sys.path: an `ingest/` there (a source checkout
    beside a non-editable install) would shadow the one child_environment names."""
    return [sys.executable, "-P", "-m", module, *args]


class BenchError(Exception):
    """Something the user has to fix before the bench can run (a server that
    does not start, a target that does not answer)."""


class KeepAliveConnection:
    """HTTP requests over one keep-alive connection, reopened once if dropped."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self._conn.request(method, path, body)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class StatsClient(KeepAliveConnection):
    """GET /v1/stats."""

    def document(self) -> dict:
        status, body = self.request("GET", "/v1/stats")
        if status != 200:
            raise BenchError(f"GET /v1/stats on {self.host}:{self.port} answered {status}: {body[:200]!r}")
        return json.loads(body)

    def table(self, name: str) -> dict:
        return self.document()["tables"].get(name, {})


def settled(counters: dict) -> int:
    """Events that have left the pipeline: landed, rejected or dead-lettered
    (`failed` in servers before the dead-letter store)."""
    return (counters.get("landed", 0) + counters.get("rejected", 0)
            + counters.get("dead_lettered", counters.get("failed", 0)))


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to the process we started, by its PID; SIGKILL if it has not exited within `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ProcessProbe:
    """CPU seconds (utime + stime of all threads) and peak RSS of one process."""

    def __init__(self, pid: int):
        self.pid = pid

    def cpu_seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)

    def reset_peak_rss(self) -> bool:
        """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_rss_bytes(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None


class ServerUnderTest:
    """A fresh `ingest serve` subprocess: one per case, so every case starts
    from an empty data directory, its own table and its own memory peak."""

    def __init__(self, data_dir: Path, sink: str, tcp_table: str, server_flags: list[str], log_path: Path):
        self.data_dir = data_dir
        self.sink = sink
        self.tcp_table = tcp_table
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            child_command("ingest", "serve", "--data-dir", str(data_dir), "--tcp-port", "0", "--http-port", "0",
                          "--sink", sink, "--tcp-table", tcp_table, *server_flags),
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=child_environment(),
        )
        line = self._first_line()
        listening = parse_listening(line)
        if listening is None:
            self.stop()
            raise BenchError(f"the server did not start (it said {line.strip()!r}); its log ends:\n{self.log_tail()}")
        self.host, self.tcp_port, self.http_port = listening
        self.probe = ProcessProbe(self.proc.pid)
        self.stats = StatsClient(self.host, self.http_port)

    def _first_line(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        return self.proc.stdout.readline() if ready else ""

    def log_tail(self, lines: int = 20) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self) -> None:
        if getattr(self, "stats", None) is not None:
            self.stats.close()
        terminate(self.proc, STOP_TIMEOUT)
        self.proc.stdout.close()
        self._log.close()


class TargetServer:
    """A server someone else started (`--target HOST:PORT`). Its sink comes
    from /v1/stats; its process (for CPU and memory) and its TCP port are
    found through /proc when it runs on this machine as a user we can see."""

    def __init__(self, host: str, http_port: int, tcp_port: int | None, tcp_table: str):
        self.host, self.http_port = host, http_port
        self.stats = StatsClient(host, http_port)
        try:
            document = self.stats.document()
        except (OSError, http.client.HTTPException) as exc:
            raise BenchError(f"no ingest server answers GET /v1/stats on {host}:{http_port}: {exc}") from None
        self.sink = document.get("sink", "?")
        self.hot_path = document.get("hot_path", {})
        pid = listening_pid(http_port)
        self.probe = ProcessProbe(pid) if pid is not None else None
        if tcp_port is None and pid is not None:
            others = listening_ports(pid) - {http_port}
            tcp_port = others.pop() if len(others) == 1 else None
        self.tcp_port = tcp_port
        self.tcp_table = tcp_table

    def stop(self) -> None:
        self.stats.close()


def _listening_sockets() -> dict[int, int]:
    """inode -> port of every listening TCP socket on this machine."""
    sockets = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # TCP_LISTEN
                sockets[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return sockets


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def listening_pid(port: int) -> int | None:
    """The process listening on `port`, if /proc lets us see it."""
    inodes = {inode for inode, p in _listening_sockets().items() if p == port}
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _socket_inodes(int(entry)) & inodes:
            return int(entry)
    return None


def listening_ports(pid: int) -> set[int]:
    sockets = _listening_sockets()
    return {sockets[inode] for inode in _socket_inodes(pid) if inode in sockets}

