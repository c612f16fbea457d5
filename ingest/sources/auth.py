"""Tokens: who may call which endpoint, on which tables, how fast.

A token has a name, a secret, scopes and optionally a table allow-list
(globs) and quotas. Only the SHA-256 of each secret is kept; a presented
secret is hashed, looked up by its hash (the lookup's timing depends on the
hash, which tells nothing about the secret) and compared with
hmac.compare_digest. The secret is taken from `Authorization: Bearer
<secret>` or from HTTP Basic with the secret as the user name (how Segment
SDKs send a write key).

Scopes:
  write   POST /v1/ingest/{table} (tables on its list); its own receipts
  query   POST /v1/query over tables on its list; receipts of those tables
  admin   everything: /metrics, /ready, /v1/stats, every table, the ledger

Quotas are token buckets that may run into debt: a request is admitted while
its token's bucket is not empty, and what it carried (events, bytes) is then
taken from the bucket, even below zero. A body larger than a second's worth
of quota therefore still goes through, and the requests after it wait until
the debt is paid back; a refused request is refused before its body is read.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Iterable

SCOPES = ("write", "query", "admin")
KNOWN_TABLES = 4096  # table names whose answer a token remembers
REALM = 'Bearer realm="ingest", charset="UTF-8"'
CHALLENGE = (("WWW-Authenticate", REALM),)


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class QuotaBucket:
    """A token bucket of `rate` units per second holding at most one second
    of them; `take` may leave it in debt."""

    __slots__ = ("rate", "level", "_updated")

    def __init__(self, rate: float):
        self.rate = rate
        self.level = rate  # starts full: a burst of one second's worth
        self._updated = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.rate, self.level + (now - self._updated) * self.rate)
        self._updated = now

    def admits(self, now: float) -> bool:
        self._refill(now)
        return self.level > 0

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def retry_after(self) -> float:
        """Seconds until the bucket holds something again."""
        return max(0.0, -self.level) / self.rate if self.level <= 0 else 0.0

    def reset_after(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.rate - self.level) / self.rate


@dataclass(eq=False)
class Token:
    name: str
    digest: bytes = field(repr=False)  # SHA-256 of the secret; the secret itself is not kept
    scopes: frozenset
    tables: tuple = ()  # globs, lower-case; empty: every table
    events_per_second: float | None = None
    bytes_per_second: float | None = None
    quotas: dict = field(default_factory=dict, repr=False)  # "events"/"bytes" -> QuotaBucket
    _allowed: dict = field(default_factory=dict, repr=False)  # table -> may_use(table), for the tables seen

    def __post_init__(self):
        for unit, rate in (("events", self.events_per_second), ("bytes", self.bytes_per_second)):
            if rate is not None:
                self.quotas[unit] = QuotaBucket(rate)

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def may_use(self, table: str) -> bool:
        """Whether the table is on this token's list (table names are case-insensitive)."""
        if "admin" in self.scopes or not self.tables:
            return True
        allowed = self._allowed.get(table)
        if allowed is None:
            if len(self._allowed) >= KNOWN_TABLES:
                self._allowed.clear()
            folded = table.lower()
            allowed = self._allowed[table] = any(fnmatchcase(folded, pattern) for pattern in self.tables)
        return allowed

    def forbids(self, scopes: tuple, table: str | None, action: str) -> str | None:
        """Why this token may not do `action` (which needs one of `scopes`,
        on `table` if given): the message of a refusal, or None when it may."""
        if not any(self.has(scope) for scope in scopes):
            return f"token {self.name!r} may not {action}: it needs the {' or '.join(scopes)} scope"
        if table is not None and not self.may_use(table):
            return f"token {self.name!r} may not use table {table!r}"
        return None

    def rate_limited(self, now: float | None = None) -> "RateLimited | None":
        """Why this token must wait before its next request, or None."""
        if not self.quotas:
            return None
        now = time.monotonic() if now is None else now
        for unit, bucket in self.quotas.items():
            if not bucket.admits(now):
                return RateLimited(unit, bucket)
        return None

    def charge(self, events: int, size: int) -> None:
        """Takes what a request carried from the token's quotas."""
        if self.quotas:
            now = time.monotonic()
            for unit, amount in (("events", events), ("bytes", size)):
                bucket = self.quotas.get(unit)
                if bucket is not None:
                    bucket.take(amount, now)


@dataclass(frozen=True)
class RateLimited:
    unit: str  # "events" or "bytes"
    bucket: QuotaBucket

    def headers(self) -> tuple:
        bucket = self.bucket
        return (("Retry-After", str(max(1, math.ceil(bucket.retry_after())))),
                ("X-RateLimit-Limit", f"{bucket.rate:g}"),
                ("X-RateLimit-Remaining", str(max(0, math.floor(bucket.level)))),
                ("X-RateLimit-Reset", str(max(1, math.ceil(bucket.reset_after())))))

    def message(self, token: Token) -> str:
        per = f"{self.unit}_per_second"
        return (f"token {token.name!r} is over its quota of {self.bucket.rate:g} {self.unit}/s ({per}); "
                f"retry after the delay given")


class Unauthenticated(Exception):
    """No token, or one that matches none: answered 401."""


class Tokens:
    """The configured tokens, by the hash of their secret."""

    def __init__(self, tokens: Iterable[Token] = (), open_probes: bool = False):
        self._by_digest = {token.digest: token for token in tokens}
        self.open_probes = open_probes

    @property
    def enabled(self) -> bool:
        """Auth is on once any token is configured."""
        return bool(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def by_name(self, name: str) -> Token | None:
        return next((t for t in self._by_digest.values() if t.name == name), None)

    def identify(self, authorization: str | None) -> Token:
        """The token an Authorization header carries; Unauthenticated when it
        carries none, or one that is not configured."""
        return self.by_secret(presented_secret(authorization))

    def by_secret(self, secret: str | None, where: str = "Authorization: Bearer <secret>") -> Token:
        """The token whose secret this is (an SDK may carry it in its body:
        `where` says how to send it); Unauthenticated when there is none, or
        it is not configured."""
        if not secret:
            raise Unauthenticated(f"this server needs a token: send {where}")
        digest = secret_digest(secret)
        token = self._by_digest.get(digest)
        if token is None or not hmac.compare_digest(token.digest, digest):
            raise Unauthenticated("the token is not valid for this server")
        return token


def presented_secret(authorization: str | None) -> str | None:
    """The secret from `Bearer <secret>`, or the user name of `Basic
    base64(user:password)`."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer":
        return credentials or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return user or password or None  # the secret as the user name; some clients put it in the password
    return None
