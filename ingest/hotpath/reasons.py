"""Why the encoder rejects a line: every reason text, once, by error code.

Both encoders take their texts from here: the compiled one in `reason()` of
ext/ingest/hotpath/_encoder.pyx (with the GIL, from a LineError's ErrorCode
in encoder_consts.pxi, whose E_ names these follow) and the reference in
`reference/encoder.py`. Clients read the texts in receipts and dead letters,
so they change only on purpose.

The limits a text names (max_depth, MAX_EVENT_KEYS, MAX_LIST_ELEMENTS) are
passed in by each encoder, which owns them; the quoting of a bad timestamp
is a rule of the text, so QUOTED_VALUE_BYTES is here (encoder_consts.pxi
copies that many bytes, plus one to know there were more).
"""
import json

__all__ = [
    "QUOTED_VALUE_BYTES", "TIMESTAMP_FORMAT",
    "END_OF_LINE", "EXPECTED_VALUE", "EXPECTED_KEY", "EXPECTED_COLON", "EXPECTED_COMMA_BRACE",
    "EXPECTED_COMMA_BRACKET", "EXPECTED_END", "BAD_LITERAL", "BAD_NUMBER", "BAD_ESCAPE",
    "LONE_SURROGATE", "CONTROL_CHAR",
    "syntax", "empty_line", "utf8", "not_object", "too_deep", "empty_key", "too_many_keys",
    "type_conflict", "text_too_large", "int_range", "number_range",
    "not_timestamp", "timestamp_range", "not_date", "undeclared", "list_too_long",
]

QUOTED_VALUE_BYTES = 64  # bytes of a value quoted in a reason (longer ones end in "...")
TIMESTAMP_FORMAT = "YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]"

# What is wrong at the byte a syntax error names, the `what` of syntax().
END_OF_LINE = "unexpected end of line"
EXPECTED_VALUE = "expected value"
EXPECTED_KEY = "expected string key"
EXPECTED_COLON = "expected ':'"
EXPECTED_COMMA_BRACE = "expected ',' or '}'"
EXPECTED_COMMA_BRACKET = "expected ',' or ']'"
EXPECTED_END = "expected end of line"
BAD_LITERAL = "invalid literal"
BAD_NUMBER = "invalid number"
BAD_ESCAPE = "invalid escape"
LONE_SURROGATE = "lone surrogate"
CONTROL_CHAR = "control character in string"


# --- the line as a whole


def syntax(at: int, what: str) -> str:
    return f"invalid JSON at byte {at}: {what}"


def empty_line() -> str:
    return "empty line"


def utf8(at: int) -> str:
    return f"invalid UTF-8 at byte {at}"


def not_object() -> str:
    return "top-level value is not an object"


def too_deep(max_depth: int) -> str:
    return f"nesting deeper than {max_depth}"


def empty_key() -> str:
    return "field name is empty"


def too_many_keys(limit: int) -> str:
    return f"more than {limit} fields in one event"


# --- one field; `name` is its key, or its path below a declared list/struct


def type_conflict(name: str, expected: str, got: str) -> str:
    """`expected` a column type, `got` the value's type (inferred columns) or
    its JSON kind (declared ones)."""
    return f"field '{name}': expected {expected}, got {got}"


def text_too_large(name: str) -> str:
    return f"field '{name}': over 2 GiB of text in one batch"


def int_range(name: str) -> str:
    return f"field '{name}': integer out of int64 range"


def number_range(name: str) -> str:
    return f"field '{name}': number out of range for DOUBLE"


def not_timestamp(name: str, value: bytes) -> str:
    """`value` is the string's UTF-8, of which the first QUOTED_VALUE_BYTES
    are quoted (a character cut in two is dropped)."""
    shown = value[:QUOTED_VALUE_BYTES].decode("utf-8", "ignore")
    if len(value) > QUOTED_VALUE_BYTES:
        shown += "..."
    return f"field '{name}': {json.dumps(shown, ensure_ascii=False)} is not an ISO-8601 timestamp ({TIMESTAMP_FORMAT})"


def timestamp_range(name: str) -> str:
    return f"field '{name}': timestamp out of range (years 0001-9999)"


def not_date(name: str) -> str:
    return f"field '{name}': string is not a YYYY-MM-DD date"


def undeclared(name: str) -> str:
    return f"field '{name}' is not declared"


def list_too_long(name: str, limit: int) -> str:
    return f"field '{name}': over {limit} list elements in one batch"
