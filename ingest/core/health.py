"""Whether the sink can take writes: one answer shared by every table,
by the sources (pause, 503) and by /ready and /metrics."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ingest.core.budget import PausedInputs

log = logging.getLogger("ingest.pipeline")


class SinkHealth:
    """Whether the sink is failing on its environment (a full disk, I/O
    errors, permission, a locked store), since when and why; shared by every
    table. Set by a failed write, cleared by the next one that succeeds.
    While it is failing, inputs pause: TCP connections register here to be
    resumed, HTTP ingest answers 503."""

    def __init__(self):
        self.failing_since: float | None = None  # unix time of the first failure
        self.error = ""
        self._paused = PausedInputs()

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    @property
    def paused_inputs(self) -> int:
        return len(self._paused)

    def failed(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
            log.error("the sink is failing (%s); inputs paused until a write succeeds", error)
        self.error = error

    def recovered(self, why: str = "a write succeeded") -> None:
        if self.failing_since is None:
            return
        log.warning("the sink was failing for %.1fs; %s: inputs resume", time.time() - self.failing_since, why)
        self.failing_since, self.error = None, ""
        self._paused.resume_all()

    def wait_for_recovery(self, owner: object, resume: Callable[[], None]) -> None:
        """`resume` runs once the sink takes writes again."""
        self._paused.hold(self.failing, owner, resume)

    def forget(self, owner: object) -> None:
        self._paused.forget(owner)

    def as_dict(self) -> dict:
        if self.failing_since is None:
            return {"failing": False}
        return {"failing": True, "since": self.failing_since,
                "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failing_since)),
                "for_seconds": round(time.time() - self.failing_since, 3), "error": self.error}
