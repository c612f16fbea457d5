"""What the client raises, and the `Failure` it records for events that will not land."""
from __future__ import annotations

from dataclasses import dataclass, field

ABANDONED = "the client was closed before the server acknowledged these events"


class IngestError(Exception):
    """A request the server did not take, or that could not reach it. `status`
    is the last HTTP status (None when there was no answer), `reply` the
    server's JSON document when it sent one."""

    def __init__(self, message: str, status: int | None = None, reply: dict | None = None):
        super().__init__(message)
        self.status = status
        self.reply = reply


class RequestTooLarge(IngestError):
    """413, or a body over `max_request_bytes`: send fewer events per request."""


class FlushTimeout(IngestError):
    """504 for `wait="flushed"`: the server has the events and they will land,
    but they were not committed within the wait timeout. `reply` holds the
    receipt to poll."""


class QueueFull(Exception):
    """send() found `max_queue` events waiting (overflow="raise", or "block" past its timeout)."""


class ClientClosed(RuntimeError):
    """send() or flush() after close()."""


class Abandoned(IngestError):
    """close() gave up on events still being retried."""


@dataclass(frozen=True)
class Failure:
    """Events that will not land through this client. `count` is how many;
    `events` holds the lines the client can name (all of them when the whole
    request failed, the listed ones when the server rejected some lines, none
    for events the server dead-lettered: find those in its dead-letter store)."""

    table: str
    count: int
    reason: str
    status: int | None = None  # the HTTP status, None when the server never answered
    events: list[bytes] = field(default_factory=list, repr=False)
