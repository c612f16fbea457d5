"""Signed webhooks: a JSON notice to a client's URL when its request's
events have landed or been dead-lettered.

The notice is signed like Stripe's: header
``Ingest-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
Deliveries run in their own task and threads, so they never slow ingestion;
failed ones are retried with backoff, and the ones that never go through are
kept in DIR/webhooks/failed.ndjson. Callback hosts must be on the allow-list
(loopback only by default), so the server cannot be turned against other
hosts.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from ingest.backoff import full_jitter

log = logging.getLogger("ingest.webhooks")

SIGNATURE_HEADER = "Ingest-Signature"
QUEUE_LIMIT = 10_000  # notices waiting; past it a notice is recorded as failed, ingestion never waits
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


class CallbackRefused(ValueError):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the allow-list: treat it as a failure."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class Webhooks:
    def __init__(self, secret: str, allowed_hosts: list[str], failed_log: Path):
        self._secret = secret.encode()
        self.allowed_hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self._failed_log = failed_log
        self._queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="webhook")
        self._task: asyncio.Task | None = None
        self.delivered = 0
        self.failed = 0

    def check(self, url: str) -> str:
        """The callback URL if it may be used, else CallbackRefused saying why."""
        if not self._secret:
            raise CallbackRefused("webhooks need a signing secret: start the server with --webhook-secret")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackRefused(f"callback {url!r} is not an http(s) URL")
        if parts.hostname.lower() not in self.allowed_hosts:
            raise CallbackRefused(f"callback host {parts.hostname!r} is not allowed; allowed: "
                                  f"{', '.join(sorted(self.allowed_hosts))} (--webhook-allow)")
        return url

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliver_all(), name="webhooks")

    def notify(self, url: str, notice: dict) -> None:
        try:
            self._queue.put_nowait((url, notice))
        except asyncio.QueueFull:
            self._record_failure(url, notice, "too many notices waiting")

    async def close(self) -> None:
        """Delivers what is queued (each notice gets its attempts), then stops."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
        self._pool.shutdown(wait=True)

    async def _deliver_all(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            url, notice = await self._queue.get()
            try:
                body = json.dumps(notice, separators=(",", ":")).encode()
                error = ""
                for attempt in range(ATTEMPTS):
                    error = await loop.run_in_executor(self._pool, self._post, url, body)
                    if not error:
                        self.delivered += 1
                        break
                    await asyncio.sleep(full_jitter(attempt, BACKOFF_BASE, BACKOFF_MAX))
                else:
                    self._record_failure(url, notice, error)
            finally:
                self._queue.task_done()

    def _post(self, url: str, body: bytes) -> str:
        """One delivery attempt; the error text, or "" when it went through."""
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, int(time.time()), body),
        })
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as response:
                response.read()
                return "" if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return str(exc)

    def _record_failure(self, url: str, notice: dict, error: str) -> None:
        self.failed += 1
        log.error("webhook to %s for receipt %s failed: %s", url, notice.get("receipt"), error)
        self._failed_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._failed_log, "a") as f:
            f.write(json.dumps({"url": url, "error": error, "notice": notice}) + "\n")
