"""Refusals in the log: one warning line per kind at most every few seconds,
so that a flood of bad requests or connections cannot flood the log (they
are all counted in ingest_refusals_total regardless)."""
from __future__ import annotations

import logging
import time
from typing import Callable

REFUSAL_LOG_INTERVAL = 10  # seconds: at most one log line per kind and status in that time


class RefusalLog:
    """A warning line per refused request or connection, at most one per route and status
    every `interval` seconds; the ones left out are counted in the next line."""

    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_LOG_INTERVAL,
                 explain: Callable[[bytes], str] = bytes.decode):
        self._log = logger  # the source's own: "ingest.http", "ingest.tcp"
        self._interval = interval
        self._explain = explain  # what a refusal given as bytes (a rendered answer) says
        self._last: dict[tuple, float] = {}
        self._suppressed: dict[tuple, int] = {}

    def refused(self, route: str, status: int, peer: str, response: bytes | str) -> None:
        """`route`: what was refused (a route template, "tcp connection"); `response`:
        the rendered answer (explained only when a line is written), or the reason."""
        key = (route, status)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return  # a flood of refusals is counted, not parsed for a line nobody sees
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        why = self._explain(response) if isinstance(response, bytes) else response
        reason = " ".join(why.split())[:300]  # one line, whatever the error text holds
        self._log.warning("refused %d %s from %s: %s%s", status, route, peer, reason,
                    f" (and {suppressed} more like it not logged)" if suppressed else "")
