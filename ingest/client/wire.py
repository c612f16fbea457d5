"""The bytes of the ingest API as the client writes and reads them: an event
as an NDJSON line, the POST /v1/ingest/{table} request (query, headers,
gzip), the server's answer parsed. No I/O here."""
from __future__ import annotations

import gzip as gzip_format
import json
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from ingest.protocol import WAIT_MODES, table_name_problem

try:
    import orjson
except ImportError:  # orjson is optional: only faster
    orjson = None

NDJSON = "application/x-ndjson"
GZIP_LEVEL = 1  # the fastest level: a client's CPU matters more than the last few percent of bytes


def encode_event(event) -> bytes:
    """One event as one NDJSON line, without its newline: a dict (or any JSON
    value) is serialised compactly, bytes or str are taken as JSON already."""
    if isinstance(event, (bytes, bytearray, memoryview)):
        line = bytes(event).rstrip(b"\r\n")
    elif isinstance(event, str):
        line = event.rstrip("\r\n").encode()
    elif orjson is not None:
        line = orjson.dumps(event)
    else:
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=_isoformat).encode()
    if not line:
        raise ValueError("an event cannot be empty")
    if b"\n" in line:
        raise ValueError("an event must be one line of JSON; this one holds a newline")
    return line


def _isoformat(value):
    """What orjson does with dates, so events serialise the same without it."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def check_table(table: str) -> None:
    problem = table_name_problem(table) if isinstance(table, str) else f"invalid table name {table!r}"
    if problem:
        raise ValueError(problem)


def check_wait(wait: str) -> None:
    if wait not in WAIT_MODES:
        raise ValueError(f"wait must be one of {', '.join(WAIT_MODES)}, not {wait!r}")


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    path: str  # a prefix before /v1/..., when the server sits behind a proxy

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"server URL {url!r}: give it as http://HOST:PORT (the client speaks plain HTTP)")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Request:
    target: str  # path and query
    body: bytes
    headers: dict
    timeout: float  # seconds the whole exchange may take


def ingest_request(path: str, table: str, body: bytes, *, wait: str, gzip: bool, wait_timeout: float,
                   timeout: float, key: str | None = None, token: str | None = None,
                   content_type: str = NDJSON) -> Request:
    """One POST /v1/ingest/{table}; `key` defaults to a fresh one, kept by
    every retry; `token` is sent as `Authorization: Bearer <token>`."""
    query = f"wait={wait}"
    if wait == "flushed":
        query += f"&timeout={wait_timeout:g}"
        timeout += wait_timeout  # the server may hold the answer that long
    headers = {"Content-Type": content_type, "Idempotency-Key": key or str(uuid.uuid4())}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if gzip:
        body = gzip_format.compress(body, GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return Request(f"{path}/v1/ingest/{table}?{query}", body, headers, timeout)


class Response:
    """One HTTP answer; `reply` is the ingest reply document when the body is one."""

    __slots__ = ("status", "headers", "body", "reply")

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body
        self.reply = None
        if "json" in headers.get("content-type", ""):
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if isinstance(document, dict) and "accepted" in document:
                self.reply = document

    @property
    def retry_after(self) -> float | None:
        try:
            return max(0.0, float(self.headers["retry-after"]))
        except (KeyError, ValueError):
            return None  # absent, or an HTTP date (our server sends seconds)

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed", "").lower() == "true"

    def describe(self) -> str:
        try:
            error = json.loads(self.body).get("error")
        except (ValueError, AttributeError):
            error = None
        return f"HTTP {self.status}: {error or self.body[:200].decode('utf-8', 'replace')}"
