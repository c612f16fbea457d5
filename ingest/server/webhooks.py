"""Signed webhooks: a JSON notice to a client's URL when its request's
events have landed or been dead-lettered.

The notice is signed like Stripe's: header
``Ingest-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
Deliveries run in tasks of their own, one per destination (host:port), so
they never slow ingestion and a receiver that hangs delays only its own
notices; failed ones are retried with backoff, and the ones that never go
through (or are still waiting when the shutdown grace runs out) are kept in
DIR/webhooks/failed.ndjson. Callback hosts must be on the allow-list
(loopback only by default), so the server cannot be turned against other
hosts.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from ingest.backoff import full_jitter
from ingest.server.config import is_loopback

log = logging.getLogger("ingest.webhooks")

SIGNATURE_HEADER = "Ingest-Signature"
QUEUE_LIMIT = 10_000  # notices waiting per destination; past it a notice is recorded as failed, ingestion never waits
MAX_DESTINATIONS = 64  # destinations with notices waiting; a notice to one more is recorded as failed
ATTEMPTS = 5
BACKOFF_BASE = 0.2  # seconds
BACKOFF_MAX = 5.0
TIMEOUT = 5.0  # seconds for one delivery attempt


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does: check the HMAC and that the timestamp is fresh."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", "")) and abs(time.time() - timestamp) <= tolerance


def _port(parts) -> int:
    """The port a split callback URL names, or its scheme's; ValueError for an invalid one."""
    return parts.port or (443 if parts.scheme == "https" else 80)


class CallbackRefused(ValueError):
    pass


class _Destination:
    """The notices waiting for one host:port, and the one being tried."""

    def __init__(self):
        self.waiting: deque = deque()
        self.current = None
        self.task: asyncio.Task | None = None


class Webhooks:
    def __init__(self, secret: str, allowed_hosts: list[str], failed_log: Path):
        self._secret = secret.encode()
        self.allowed_hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self._failed_log = failed_log
        self._destinations: dict[tuple[str, int], _Destination] = {}
        self._closed = False
        self.delivered = 0
        self.failed = 0
        self.own_endpoints: set[tuple[str, int]] = set()  # (host, port) this server answers HTTP on: never a callback

    def check(self, url: str) -> str:
        """The callback URL if it may be used, else CallbackRefused saying why."""
        if not self._secret:
            raise CallbackRefused("webhooks need a signing secret: set INGEST_WEBHOOK_SECRET or --webhook-secret-file")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackRefused(f"callback {url!r} is not an http(s) URL")
        if parts.hostname.lower() not in self.allowed_hosts:
            raise CallbackRefused(f"callback host {parts.hostname!r} is not allowed; allowed: "
                                  f"{', '.join(sorted(self.allowed_hosts))} (--webhook-allow)")
        try:
            port = _port(parts)
        except ValueError:
            raise CallbackRefused(f"callback {url!r} has an invalid port") from None
        if self._is_own(parts.hostname.lower().rstrip("."), port):
            raise CallbackRefused(f"callback {url!r} is this server's own HTTP endpoint: its notices would ingest "
                                  "themselves and ask for more")
        return url

    def _is_own(self, host: str, port: int) -> bool:
        for own_host, own_port in self.own_endpoints:
            if port == own_port and (host == own_host or is_loopback(host) or own_host in ("0.0.0.0", "::", "")):
                return True
        return False

    def notify(self, url: str, notice: dict) -> None:
        if self._closed:
            self._record_failures([(url, notice)], "the server stopped before it could be sent")
            return
        parts = urlsplit(url)
        try:
            key = (parts.hostname or "", _port(parts))
        except ValueError:  # a bad port (a callback logged before check() refused those)
            self._record_failures([(url, notice)], "invalid port in the callback URL")
            return
        destination = self._destinations.get(key)
        if destination is None and len(self._destinations) >= MAX_DESTINATIONS:
            self._record_failures([(url, notice)], "too many destinations with notices waiting")
            return
        if destination is not None and len(destination.waiting) >= QUEUE_LIMIT:
            self._record_failures([(url, notice)], "too many notices waiting")
            return
        if destination is None:
            destination = self._destinations[key] = _Destination()
            destination.task = asyncio.get_running_loop().create_task(
                self._deliver(key, destination), name=f"webhooks {key[0]}:{key[1]}")
        destination.waiting.append((url, notice))

    async def close(self, timeout: float) -> None:
        """Delivers what is waiting for up to `timeout` seconds, then gives
        up: the notices still waiting or being tried are kept in
        failed.ndjson like any other failure."""
        self._closed = True
        destinations = list(self._destinations.values())
        if not destinations:
            return
        _, late = await asyncio.wait([d.task for d in destinations], timeout=max(timeout, 0))
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        undelivered = [notice for d in destinations if d.task in late
                       for notice in ([d.current] if d.current else []) + list(d.waiting)]
        if undelivered:
            log.warning("shutdown grace ran out with %d webhook notice(s) undelivered; kept in %s",
                        len(undelivered), self._failed_log)
            self._record_failures(undelivered, "not delivered before the shutdown grace ran out", quiet=True)

    async def _deliver(self, key: tuple[str, int], destination: _Destination) -> None:
        """One destination's notices in order, each with its attempts; ends
        when none are left."""
        try:
            while destination.waiting:
                url, notice = destination.current = destination.waiting.popleft()
                body = json.dumps(notice, separators=(",", ":")).encode()
                for attempt in range(ATTEMPTS):
                    error = await self._post(url, body)
                    if not error:
                        self.delivered += 1
                        break
                    if attempt + 1 < ATTEMPTS:
                        await asyncio.sleep(full_jitter(attempt, BACKOFF_BASE, BACKOFF_MAX))
                else:
                    self._record_failures([(url, notice)], error)
                destination.current = None
        finally:
            if self._destinations.get(key) is destination:
                del self._destinations[key]

    async def _post(self, url: str, body: bytes) -> str:
        """One delivery attempt; the error text, or "" when it went through.
        Redirects count as failures: they could lead off the allow-list."""
        try:
            status = await asyncio.wait_for(self._exchange(url, body), TIMEOUT)
        except asyncio.TimeoutError:
            return f"no answer within {TIMEOUT:g}s"
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return str(exc) or type(exc).__name__
        return "" if 200 <= status < 300 else f"HTTP {status}"

    async def _exchange(self, url: str, body: bytes) -> int:
        """POSTs the notice; the answer's status code."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c.isspace() or not c.isprintable() for c in target):
            raise ValueError(f"callback path {target!r} holds spaces or control characters")
        request = (f"POST {target} HTTP/1.1\r\n"
                   f"Host: {parts.netloc.rpartition('@')[2]}\r\n"
                   "Content-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n"
                   f"{SIGNATURE_HEADER}: {sign(self._secret, int(time.time()), body)}\r\n"
                   "User-Agent: ingest-webhooks\r\n"
                   "Connection: close\r\n\r\n").encode()
        reader, writer = await asyncio.open_connection(
            parts.hostname, _port(parts),
            ssl=ssl.create_default_context() if https else None)
        try:
            writer.write(request + body)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
        fields = head.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise ValueError(f"not an HTTP answer: {head[:60]!r}")
        return int(fields[1])

    def _record_failures(self, notices: list, error: str, quiet: bool = False) -> None:
        self.failed += len(notices)
        if not quiet:
            for url, notice in notices:
                log.error("webhook to %s for receipt %s failed: %s", url, notice.get("receipt"), error)
        self._failed_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._failed_log, "a") as f:
            f.writelines(json.dumps({"url": url, "error": error, "notice": notice}) + "\n" for url, notice in notices)
