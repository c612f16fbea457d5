"""Raw-byte buffering and NDJSON framing: the compiled hot path of
`ingest.hotpath.buffer`.

The layout is described in _buffer.pxd; `ingest/hotpath/reference/buffer.py` is the
readable specification of the same behaviour, and the tests assert that both
give identical lines, counters and errors.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE, PyBUF_STRIDES, PyBUF_WRITABLE,
    PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcpy

from ingest.hotpath._growbuf cimport (
    GrowBuf, buf_append, buf_detach, buf_free, buf_init, buf_reserve,
)

__all__ = ["BatchBuffer", "SealedBatch", "LineFramer", "split_json_array"]

# handed out for the payload of an empty SealedBatch (never NULL in a Py_buffer)
cdef char _EMPTY[1]

_VIEWS_ALIVE = ("the BatchBuffer cannot change while a memoryview from its "
                "data() or spans() is alive; release the view first")


cdef void *_shrunk(void *block, size_t allocated, size_t used) noexcept:
    # a sealed batch may wait in a queue: give back doubling's slack when large
    cdef void *smaller
    if allocated - used <= used // 4:
        return block
    smaller = realloc(block, used or 1)
    return smaller if smaller != NULL else block


cdef inline bint _is_blank(const char *p, Py_ssize_t n) noexcept:
    # a line of only spaces, tabs and CRs carries no event
    cdef Py_ssize_t k
    for k in range(n):
        if p[k] != c' ' and p[k] != c'\t' and p[k] != c'\r':
            return False
    return True


cdef void _seal_block(GrowBuf *sealed, const GrowBuf *was, char *block) noexcept:
    # a SealedBatch's GrowBuf: `block` (buf_detach of `was`), without small storage
    buf_init(sealed, NULL, 0)
    sealed.len = was.len
    sealed.cap = was.len
    if was.data == was.small:
        sealed.data = block  # a copy of exactly len bytes
    else:
        sealed.data = <char *>_shrunk(block, <size_t>was.cap, <size_t>was.len)


cdef inline Py_ssize_t _events(_Lines lines) noexcept:
    return lines._spans.len // SPAN_BYTES


cdef inline int64_t *_spans_of(_Lines lines) noexcept:
    return <int64_t *>lines._spans.data


cdef class _Lines:
    """What BatchBuffer and SealedBatch share: stored lines and read access."""

    @property
    def events(self):
        """Number of lines stored."""
        return _events(self)

    @property
    def nbytes(self):
        """Payload bytes of all lines (newlines are not stored)."""
        return self._payload.len

    def data(self):
        """Read-only memoryview of the payload bytes, zero-copy."""
        return memoryview(_Export.of(self, False))

    def spans(self):
        """Read-only int64 memoryview [start0, end0, start1, end1, ...]."""
        return memoryview(_Export.of(self, True))

    def line(self, Py_ssize_t index):
        """Bytes of line `index` (negative counts from the end)."""
        cdef const int64_t *spans = _spans_of(self)
        cdef Py_ssize_t events = _events(self)
        if index < 0:
            index += events
        if index < 0 or index >= events:
            raise IndexError("line index out of range")
        return PyBytes_FromStringAndSize(
            self._payload.data + spans[2 * index],
            <Py_ssize_t>(spans[2 * index + 1] - spans[2 * index]))


@cython.final
cdef class _Export:
    """Read-only buffer-protocol export of a _Lines' payload or spans."""

    @staticmethod
    cdef _Export of(_Lines owner, bint is_spans):
        cdef _Export export = _Export.__new__(_Export)
        export.owner = owner
        export.is_spans = is_spans
        return export

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        cdef _Lines owner = self.owner
        if owner is None:
            raise BufferError("nothing to export: use data() or spans()")
        if flags & PyBUF_WRITABLE:
            raise BufferError("the lines' memory is read-only")
        buffer.format = NULL
        if self.is_spans:
            buffer.buf = <void *>owner._spans.data
            self.shape = 2 * _events(owner)
            self.stride = sizeof(int64_t)
            if flags & PyBUF_FORMAT:
                buffer.format = b"q"
        else:
            buffer.buf = <void *>owner._payload.data
            self.shape = owner._payload.len
            self.stride = 1
            if flags & PyBUF_FORMAT:
                buffer.format = b"B"
        if buffer.buf == NULL:
            buffer.buf = <void *>_EMPTY
        buffer.obj = self
        buffer.len = self.shape * self.stride
        buffer.readonly = 1
        buffer.itemsize = self.stride
        buffer.ndim = 1
        buffer.shape = &self.shape if flags & PyBUF_ND else NULL
        buffer.strides = &self.stride if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        owner._view_count += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.owner._view_count -= 1


@cython.final
cdef class BatchBuffer(_Lines):
    """Raw NDJSON lines of one table waiting to be sealed into a batch."""

    def __cinit__(self):
        buf_init(&self._payload, self._inline_data, BATCH_INLINE_BYTES)
        buf_init(&self._spans, self._inline_spans, sizeof(self._inline_spans))

    def __init__(self, Py_ssize_t event_limit=0, Py_ssize_t byte_limit=0):
        self.event_limit = event_limit
        self.byte_limit = byte_limit

    def __dealloc__(self):
        self._reset_storage()

    @property
    def is_full(self):
        """True once event_limit or byte_limit (when > 0) is reached."""
        return self._is_full()

    def append_line(self, line):
        """Append one already-framed line (bytes-like) as one event."""
        cdef Py_buffer view
        PyObject_GetBuffer(line, &view, PyBUF_SIMPLE)
        try:
            self._append(<const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def extend(self, _Lines src not None, Py_ssize_t start, rejected=None):
        """Append src's lines from index `start` on, skipping the sorted
        indices in `rejected`, until this buffer is full; returns the index of
        the first line of src not consumed (src.events when all were)."""
        cdef Py_ssize_t n = _events(src), i = start, run_end, j, k = 0
        cdef Py_ssize_t nrejected = 0, last_rejected = -1, value, room, events
        cdef int64_t base, shift
        cdef const int64_t *src_spans
        cdef int64_t *spans
        if start < 0 or start > n:
            raise ValueError(f"start {start} is outside 0..{n}")
        if rejected is not None:
            nrejected = len(rejected)
        while i < n and not self._is_full():
            # read rejected up to the first index >= i
            while last_rejected < i and k < nrejected:
                value = rejected[k]
                k += 1
                if k > 1 and value < last_rejected:
                    raise ValueError("rejected indices must be sorted ascending")
                last_rejected = value
            if last_rejected == i:
                i += 1
                continue
            # lines [i, run_end) are accepted and stored back to back in src
            events = _events(self)
            run_end = last_rejected if i < last_rejected < n else n
            if self.event_limit > 0 and run_end - i > self.event_limit - events:
                run_end = i + (self.event_limit - events)
            src_spans = _spans_of(src)
            if self.byte_limit > 0:
                room = self.byte_limit - self._payload.len
                base = src_spans[2 * i]
                for j in range(i, run_end):
                    if src_spans[2 * j + 1] - base >= room:
                        run_end = j + 1
                        break
            base = src_spans[2 * i]
            self._make_room(<Py_ssize_t>(src_spans[2 * run_end - 1] - base), run_end - i)
            # read src's pointers only now: src may be self, just reallocated
            src_spans = _spans_of(src)
            spans = _spans_of(self)
            shift = self._payload.len - base
            memcpy(self._payload.data + self._payload.len, src._payload.data + base,
                   <size_t>(src_spans[2 * run_end - 1] - base))
            for j in range(2 * i, 2 * run_end):
                spans[2 * events + j - 2 * i] = src_spans[j] + shift
            events += run_end - i
            self._spans.len = events * SPAN_BYTES
            self._payload.len = <Py_ssize_t>spans[2 * events - 1]
            i = run_end
        return i

    def clear(self):
        """Drop all lines; the limits stay."""
        if self._view_count:
            raise BufferError(_VIEWS_ALIVE)
        self._spans.len = 0
        self._payload.len = 0

    def seal(self):
        """Hand the stored lines over to a new SealedBatch, without copying
        them, and leave this buffer empty, with the same limits."""
        if self._view_count:
            raise BufferError(_VIEWS_ALIVE)
        cdef SealedBatch sealed = SealedBatch.__new__(SealedBatch)
        cdef GrowBuf payload = self._payload, spans = self._spans  # to put back on failure
        # small storage is copied out (it is small); malloc'd storage moves
        cdef char *payload_block = buf_detach(&self._payload)
        cdef char *spans_block = buf_detach(&self._spans) if payload_block != NULL else NULL
        if spans_block == NULL:
            if payload_block != NULL and payload.data == payload.small:
                free(payload_block)
            self._payload = payload
            self._spans = spans
            raise MemoryError()
        _seal_block(&sealed._payload, &payload, payload_block)
        _seal_block(&sealed._spans, &spans, spans_block)
        return sealed

    def __repr__(self):
        return (f"<BatchBuffer events={_events(self)} nbytes={self._payload.len} "
                f"event_limit={self.event_limit} byte_limit={self.byte_limit}>")

    cdef inline bint _is_full(self) noexcept:
        return ((self.event_limit > 0 and _events(self) >= self.event_limit)
                or (self.byte_limit > 0 and self._payload.len >= self.byte_limit))

    cdef int _append(self, const char *line, Py_ssize_t n) except -1:
        cdef int64_t *span
        if (self._view_count or self._payload.len + n > self._payload.cap
                or self._spans.len + SPAN_BYTES > self._spans.cap):
            self._make_room(n, 1)
        memcpy(self._payload.data + self._payload.len, line, <size_t>n)
        span = <int64_t *>(self._spans.data + self._spans.len)
        span[0] = self._payload.len
        self._payload.len += n
        span[1] = self._payload.len
        self._spans.len += SPAN_BYTES
        return 0

    cdef int _append2(self, const char *a, Py_ssize_t na,
                      const char *b, Py_ssize_t nb) except -1:
        cdef int64_t *span
        if (self._view_count or self._payload.len + na + nb > self._payload.cap
                or self._spans.len + SPAN_BYTES > self._spans.cap):
            self._make_room(na + nb, 1)
        memcpy(self._payload.data + self._payload.len, a, <size_t>na)
        memcpy(self._payload.data + self._payload.len + na, b, <size_t>nb)
        span = <int64_t *>(self._spans.data + self._spans.len)
        span[0] = self._payload.len
        self._payload.len += na + nb
        span[1] = self._payload.len
        self._spans.len += SPAN_BYTES
        return 0

    cdef int _make_room(self, Py_ssize_t nbytes, Py_ssize_t nlines) except -1:
        if self._view_count:
            raise BufferError(_VIEWS_ALIVE)
        if (buf_reserve(&self._payload, nbytes) < 0
                or buf_reserve(&self._spans, nlines * SPAN_BYTES) < 0):
            raise MemoryError()
        return 0

    cdef void _truncate(self, Py_ssize_t events) noexcept:
        if events < _events(self):
            self._spans.len = events * SPAN_BYTES
            self._payload.len = <Py_ssize_t>_spans_of(self)[2 * events - 1] if events else 0

    cdef void _reset_storage(self) noexcept:
        buf_free(&self._payload)
        buf_free(&self._spans)


@cython.final
cdef class SealedBatch(_Lines):
    """Immutable lines taken from a BatchBuffer by seal(); its data() and
    spans() views stay valid however long they are kept."""

    def __dealloc__(self):
        buf_free(&self._payload)
        buf_free(&self._spans)

    def __repr__(self):
        return f"<SealedBatch events={_events(self)} nbytes={self._payload.len}>"


@cython.final
cdef class LineFramer:
    """Splits one connection's byte stream into NDJSON lines."""

    def __cinit__(self):
        buf_init(&self._tail, self._inline_tail, FRAMER_INLINE_TAIL)

    def __init__(self, Py_ssize_t max_line_bytes=1 << 20):
        if max_line_bytes < 0:
            raise ValueError("max_line_bytes must be >= 0")
        self.max_line_bytes = max_line_bytes

    def __dealloc__(self):
        buf_free(&self._tail)

    @property
    def too_long(self):
        """Lines dropped because they were longer than max_line_bytes."""
        return self._too_long

    @property
    def lines_seen(self):
        """Non-empty lines seen, over-long ones included."""
        return self._lines_seen

    @property
    def pending_bytes(self):
        """Bytes of the unterminated line kept for the next chunk."""
        return self._tail.len

    def feed(self, chunk, Py_ssize_t start, BatchBuffer out not None):
        """Append the complete lines of chunk[start:] to `out`; returns where it
        stopped: len(chunk), or just past the line that made `out` full."""
        cdef Py_buffer view
        PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE)
        try:
            if start < 0 or start > view.len:
                raise ValueError(f"start {start} is outside 0..{view.len}")
            return self._feed(<const char *>view.buf, start, view.len, out)
        finally:
            PyBuffer_Release(&view)

    def finish(self, BatchBuffer out not None):
        """End of stream: append the unterminated last line, if any, even when
        `out` is full; returns the number of lines appended (0 or 1)."""
        cdef Py_ssize_t appended = _events(out)
        if self._discarding:
            self._discarding = False
        elif self._tail.len:
            self._emit(NULL, 0, out)
        return _events(out) - appended

    cdef Py_ssize_t _feed(self, const char *p, Py_ssize_t pos, Py_ssize_t end,
                          BatchBuffer out) except -1:
        cdef const char *newline
        cdef Py_ssize_t stop
        if out._is_full():
            return pos
        while pos < end:
            newline = <const char *>memchr(p + pos, c'\n', <size_t>(end - pos))
            if newline == NULL:
                self._keep_tail(p + pos, end - pos)
                return end
            stop = newline - p
            if self._discarding:
                self._discarding = False
            else:
                self._emit(p + pos, stop - pos, out)
            pos = stop + 1
            if out._is_full():
                break
        return pos

    cdef int _emit(self, const char *seg, Py_ssize_t nseg, BatchBuffer out) except -1:
        # the line is the tail (possibly empty) followed by seg
        cdef const char *tail = self._tail.data
        cdef Py_ssize_t ntail = self._tail.len
        if nseg:
            if seg[nseg - 1] == c'\r':
                nseg -= 1
        elif ntail and tail[ntail - 1] == c'\r':
            ntail -= 1
        # too long whatever it holds, as when it was cut short by _keep_tail
        if ntail + nseg > self.max_line_bytes:
            self._too_long += 1
            self._lines_seen += 1
        elif not (_is_blank(tail, ntail) and _is_blank(seg, nseg)):
            if ntail and nseg:
                out._append2(tail, ntail, seg, nseg)
            elif ntail:
                out._append(tail, ntail)
            else:
                out._append(seg, nseg)
            self._lines_seen += 1
        if self._tail.len:
            self._reset_tail()
        return 0

    cdef int _keep_tail(self, const char *piece, Py_ssize_t n) except -1:
        if self._discarding:
            return 0
        # one byte of slack: a final "\r" is not part of the line
        if self._tail.len + n - 1 > self.max_line_bytes:
            self._too_long += 1
            self._lines_seen += 1
            self._discarding = True
            self._reset_tail()
            return 0
        if buf_append(&self._tail, piece, n) < 0:
            raise MemoryError()
        return 0

    cdef void _reset_tail(self) noexcept:
        self._tail.len = 0
        if self._tail.data != self._tail.small and self._tail.cap > FRAMER_TAIL_KEEP_BYTES:
            buf_free(&self._tail)


def split_json_array(body, BatchBuffer out not None):
    """Append each top-level element of the JSON array `body` (bytes-like) to
    `out` as one line, ignoring out's limits; returns the number of elements.

    Only element boundaries are found (the encoder validates the elements).
    Raises ValueError, leaving `out` as it was, when body is not one array.
    """
    cdef Py_buffer view
    cdef Py_ssize_t events = _events(out)
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        return _split_json_array(<const char *>view.buf, view.len, out)
    except BaseException:
        out._truncate(events)
        raise
    finally:
        PyBuffer_Release(&view)


cdef inline bint _is_ws(char c) noexcept:
    return c == c' ' or c == c'\t' or c == c'\n' or c == c'\r'


cdef inline Py_ssize_t _skip_ws(const char *p, Py_ssize_t pos, Py_ssize_t end) noexcept:
    while pos < end and _is_ws(p[pos]):
        pos += 1
    return pos


cdef Py_ssize_t _string_end(const char *p, Py_ssize_t pos, Py_ssize_t end) noexcept:
    # p[pos] opens a string: index of the quote closing it, or -1
    cdef const char *quote
    cdef Py_ssize_t at = pos + 1, k, escapes
    while at < end:
        quote = <const char *>memchr(p + at, c'"', <size_t>(end - at))
        if quote == NULL:
            return -1
        k = quote - p
        escapes = 0
        while k - escapes - 1 > pos and p[k - escapes - 1] == c'\\':
            escapes += 1
        if escapes % 2 == 0:
            return k
        at = k + 1
    return -1


cdef str _describe(unsigned char c):
    return f"'{chr(c)}'" if 0x20 < c < 0x7f else f"byte 0x{c:02x}"


cdef _array_error(str message):
    return ValueError(f"invalid JSON array body: {message}")


cdef Py_ssize_t _split_json_array(const char *p, Py_ssize_t end,
                                  BatchBuffer out) except -1:
    cdef char inline_stack[SPLIT_INLINE_DEPTH]
    cdef GrowBuf stack  # the open '[' and '{' of the current element, innermost last
    cdef Py_ssize_t pos = 0, first, stop, count = 0
    cdef char c
    if end >= 3 and p[0] == <char>0xEF and p[1] == <char>0xBB and p[2] == <char>0xBF:
        pos = 3
    pos = _skip_ws(p, pos, end)
    if pos == end:
        raise _array_error(f"expected '[' at byte {pos}, found the end of the body")
    if p[pos] != c'[':
        raise _array_error(f"expected '[' at byte {pos}, found {_describe(<unsigned char>p[pos])}")
    pos = _skip_ws(p, pos + 1, end)
    buf_init(&stack, inline_stack, SPLIT_INLINE_DEPTH)
    try:
        if pos < end and p[pos] == c']':
            pos += 1
        else:
            while True:
                if pos == end:
                    raise _array_error(f"the array is truncated at byte {end}: no closing ']'")
                if p[pos] == c',':
                    raise _array_error(f"empty element at byte {pos}")
                if p[pos] == c']':
                    raise _array_error(f"trailing comma before the ']' at byte {pos}")
                first = pos
                stack.len = 0
                while pos < end:
                    c = p[pos]
                    if c == c'"':
                        stop = _string_end(p, pos, end)
                        if stop < 0:
                            raise _array_error(f"unterminated string starting at byte {pos}")
                        pos = stop + 1
                        continue
                    if c == c'[' or c == c'{':
                        if buf_append(&stack, &c, 1) < 0:
                            raise MemoryError()
                    elif c == c']' or c == c'}':
                        if stack.len == 0:
                            if c == c']':
                                break
                            raise _array_error(f"unexpected '}}' at byte {pos}: no '{{' is open")
                        stack.len -= 1
                        if stack.data[stack.len] != (c'[' if c == c']' else c'{'):
                            expected = "]" if stack.data[stack.len] == c'[' else "}"
                            raise _array_error(
                                f"mismatched '{chr(c)}' at byte {pos}: expected '{expected}'")
                    elif c == c',' and stack.len == 0:
                        break
                    pos += 1
                if pos == end:
                    raise _array_error(f"the array is truncated at byte {end}: no closing ']'")
                stop = pos
                while _is_ws(p[stop - 1]):
                    stop -= 1
                out._append(p + first, stop - first)
                count += 1
                pos += 1
                if p[pos - 1] == c']':
                    break
                pos = _skip_ws(p, pos, end)
    finally:
        buf_free(&stack)
    pos = _skip_ws(p, pos, end)
    if pos != end:
        raise _array_error(f"unexpected {_describe(<unsigned char>p[pos])} at byte {pos} after the closing ']'")
    return count
