"""NDJSON bodies (one JSON object per line) and JSON-array bodies, framed
into lines by the hot path and checked line by line."""
from __future__ import annotations

from ingest.hotpath.buffer import BatchBuffer, LineFramer, split_json_array
from ingest.hotpath.encoder import validate_lines
from ingest.sources.formats.base import Decoded, InvalidBody

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
JSON_TYPE = "application/json"
UTF8_BOM = b"\xef\xbb\xbf"
NO_EVENTS = ("the body holds no events: send one JSON object per line"
             " (application/x-ndjson) or a JSON array of objects (application/json)")


def decode_ndjson(body: bytes) -> Decoded:
    lines = BatchBuffer()
    framer = LineFramer(len(body) + 1)  # the body's size is already limited: no line in it is too long
    framer.feed(body, 0, lines)
    framer.finish(lines)
    return _checked(lines)


def decode_json(body: bytes) -> Decoded:
    """A JSON array of objects, or else NDJSON (a single object is one line)."""
    if body.lstrip(b" \t\r\n").removeprefix(UTF8_BOM).lstrip(b" \t\r\n")[:1] != b"[":
        return decode_ndjson(body)
    lines = BatchBuffer()
    try:
        split_json_array(body, lines)
    except ValueError as exc:
        raise InvalidBody(f"invalid JSON array: {exc}") from None
    return _checked(lines)


def _checked(lines) -> Decoded:
    if not lines.events:  # nothing was valid, as for a body of only bad lines
        raise InvalidBody(NO_EVENTS)
    return Decoded(lines=lines, errors=validate_lines(lines.data(), lines.spans()))
