"""What a data directory says about the server on it.

The server holds an exclusive lock on DIR/ingest.lock for its whole life, and
so do the offline tools that change DIR (`ingest wal repair`, `ingest
deadletter purge`): a second one exits with one line naming the pid that
holds it, instead of replaying, deleting or overwriting what the first one
is writing. The lock is the kernel's (flock): it goes with the process, so a
kill -9 never leaves a stale lock behind.

Once it listens, the server also writes DIR/server.json: its pid, host, sink
and ports, so that the tools can reach it. That file can outlive a server
killed with -9; the lock cannot. So "is a server running on DIR, and where?"
has one answer, `running_server`: the lock is held, and by the pid that
server.json names.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "ingest.lock"
STATE_FILE = "server.json"


class DataDirInUse(Exception):
    """Another process holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, purpose: str = "a server") -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd) or "unknown"
            os.close(fd)
            raise DataDirInUse(f"data directory {self.path.parent} is in use by pid {holder} (it holds "
                               f"{self.path}); stop it, or give {purpose} another --data-dir") from None
        try:  # who holds it, for the next one's message; a full disk only loses the pid
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(data_dir: Path) -> str | None:
    """The pid (as written) of the process holding DIR's lock, or None when
    nobody holds it. Only looks: creates nothing, takes nothing."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails only while someone holds it exclusively
        except BlockingIOError:
            return _holder_pid(fd) or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_pid(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


@dataclass(frozen=True)
class ServerState:
    """DIR/server.json: where a running server can be reached."""

    pid: int
    host: str
    sink: str
    tcp_port: int
    http_port: int
    tls: bool = False  # both listeners speak TLS

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.http_port}"


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def write_state(data_dir: Path, state: ServerState) -> None:
    """Raises OSError when it cannot be written."""
    state_path(data_dir).write_text(json.dumps(dataclasses.asdict(state)))


def read_state(data_dir: Path) -> ServerState | None:
    """What server.json says, whether or not that server still runs; None
    without a readable file."""
    try:
        document = json.loads(state_path(data_dir).read_text())
        return ServerState(**{f.name: document[f.name] for f in dataclasses.fields(ServerState)
                              if f.name in document or f.default is dataclasses.MISSING})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_state(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)


def running_server(data_dir: Path) -> ServerState | None:
    """The server running on DIR, or None: server.json is only believed while
    its pid holds the lock (a server killed with -9 leaves the file behind,
    an offline tool holds the lock without one)."""
    state = read_state(data_dir)
    if state is None:
        return None
    return state if lock_holder(data_dir) == str(state.pid) else None


SINK_FILE = "sink.json"  # the sink settings the data directory was served with, for the offline tools
SINK_SETTINGS = ("sink", "delta_uri", "delta_endpoint", "partition_by")


def write_sink_settings(data_dir: Path, values: dict) -> None:
    """Kept at each start, so `ingest query|compact|vacuum|wal replay --data-dir D`
    find the sink D was served with (no secrets: credentials stay in the environment)."""
    path = data_dir / SINK_FILE
    temporary = path.with_name(f".{SINK_FILE}.tmp")
    temporary.write_text(json.dumps({k: values[k] for k in SINK_SETTINGS if k in values}, indent=1) + "\n")
    os.replace(temporary, path)


def stored_sink_settings(data_dir: Path) -> dict:
    """What write_sink_settings kept in `data_dir`; {} if nothing was."""
    try:
        document = json.loads((data_dir / SINK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in document.items() if k in SINK_SETTINGS and isinstance(v, str)} \
        if isinstance(document, dict) else {}
