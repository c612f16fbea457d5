"""HTTP answers: HttpError for refusals, Reply for what a handler answers,
and their rendering as HTTP/1.1 bytes."""
from __future__ import annotations

import json
from functools import lru_cache
from http import HTTPStatus
from typing import NamedTuple

JSON_TYPE = "application/json"
RETRY_AFTER_SECONDS = 1  # what 429 and 503 ask a client to wait
RETRY_LATER = (("Retry-After", str(RETRY_AFTER_SECONDS)),)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


class Reply(NamedTuple):
    """A handler's answer; the connection renders it (keep-alive is its business)."""

    status: int
    body: bytes
    content_type: str
    headers: tuple = ()


def json_body(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def json_reply(status: int, document, headers: tuple = ()) -> Reply:
    return Reply(status, json_body(document), JSON_TYPE, headers)


def error_reply(error: HttpError) -> Reply:
    return json_reply(error.status, {"error": str(error)}, error.headers)


def render_response(status: int, body: bytes, content_type: str, keep_alive: bool, headers=()) -> bytes:
    head = _head(status, content_type, keep_alive)
    if headers:
        head += "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")
    return b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body)


@lru_cache(maxsize=256)
def _head(status: int, content_type: str, keep_alive: bool) -> bytes:
    """The status line and the headers every answer of its kind shares, rendered once."""
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n").encode("latin-1")


def render(reply: Reply, keep_alive: bool) -> bytes:
    return render_response(reply.status, reply.body, reply.content_type, keep_alive, reply.headers)


def refusal_reason(response: bytes) -> str:
    """What a rendered 4xx/5xx answer tells its client (its JSON "error")."""
    status_line, _, rest = response.partition(b"\r\n")
    try:
        document = json.loads(rest.partition(b"\r\n\r\n")[2])
        errors = document.get("errors") or [{}]
        return str(document.get("error") or errors[0].get("error") or document.get("status") or status_line[13:].decode())
    except (ValueError, AttributeError, TypeError):
        return status_line[13:].decode("latin-1")


def token_refusal(token, scopes, tables, what: str, observe) -> HttpError | None:
    """403 when `token` may not use `scopes` on one of `tables` (`what` the
    caller tried), 429 when it is over its quota, else None; each refusal
    counted by `observe(reason, token name)`."""
    for table in tables:
        forbidden = token.forbids(scopes, table, what)
        if forbidden is not None:
            observe("forbidden", token.name)
            return HttpError(403, forbidden)
    limited = token.rate_limited()
    if limited is not None:
        observe("rate_limited", token.name)
        return HttpError(429, limited.message(token), headers=limited.headers())
    return None
