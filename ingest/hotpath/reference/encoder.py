"""Pure-Python reference of `ingest.hotpath._encoder`: JSON lines -> Arrow record batches.

The readable specification of what a record means, and the oracle of the
differential tests: it must give the same batches (schema and field metadata
included) and the same (line, reason) errors as the compiled encoder.

Python's `json` module cannot serve as the parser here: it accepts lone
surrogates and NaN/Infinity, reports errors with other wording and offsets,
and forgets the original text of nested values. So the parser below is a small
strict recursive-descent one over the line's bytes; the tests check its values
against `json.loads`.

Rules, in the order they are applied to a line:

1. Invalid UTF-8 anywhere: "invalid UTF-8 at byte N" (N = first byte of the
   first invalid sequence).
2. A UTF-8 BOM at byte 0 is skipped; space, tab, CR and LF are whitespace.
3. Otherwise the first problem in byte order: a syntax error
   "invalid JSON at byte N: <what>", "nesting deeper than D" (the top-level
   object is depth 1), "field name is empty" for a top-level key "",
   "more than 10000 fields in one event" at the top-level object's 10001st
   key (MAX_EVENT_KEYS; repeated keys count), or, for a complete value that is
   not an object, "top-level value is not an object".
   A line of only whitespace is an "empty line".
4. Then each distinct top-level field in order of first appearance (a repeated
   key keeps its first place and its last value) is checked against its
   column: a number beyond float64 (1e400, a 400-digit integer) is "field
   'NAME': number out of range for DOUBLE" whatever the column; a string for
   a timestamp column is "timestamp out of range (years 0001-9999)" when it
   is ISO-8601 but its UTC instant is not within them, else "field 'NAME':
   "TEXT" is not an ISO-8601 timestamp (FORMAT)" (its first 64 bytes quoted);
   otherwise "field 'NAME': expected TYPE, got TYPE", or "field 'NAME': over
   2 GiB of text in one batch" (text columns have int32 offsets).
5. A line that passes is committed whole: a column gets its type from its
   first non-null value (and only then joins the schema), int64 widens to
   float64 when a float arrives (exact up to 2**53; beyond, the nearest double),
   float64 takes ints as floats, a string column
   takes timestamp-looking strings as text. A string is timestamp-looking
   only if its UTC instant is within years 0001-9999.

Declared schemas (`Encoder(schema=declared_schema({...}), strict=...)`, see
ingest/schema.py for the type strings):

6. Declared columns come first in the schema, in declared order, are in
   every batch (null where a line lacks them) and never change type.
   Undeclared fields are inferred as above and come after them; in a strict
   table a line with an undeclared field is rejected: "field 'NAME' is not
   declared", judged in step 4's order like any other field.
7. A declared field's value is converted, or the line is rejected naming the
   field's path (`col`, `col.field` inside a struct, `col[i]` for the i-th
   list element, from 0). null is always accepted (as NULL), anywhere.
   - int64: an integer literal; outside int64: "integer out of int64 range".
   - float64: any number (integers become floats, huge ones as by strtod);
     beyond float64's range: "number out of range for DOUBLE".
   - bool: true/false. string: a JSON string only (its decoded text).
   - timestamp[unit] (s, ms, us; UTC): an ISO-8601 string as in rule 5's
     inference, truncated (floored) to the unit; or an integer, taken as that
     many units since 1970-01-01T00:00:00Z, within years 0001-9999
     ("timestamp out of range (years 0001-9999)", also for a string whose
     UTC instant is outside them). A string that is not a timestamp:
     "\"TEXT\" is not an ISO-8601 timestamp (FORMAT)", as in rule 4.
   - date: a "YYYY-MM-DD" string, years 0001-9999 ("string is not a
     YYYY-MM-DD date").
   - json: any value, kept as its exact original text (strings with their
     quotes and escapes).
   - list<T>: an array; each element converted to T.
   - struct<...>: an object; its fields converted by name, fields it lacks
     are NULL, keys the struct does not declare are ignored (in a strict
     table they reject the line, "field 'col.key' is not declared"). A key
     repeated inside an object must fit each time; the last one wins.
   Any other value: "expected TYPE, got KIND", TYPE one of bool, int64,
   float64, string, timestamp, date, list, struct and KIND one of bool,
   integer (no fraction or exponent), number, string, object, array.
   A repeated top-level key is judged on its last value only (rule 4), but a
   nested value is converted in byte order, so the first problem inside it is
   the one named. Text and list offsets are int32: "over 2 GiB of text in one
   batch", "over 2147483647 list elements in one batch".
"""
from __future__ import annotations

import datetime
import math
import re

import pyarrow as pa

from ingest.hotpath import reasons
from ingest.hotpath.protocols import EncodeResult
from ingest.schema import JSON_METADATA, DeclaredType, declared_types

__all__ = ["Encoder", "validate_lines", "TYPE_NAMES"]

TYPE_NAMES = ("bool", "int64", "float64", "string", "timestamp", "json")
ARROW_TYPES = {
    "bool": pa.bool_(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
}
MAX_DEPTH_LIMIT = 100_000
MAX_TEXT_BYTES = 2**31 - 1  # int32 offsets
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_LIST_ELEMENTS = 2**31 - 1  # int32 offsets
MIN_MICROS, MAX_MICROS = -62135596800000000, 253402300799999999  # years 0001-9999
# Width of one event (encoder_consts.pxi has the same numbers):
MAX_EVENT_KEYS = 10_000  # keys of the top-level object (repeats count); nesting is max_depth
DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")

BOM = b"\xef\xbb\xbf"
WHITESPACE = b" \t\n\r"
DIGITS = b"0123456789"
HEX_DIGITS = b"0123456789abcdefABCDEF"
SIMPLE_ESCAPES = {ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b",
                  ord("f"): "\f", ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}
PLAIN_STRING_BYTES = re.compile(rb'[^"\\\x00-\x1f]*')
TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


class LineRejected(Exception):
    """A line that cannot be stored; args[0] is the reason."""


class JsonSyntaxError(LineRejected):
    def __init__(self, at: int, what: str):
        super().__init__(reasons.syntax(at, what))


# ---------------------------------------------------------------------------
# Values of one line


def parse_timestamp(text: str) -> int | None:
    """Microseconds since the epoch (UTC) of an ISO-8601 date-time whose UTC
    instant is within years 0001-9999, or None."""
    micros = timestamp_syntax(text)
    return micros if micros is not None and MIN_MICROS <= micros <= MAX_MICROS else None


def timestamp_syntax(text: str) -> int | None:
    """Microseconds since the epoch (UTC) of an ISO-8601 date-time, or None.

    YYYY-MM-DD[T or space]HH:MM:SS[.1-9 digits][Z | +HH:MM | +HHMM | -...];
    no offset means UTC, digits past the microsecond are dropped, years
    0001-9999 as written (the offset may take the UTC instant outside them),
    seconds 00-59 (a leap second 60 is not a timestamp).
    """
    match = TIMESTAMP.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    try:
        days = datetime.date(year, month, day).toordinal() - EPOCH_ORDINAL
    except ValueError:  # year 0, month 13, February 30, ...
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset_seconds = 0
    if offset and offset != "Z":
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None
        offset_seconds = (hours * 3600 + minutes * 60) * (-1 if offset[0] == "-" else 1)
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_seconds
    return seconds * 1_000_000 + micros


def timestamp_rejection(path: str, text: str) -> LineRejected:
    """Why a string does not go in a timestamp column: out of range, or not
    ISO-8601 (quoting its first reasons.QUOTED_VALUE_BYTES bytes)."""
    if timestamp_syntax(text) is not None:
        return LineRejected(reasons.timestamp_range(path))
    return LineRejected(reasons.not_timestamp(path, text.encode("utf-8")))


def parse_date(text: str) -> int | None:
    """Days since the epoch of a YYYY-MM-DD date (years 0001-9999), or None."""
    match = DATE.fullmatch(text)
    if not match:
        return None
    try:
        return datetime.date(*(int(g) for g in match.groups())).toordinal() - EPOCH_ORDINAL
    except ValueError:
        return None


class Value:
    """One top-level field value: its inferred type name (None for null) and
    what a column of each possible type stores from it."""

    __slots__ = ("type", "value", "text", "start")

    def __init__(self, type_: str | None, value=None, text: str | None = None):
        self.type = type_
        self.value = value  # bool, int, float, timestamp µs; str for string/json
        self.text = text  # string/json text (also kept for timestamps)
        self.start = 0  # where the value starts in the line (declared columns read it again)

    @classmethod
    def of_string(cls, text: str) -> Value:
        micros = parse_timestamp(text)
        if micros is None:
            return cls("string", text, text)
        return cls("timestamp", micros, text)


class LineParser:
    """Strict JSON over one line's bytes (already known to be valid UTF-8)."""

    def __init__(self, line: bytes, max_depth: int):
        self.s = line
        self.n = len(line)
        self.pos = 0
        self.max_depth = max_depth

    # -- helpers

    def skip_ws(self) -> None:
        while self.pos < self.n and self.s[self.pos] in WHITESPACE:
            self.pos += 1

    def peek(self) -> int:
        """The next byte; the line must not end here."""
        if self.pos >= self.n:
            raise JsonSyntaxError(self.n, reasons.END_OF_LINE)
        return self.s[self.pos]

    def hex4(self, at: int) -> int | None:
        digits = self.s[at:at + 4]
        if len(digits) != 4 or any(c not in HEX_DIGITS for c in digits):
            return None
        return int(digits, 16)

    # -- tokens

    def string(self) -> str:
        """The string whose opening quote is at pos, decoded."""
        s, n = self.s, self.n
        pos = self.pos + 1
        parts = []
        while True:
            plain = PLAIN_STRING_BYTES.match(s, pos)
            parts.append(plain.group().decode("utf-8"))
            pos = plain.end()
            if pos >= n:
                raise JsonSyntaxError(n, reasons.END_OF_LINE)
            c = s[pos]
            if c == ord('"'):
                self.pos = pos + 1
                return "".join(parts)
            if c < 0x20:
                raise JsonSyntaxError(pos, reasons.CONTROL_CHAR)
            char, used = self.escape(pos)
            parts.append(char)
            pos += used

    def escape(self, at: int) -> tuple[str, int]:
        """The escape whose backslash is at `at`: its character and its length."""
        kind = self.s[at + 1] if at + 1 < self.n else None
        if kind in SIMPLE_ESCAPES:
            return SIMPLE_ESCAPES[kind], 2
        if kind != ord("u"):
            raise JsonSyntaxError(at, reasons.BAD_ESCAPE)
        code = self.hex4(at + 2)
        if code is None:
            raise JsonSyntaxError(at, reasons.BAD_ESCAPE)
        if 0xDC00 <= code <= 0xDFFF:
            raise JsonSyntaxError(at, reasons.LONE_SURROGATE)
        if 0xD800 <= code <= 0xDBFF:
            low = self.hex4(at + 8) if self.s[at + 6:at + 8] == b"\\u" else None
            if low is None or not 0xDC00 <= low <= 0xDFFF:
                raise JsonSyntaxError(at, reasons.LONE_SURROGATE)
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
        return chr(code), 6

    def number(self) -> int | float:
        """-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; ints that fit int64 stay ints."""
        s, n, start = self.s, self.n, self.pos
        pos = start + (s[start] == ord("-"))

        def digits_from(at: int) -> int:
            while at < n and s[at] in DIGITS:
                at += 1
            return at

        if pos >= n or s[pos] not in DIGITS:
            raise JsonSyntaxError(start, reasons.BAD_NUMBER)
        if s[pos] == ord("0"):
            pos += 1
            if pos < n and s[pos] in DIGITS:
                raise JsonSyntaxError(start, reasons.BAD_NUMBER)  # leading zero
        else:
            pos = digits_from(pos)
        is_float = False
        if pos < n and s[pos] == ord("."):
            is_float = True
            if pos + 1 >= n or s[pos + 1] not in DIGITS:
                raise JsonSyntaxError(start, reasons.BAD_NUMBER)
            pos = digits_from(pos + 1)
        if pos < n and s[pos] in b"eE":
            is_float = True
            pos += 1
            if pos < n and s[pos] in b"+-":
                pos += 1
            if pos >= n or s[pos] not in DIGITS:
                raise JsonSyntaxError(start, reasons.BAD_NUMBER)
            pos = digits_from(pos)
        self.pos = pos
        text = s[start:pos].decode("ascii")
        # (the length test keeps int() away from Python's 4300-digit limit)
        if not is_float and len(text) <= 20 and INT64_MIN <= int(text) <= INT64_MAX:
            return int(text)
        return float(text)  # correctly rounded, like strtod; 1e400 -> inf (rejected where stored)

    def literal(self, word: bytes) -> None:
        start = self.pos
        for k, expected in enumerate(word):
            if start + k >= self.n:
                raise JsonSyntaxError(self.n, reasons.END_OF_LINE)
            if self.s[start + k] != expected:
                raise JsonSyntaxError(start, reasons.BAD_LITERAL)
        self.pos = start + len(word)

    def key_and_colon(self) -> str:
        """A key (whitespace before it skipped) and the ':' after it."""
        if self.peek() != ord('"'):
            raise JsonSyntaxError(self.pos, reasons.EXPECTED_KEY)
        key = self.string()
        self.skip_ws()
        if self.peek() != ord(":"):
            raise JsonSyntaxError(self.pos, reasons.EXPECTED_COLON)
        self.pos += 1
        return key

    # -- values

    def skip_value(self, depth: int) -> None:
        """Checks one value of any kind and moves past it, with an explicit
        stack (no recursion); `depth` containers are already open around it."""
        s = self.s
        stack: list[int] = []  # '{' or '[' of the containers opened here
        while True:
            # A value is expected.
            self.skip_ws()
            c = self.peek()
            if c in b"{[":
                if depth + len(stack) + 1 > self.max_depth:
                    raise LineRejected(reasons.too_deep(self.max_depth))
                stack.append(c)
                self.pos += 1
                self.skip_ws()
                if self.pos < self.n and s[self.pos] == c + 2:  # '}' / ']': empty
                    self.pos += 1
                    stack.pop()
                elif c == ord("{"):
                    self.key_and_colon()
                    continue
                else:
                    continue
            elif c == ord('"'):
                self.string()
            elif c in b"tfn":
                self.literal({ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}[c])
            elif c == ord("-") or c in DIGITS:
                self.number()
            else:
                raise JsonSyntaxError(self.pos, reasons.EXPECTED_VALUE)
            # A value ended: close containers until one continues with ','.
            while stack:
                self.skip_ws()
                c = self.peek()
                if c == ord(","):
                    self.pos += 1
                    if stack[-1] == ord("{"):
                        self.skip_ws()
                        self.key_and_colon()
                    break
                if c == stack[-1] + 2:
                    self.pos += 1
                    stack.pop()
                    continue
                raise JsonSyntaxError(self.pos, reasons.EXPECTED_COMMA_BRACE if stack[-1] == ord("{")
                                      else reasons.EXPECTED_COMMA_BRACKET)
            if not stack:
                return

    def field_value(self) -> Value:
        """One top-level value."""
        start = self.pos
        value = self._field_value()
        value.start = start
        return value

    def _field_value(self) -> Value:
        c = self.peek()
        start = self.pos
        if c == ord('"'):
            return Value.of_string(self.string())
        if c in b"{[":
            self.skip_value(1)
            text = self.s[start:self.pos].decode("utf-8")
            return Value("json", text, text)
        if c == ord("t"):
            self.literal(b"true")
            return Value("bool", True)
        if c == ord("f"):
            self.literal(b"false")
            return Value("bool", False)
        if c == ord("n"):
            self.literal(b"null")
            return Value(None)
        if c == ord("-") or c in DIGITS:
            number = self.number()
            return Value("int64" if isinstance(number, int) else "float64", number)
        raise JsonSyntaxError(start, reasons.EXPECTED_VALUE)

    def line(self) -> dict[str, Value]:
        """The whole line: its top-level fields, in order of first appearance."""
        s = self.s
        if s.startswith(BOM):
            self.pos = len(BOM)
        self.skip_ws()
        if self.pos >= self.n:
            raise LineRejected(reasons.empty_line())
        if s[self.pos] != ord("{"):
            self.skip_value(0)
            raise LineRejected(reasons.not_object())
        self.pos += 1
        self.skip_ws()
        fields: dict[str, Value] = {}
        keys = 0
        if self.pos < self.n and s[self.pos] == ord("}"):
            self.pos += 1
        else:
            while True:
                self.skip_ws()
                if self.peek() != ord('"'):
                    raise JsonSyntaxError(self.pos, reasons.EXPECTED_KEY)
                keys += 1
                if keys > MAX_EVENT_KEYS:
                    raise LineRejected(reasons.too_many_keys(MAX_EVENT_KEYS))
                key = self.string()
                if not key:
                    raise LineRejected(reasons.empty_key())
                self.skip_ws()
                if self.peek() != ord(":"):
                    raise JsonSyntaxError(self.pos, reasons.EXPECTED_COLON)
                self.pos += 1
                self.skip_ws()
                fields[key] = self.field_value()  # a repeated key: last value, first place
                self.skip_ws()
                c = self.peek()
                self.pos += 1
                if c == ord(","):
                    continue
                if c == ord("}"):
                    break
                raise JsonSyntaxError(self.pos - 1, reasons.EXPECTED_COMMA_BRACE)
        self.skip_ws()
        if self.pos < self.n:
            raise JsonSyntaxError(self.pos, reasons.EXPECTED_END)
        return fields


def parse_line(line: bytes, max_depth: int) -> dict[str, Value]:
    """The fields of one line, or LineRejected with the reason."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LineRejected(reasons.utf8(error.start)) from None
    return LineParser(line, max_depth).line()


# ---------------------------------------------------------------------------
# Inputs


def _lines(data, spans) -> list[bytes]:
    data = bytes(memoryview(data).cast("B"))
    view = memoryview(spans)
    if view.format != "q":
        view = view.cast("B").cast("q")
    offsets = view.tolist()
    if len(offsets) % 2:
        raise ValueError("spans must hold an even number of int64 offsets")
    lines = []
    for i in range(len(offsets) // 2):
        start, end = offsets[2 * i], offsets[2 * i + 1]
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"span {i} ({start}, {end}) is not within the data ({len(data)} bytes)")
        lines.append(data[start:end])
    return lines


def _check_max_depth(max_depth: int) -> None:
    if not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, got {max_depth}")


def validate_lines(data, spans, max_depth: int = 64) -> list[tuple[int, str]]:
    """Syntax-only check of NDJSON lines (no schema): the (line index, reason)
    errors that encode() would give for syntax, UTF-8, depth and empty keys."""
    _check_max_depth(max_depth)
    errors = []
    for index, line in enumerate(_lines(data, spans)):
        try:
            parse_line(line, max_depth)
        except LineRejected as rejected:
            errors.append((index, rejected.args[0]))
    return errors


# ---------------------------------------------------------------------------
# Declared columns


class Node:
    """A declared column, or a list element / struct field below one, with
    what the current batch holds of it (text bytes, list elements): the same
    int32 limits as the compiled encoder's offsets."""

    def __init__(self, declared: DeclaredType):
        self.kind = declared.kind
        self.divisor = declared.divisor
        self.item = Node(declared.item) if declared.kind == "list" else None
        self.fields = {name: Node(child) for name, child in declared.fields}
        self.text = 0  # bytes of text in the batch (string, json)
        self.elements = 0  # list elements in the batch (of any value, nulls too)

    def subtree(self) -> list[Node]:
        nodes = [self]
        for child in ([self.item] if self.item else []) + list(self.fields.values()):
            nodes.extend(child.subtree())
        return nodes


def _mismatch(path: str, expected: str, kind: str) -> LineRejected:
    return LineRejected(reasons.type_conflict(path, expected, kind))


def _number_kind(raw: bytes) -> str:
    return "number" if any(c in raw for c in b".eE") else "integer"


class Converter:
    """Converts one line's declared values, in byte order, as the compiled
    encoder does: into Python values that pa.array builds the columns from."""

    def __init__(self, line: bytes, max_depth: int, strict: bool):
        self.parser = LineParser(line, max_depth)
        self.strict = strict

    def value(self, node: Node, path: str, start: int):
        self.parser.pos = start
        return self.convert(node, path, 1)

    def convert(self, node: Node, path: str, depth: int):
        """The value at the parser's position; `depth` containers are open around it."""
        p = self.parser
        p.skip_ws()
        start, c = p.pos, p.s[p.pos]
        if c == ord("n"):
            p.literal(b"null")
            return None
        if node.kind == "list":
            if c != ord("["):
                raise _mismatch(path, "list", self.kind_here())
            return self.list_(node, path, depth)
        if node.kind == "struct":
            if c != ord("{"):
                raise _mismatch(path, "struct", self.kind_here())
            return self.struct(node, path, depth)
        if node.kind == "json":
            p.skip_value(depth)
            text = p.s[start:p.pos].decode("utf-8")
            self.add_text(node, path, p.pos - start)
            return text
        if c in b"{[":
            raise _mismatch(path, node.kind, self.kind_here())
        if c == ord('"'):
            kind, token = "string", p.string()
        elif c in b"tf":
            kind, token = "bool", c == ord("t")
            p.literal(b"true" if token else b"false")
        else:
            token = p.number()
            kind = _number_kind(p.s[start:p.pos])
        return self.scalar(node, path, kind, token)

    def kind_here(self) -> str:
        c = self.parser.s[self.parser.pos]
        if c in b"{[":
            return "object" if c == ord("{") else "array"
        if c == ord('"'):
            return "string"
        if c in b"tf":
            return "bool"
        start = self.parser.pos
        self.parser.number()
        return _number_kind(self.parser.s[start:self.parser.pos])

    def scalar(self, node: Node, path: str, kind: str, token):
        want = node.kind
        if want == "bool" and kind == "bool":
            return token
        if want == "int64" and kind == "integer":
            if isinstance(token, float):  # outside int64
                raise LineRejected(reasons.int_range(path))
            return token
        if want == "float64" and kind in ("integer", "number"):
            if math.isinf(token):
                raise LineRejected(reasons.number_range(path))
            return float(token)
        if want == "string" and kind == "string":
            self.add_text(node, path, len(token.encode("utf-8")))
            return token
        if want == "timestamp":
            if kind == "string":
                micros = parse_timestamp(token)
                if micros is None:
                    raise timestamp_rejection(path, token)
                return micros // node.divisor  # floor: the digits past the unit are dropped
            if kind == "integer":
                if isinstance(token, float) or not (
                        MIN_MICROS // node.divisor <= token <= MAX_MICROS // node.divisor):
                    raise LineRejected(reasons.timestamp_range(path))
                return token
        if want == "date" and kind == "string":
            days = parse_date(token)
            if days is None:
                raise LineRejected(reasons.not_date(path))
            return days
        raise _mismatch(path, want, kind)

    def list_(self, node: Node, path: str, depth: int) -> list:
        p = self.parser
        p.pos += 1
        p.skip_ws()
        items = []
        if p.s[p.pos] == ord("]"):
            p.pos += 1
            return items
        while True:
            element = f"{path}[{len(items)}]"
            if node.elements >= MAX_LIST_ELEMENTS:
                raise LineRejected(reasons.list_too_long(element, MAX_LIST_ELEMENTS))
            node.elements += 1
            items.append(self.convert(node.item, element, depth + 1))
            p.skip_ws()
            p.pos += 1
            if p.s[p.pos - 1] == ord("]"):
                return items

    def struct(self, node: Node, path: str, depth: int) -> dict:
        p = self.parser
        p.pos += 1
        p.skip_ws()
        values: dict = {}
        before: dict[str, list] = {}  # per key set here: its nodes' counters before it
        if p.s[p.pos] == ord("}"):
            p.pos += 1
            return values
        while True:
            p.skip_ws()
            key = p.key_and_colon()
            child = node.fields.get(key)
            if child is None:
                if self.strict:
                    raise LineRejected(reasons.undeclared(f"{path}.{key}"))
                p.skip_value(depth + 1)
            else:
                if key in before:  # repeated: the earlier value no longer counts
                    for n, text, elements in before[key]:
                        n.text, n.elements = text, elements
                else:
                    before[key] = [(n, n.text, n.elements) for n in child.subtree()]
                values[key] = self.convert(child, f"{path}.{key}", depth + 1)
            p.skip_ws()
            p.pos += 1
            if p.s[p.pos - 1] == ord("}"):
                return values

    @staticmethod
    def add_text(node: Node, path: str, size: int) -> None:
        if node.text + size > MAX_TEXT_BYTES:
            raise LineRejected(reasons.text_too_large(path))
        node.text += size


# ---------------------------------------------------------------------------
# The table


def _fits(column_type: str, value_type: str) -> bool:
    return (column_type == value_type
            or (column_type == "float64" and value_type == "int64")
            or (column_type == "int64" and value_type == "float64")  # widens the column
            or (column_type == "string" and value_type == "timestamp"))


class Encoder:
    """Turns one table's NDJSON lines into Arrow record batches, keeping the
    table's column types across calls (see ingest.hotpath.protocols.Encoder).
    `schema` declares columns (rules 6-7), `strict` refuses undeclared fields."""

    def __init__(self, table: str = "", max_depth: int = 64, schema: pa.Schema | None = None,
                 strict: bool = False):
        _check_max_depth(max_depth)
        if strict and schema is None:
            raise ValueError("strict=True needs a declared schema")
        self.table = table
        self.max_depth = max_depth
        self.strict = strict
        self._declared_fields = [] if schema is None else list(schema)
        self._declared: dict[str, Node] = {} if schema is None else {
            name: Node(declared) for name, declared in declared_types(schema, max_depth)}
        self._nodes = [n for node in self._declared.values() for n in node.subtree()]
        self._types: dict[str, str] = {}  # inferred columns, in order of first typing

    def __repr__(self):
        columns = len(self._declared) + len(self._types)
        return f"<ingest.hotpath.reference.encoder.Encoder table={self.table!r} columns={columns}>"

    @property
    def schema(self) -> pa.Schema:
        """The table's current schema: declared columns first, as given, then
        the inferred ones in order of first typing."""
        return pa.schema(self._declared_fields + [
            pa.field(name, ARROW_TYPES[kind], metadata=JSON_METADATA if kind == "json" else None)
            for name, kind in self._types.items()
        ])

    def encode(self, data, spans) -> EncodeResult:
        """Encodes the lines data[spans[2i]:spans[2i+1]] into one record batch."""
        rows: list[tuple[dict, dict[str, Value]]] = []  # (declared values, all fields) per line
        text_bytes: dict[str, int] = {}  # per inferred text column, in this batch
        errors = []
        for node in self._nodes:  # a new batch
            node.text = node.elements = 0
        for index, line in enumerate(_lines(data, spans)):
            counters = [(node.text, node.elements) for node in self._nodes]
            try:
                fields = parse_line(line, self.max_depth)
                declared = self._check(line, fields, text_bytes)
            except LineRejected as rejected:
                for node, (text, elements) in zip(self._nodes, counters):
                    node.text, node.elements = text, elements
                errors.append((index, rejected.args[0]))
                continue
            for name, value in fields.items():
                if value.type is None or name in self._declared:
                    continue
                kind = self._types.setdefault(name, value.type)
                if kind == "int64" and value.type == "float64":
                    self._types[name] = "float64"
                if self._types[name] in ("string", "json"):
                    text_bytes[name] = text_bytes.get(name, 0) + len(value.text.encode("utf-8"))
            rows.append((declared, fields))
        return EncodeResult(self._batch(rows), errors)

    def _check(self, line: bytes, fields: dict[str, Value], text_bytes: dict[str, int]) -> dict:
        """Checks the fields in order; returns the declared ones' converted values."""
        converted = {}
        converter = None
        for name, value in fields.items():
            node = self._declared.get(name)
            if node is None and self.strict:
                raise LineRejected(reasons.undeclared(name))
            if value.type is None:
                continue
            if node is not None:
                converter = converter or Converter(line, self.max_depth, self.strict)
                converted[name] = converter.value(node, name, value.start)
                continue
            if value.type == "float64" and math.isinf(value.value):
                raise LineRejected(reasons.number_range(name))
            kind = self._types.get(name, value.type)
            if kind == "timestamp" and value.type == "string":
                raise timestamp_rejection(name, value.text)
            if not _fits(kind, value.type):
                raise LineRejected(reasons.type_conflict(name, kind, value.type))
            if kind in ("string", "json"):
                if text_bytes.get(name, 0) + len(value.text.encode("utf-8")) > MAX_TEXT_BYTES:
                    raise LineRejected(reasons.text_too_large(name))
        return converted

    def _batch(self, rows: list[tuple[dict, dict[str, Value]]]) -> pa.RecordBatch | None:
        schema = self.schema
        if len(schema) == 0:
            if not rows:
                return None
            return pa.RecordBatch.from_arrays([pa.nulls(len(rows))], names=["_"]).select([])
        arrays = [pa.array([declared.get(field.name) for declared, _ in rows], type=field.type)
                  for field in self._declared_fields]
        for name, kind in self._types.items():
            values = []
            for _, row in rows:
                value = row.get(name)
                if value is None or value.type is None:
                    values.append(None)
                elif kind in ("string", "json"):
                    values.append(value.text)
                elif kind == "float64":
                    values.append(float(value.value))
                else:
                    values.append(value.value)
            arrays.append(pa.array(values, type=ARROW_TYPES[kind]))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
