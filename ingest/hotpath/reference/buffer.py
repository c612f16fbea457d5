"""Pure-Python reference of ext/_buffer.pyx: raw-byte buffering and NDJSON
framing, where a record ends.

Same names, same behaviour, same error messages as the compiled module; it is
the oracle of the differential tests and what INGEST_PURE_PYTHON=1 runs.
Written to be obviously right, not fast.
"""
from __future__ import annotations

import re
from array import array
from collections.abc import Sequence

__all__ = ["BatchBuffer", "SealedBatch", "LineFramer", "split_json_array"]

_VIEWS_ALIVE = ("the BatchBuffer cannot change while a memoryview from its "
                "data() or spans() is alive; release the view first")
_BOM = b"\xef\xbb\xbf"
_JSON_WS = b" \t\n\r"
_BLANK = b" \t\r"  # a line of only these carries no event
_ARRAY_SPECIAL = re.compile(rb'["\[\]{},]')


class _Lines:
    """What BatchBuffer and SealedBatch share: stored lines and read access."""

    __slots__ = ("_data", "_spans")

    def __init__(self) -> None:
        self._data = bytearray()  # payload bytes of all lines, back to back
        self._spans = array("q")  # [start, end) offsets into _data, two per line

    @property
    def events(self) -> int:
        """Number of lines stored."""
        return len(self._spans) // 2

    @property
    def nbytes(self) -> int:
        """Payload bytes of all lines (newlines are not stored)."""
        return len(self._data)

    def data(self) -> memoryview:
        """Read-only memoryview of the payload bytes, zero-copy."""
        return memoryview(self._data).toreadonly()

    def spans(self) -> memoryview:
        """Read-only int64 memoryview [start0, end0, start1, end1, ...]."""
        return memoryview(self._spans).toreadonly()

    def line(self, index: int) -> bytes:
        """Bytes of line `index` (negative counts from the end)."""
        events = self.events
        if index < 0:
            index += events
        if index < 0 or index >= events:
            raise IndexError("line index out of range")
        return bytes(self._data[self._spans[2 * index]:self._spans[2 * index + 1]])


class BatchBuffer(_Lines):
    """Raw NDJSON lines of one table waiting to be sealed into a batch."""

    __slots__ = ("event_limit", "byte_limit")

    def __init__(self, event_limit: int = 0, byte_limit: int = 0) -> None:
        super().__init__()
        self.event_limit = event_limit  # seal at this many lines (0 = no limit)
        self.byte_limit = byte_limit  # seal at this many payload bytes (0 = no limit)

    @property
    def is_full(self) -> bool:
        """True once event_limit or byte_limit (when > 0) is reached."""
        return ((self.event_limit > 0 and self.events >= self.event_limit)
                or (self.byte_limit > 0 and self.nbytes >= self.byte_limit))

    def append_line(self, line) -> None:
        """Append one already-framed line (bytes-like) as one event."""
        self._check_no_views()
        start = len(self._data)
        self._data += line
        self._spans.append(start)
        self._spans.append(len(self._data))

    def extend(self, src: _Lines, start: int, rejected: Sequence[int] | None = None) -> int:
        """Append src's lines from index `start` on, skipping the sorted
        indices in `rejected`, until this buffer is full; returns the index of
        the first line of src not consumed (src.events when all were)."""
        if not isinstance(src, _Lines):
            raise TypeError(f"src must be a BatchBuffer or SealedBatch, not {type(src).__name__}")
        n = src.events
        if start < 0 or start > n:
            raise ValueError(f"start {start} is outside 0..{n}")
        rejected = rejected if rejected is not None else ()
        i, k, last_rejected = start, 0, -1
        while i < n and not self.is_full:
            # read rejected up to the first index >= i
            while last_rejected < i and k < len(rejected):
                value = rejected[k]
                k += 1
                if k > 1 and value < last_rejected:
                    raise ValueError("rejected indices must be sorted ascending")
                last_rejected = value
            if last_rejected != i:
                self.append_line(src.line(i))
            i += 1
        return i

    def clear(self) -> None:
        """Drop all lines; the limits stay."""
        self._check_no_views()
        del self._data[:]
        del self._spans[:]

    def seal(self) -> SealedBatch:
        """Hand the stored lines over to a new SealedBatch, without copying
        them, and leave this buffer empty, with the same limits."""
        self._check_no_views()
        sealed = SealedBatch()
        sealed._data, sealed._spans = self._data, self._spans
        self._data, self._spans = bytearray(), array("q")
        return sealed

    def __repr__(self) -> str:
        return (f"<BatchBuffer events={self.events} nbytes={self.nbytes} "
                f"event_limit={self.event_limit} byte_limit={self.byte_limit}>")

    def _check_no_views(self) -> None:
        # bytearray and array refuse to resize while a memoryview is exported;
        # probe both so a change fails before anything moved, as the compiled
        # buffer's view count makes it fail
        try:
            self._data.append(0)
            del self._data[-1]
            self._spans.append(0)
            del self._spans[-1]
        except BufferError:
            raise BufferError(_VIEWS_ALIVE) from None

    def _truncate(self, events: int) -> None:
        if events < self.events:
            del self._data[self._spans[2 * events - 1] if events else 0:]
            del self._spans[2 * events:]


class SealedBatch(_Lines):
    """Immutable lines taken from a BatchBuffer by seal(); its data() and
    spans() views stay valid however long they are kept."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<SealedBatch events={self.events} nbytes={self.nbytes}>"


class LineFramer:
    """Splits one connection's byte stream into NDJSON lines."""

    __slots__ = ("_max_line_bytes", "_tail", "_discarding", "_too_long", "_lines_seen")

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        if max_line_bytes < 0:
            raise ValueError("max_line_bytes must be >= 0")
        self._max_line_bytes = max_line_bytes
        self._tail = bytearray()  # the unterminated line carried over from the last chunk
        self._discarding = False  # inside an over-long line: drop bytes up to the next newline
        self._too_long = 0
        self._lines_seen = 0

    @property
    def max_line_bytes(self) -> int:
        """Lines longer than this (without "\\n" and a trailing "\\r") are dropped."""
        return self._max_line_bytes

    @property
    def too_long(self) -> int:
        """Lines dropped because they were longer than max_line_bytes."""
        return self._too_long

    @property
    def lines_seen(self) -> int:
        """Non-empty lines seen, over-long ones included."""
        return self._lines_seen

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unterminated line kept for the next chunk."""
        return len(self._tail)

    def feed(self, chunk, start: int, out: BatchBuffer) -> int:
        """Append the complete lines of chunk[start:] to `out`; returns where it
        stopped: len(chunk), or just past the line that made `out` full."""
        chunk = bytes(chunk)
        end = len(chunk)
        if start < 0 or start > end:
            raise ValueError(f"start {start} is outside 0..{end}")
        pos = start
        if out.is_full:
            return pos
        while pos < end:
            newline = chunk.find(b"\n", pos)
            if newline < 0:
                self._keep_tail(chunk[pos:])
                return end
            if self._discarding:
                self._discarding = False
            else:
                self._emit(chunk[pos:newline], out)
            pos = newline + 1
            if out.is_full:
                break
        return pos

    def finish(self, out: BatchBuffer) -> int:
        """End of stream: append the unterminated last line, if any, even when
        `out` is full; returns the number of lines appended (0 or 1)."""
        appended = out.events
        if self._discarding:
            self._discarding = False
        elif self._tail:
            self._emit(b"", out)
        return out.events - appended

    def _emit(self, segment: bytes, out: BatchBuffer) -> None:
        # the line is the tail (possibly empty) followed by segment
        line = bytes(self._tail) + segment
        if line.endswith(b"\r"):
            line = line[:-1]
        # too long whatever it holds, as when it was cut short by _keep_tail
        if len(line) > self._max_line_bytes:
            self._too_long += 1
            self._lines_seen += 1
        elif line.strip(_BLANK):
            out.append_line(line)
            self._lines_seen += 1
        self._tail.clear()

    def _keep_tail(self, piece: bytes) -> None:
        if self._discarding:
            return
        # one byte of slack: a final "\r" is not part of the line
        if len(self._tail) + len(piece) - 1 > self._max_line_bytes:
            self._too_long += 1
            self._lines_seen += 1
            self._discarding = True
            self._tail.clear()
            return
        self._tail += piece


def split_json_array(body, out: BatchBuffer) -> int:
    """Append each top-level element of the JSON array `body` (bytes-like) to
    `out` as one line, ignoring out's limits; returns the number of elements.

    Only element boundaries are found (the encoder validates the elements).
    Raises ValueError, leaving `out` as it was, when body is not one array.
    """
    events = out.events
    try:
        return _split_json_array(bytes(body), out)
    except BaseException:
        out._truncate(events)
        raise


def _skip_ws(body: bytes, pos: int) -> int:
    while pos < len(body) and body[pos] in _JSON_WS:
        pos += 1
    return pos


def _string_end(body: bytes, pos: int) -> int:
    # body[pos] opens a string: index of the quote closing it, or -1
    at = pos + 1
    while at < len(body):
        k = body.find(b'"', at)
        if k < 0:
            return -1
        escapes = 0
        while k - escapes - 1 > pos and body[k - escapes - 1] == 0x5C:  # backslash
            escapes += 1
        if escapes % 2 == 0:
            return k
        at = k + 1
    return -1


def _describe(c: int) -> str:
    return f"'{chr(c)}'" if 0x20 < c < 0x7F else f"byte 0x{c:02x}"


def _array_error(message: str) -> ValueError:
    return ValueError(f"invalid JSON array body: {message}")


def _split_json_array(body: bytes, out: BatchBuffer) -> int:
    end = len(body)
    pos = 3 if body.startswith(_BOM) else 0
    pos = _skip_ws(body, pos)
    if pos == end:
        raise _array_error(f"expected '[' at byte {pos}, found the end of the body")
    if body[pos] != ord("["):
        raise _array_error(f"expected '[' at byte {pos}, found {_describe(body[pos])}")
    pos = _skip_ws(body, pos + 1)
    count = 0
    if pos < end and body[pos] == ord("]"):
        pos += 1
    else:
        while True:
            if pos == end:
                raise _array_error(f"the array is truncated at byte {end}: no closing ']'")
            if body[pos] == ord(","):
                raise _array_error(f"empty element at byte {pos}")
            if body[pos] == ord("]"):
                raise _array_error(f"trailing comma before the ']' at byte {pos}")
            first = pos
            stack: list[str] = []  # open brackets of this element
            while True:
                match = _ARRAY_SPECIAL.search(body, pos)
                if match is None:
                    pos = end
                    break
                pos = match.start()
                c = chr(body[pos])
                if c == '"':
                    stop = _string_end(body, pos)
                    if stop < 0:
                        raise _array_error(f"unterminated string starting at byte {pos}")
                    pos = stop + 1
                    continue
                if c in "[{":
                    stack.append(c)
                elif c in "]}":
                    if not stack:
                        if c == "]":
                            break
                        raise _array_error(f"unexpected '}}' at byte {pos}: no '{{' is open")
                    opened = stack.pop()
                    if opened != ("[" if c == "]" else "{"):
                        expected = "]" if opened == "[" else "}"
                        raise _array_error(f"mismatched '{c}' at byte {pos}: expected '{expected}'")
                elif c == "," and not stack:
                    break
                pos += 1
            if pos == end:
                raise _array_error(f"the array is truncated at byte {end}: no closing ']'")
            out.append_line(body[first:pos].rstrip(_JSON_WS))
            count += 1
            pos += 1
            if body[pos - 1] == ord("]"):
                break
            pos = _skip_ws(body, pos)
    pos = _skip_ws(body, pos)
    if pos != end:
        raise _array_error(f"unexpected {_describe(body[pos])} at byte {pos} after the closing ']'")
    return count
