"""Raw-byte buffering and NDJSON framing: the compiled hot path of
`ingest.hotpath.buffer`.

The layout is described in _buffer.pxd; `ingest/_reference/buffer.py` is the
readable specification of the same behaviour, and the tests assert that both
give identical lines, counters and errors.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE, PyBUF_STRIDES, PyBUF_WRITABLE,
    PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int64_t
from libc.string cimport memchr, memcpy

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
    smaller = PyMem_Realloc(block, used or 1)
    return smaller if smaller != NULL else block


cdef inline bint _is_blank(const char *p, Py_ssize_t n) noexcept:
    # a line of only spaces, tabs and CRs carries no event
    cdef Py_ssize_t k
    for k in range(n):
        if p[k] != c' ' and p[k] != c'\t' and p[k] != c'\r':
            return False
    return True


cdef class _Lines:
    """What BatchBuffer and SealedBatch share: stored lines and read access."""

    @property
    def events(self):
        """Number of lines stored."""
        return self._events

    @property
    def nbytes(self):
        """Payload bytes of all lines (newlines are not stored)."""
        return self._nbytes

    def data(self):
        """Read-only memoryview of the payload bytes, zero-copy."""
        return memoryview(_Export.of(self, False))

    def spans(self):
        """Read-only int64 memoryview [start0, end0, start1, end1, ...]."""
        return memoryview(_Export.of(self, True))

    def line(self, Py_ssize_t index):
        """Bytes of line `index` (negative counts from the end)."""
        if index < 0:
            index += self._events
        if index < 0 or index >= self._events:
            raise IndexError("line index out of range")
        return PyBytes_FromStringAndSize(
            self._data + self._spans[2 * index],
            <Py_ssize_t>(self._spans[2 * index + 1] - self._spans[2 * index]))


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
            buffer.buf = <void *>owner._spans
            self.shape = 2 * owner._events
            self.stride = sizeof(int64_t)
            if flags & PyBUF_FORMAT:
                buffer.format = b"q"
        else:
            buffer.buf = <void *>owner._data
            self.shape = owner._nbytes
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
        self._data = self._inline_data
        self._data_cap = BATCH_INLINE_BYTES
        self._spans = self._inline_spans
        self._spans_cap = BATCH_INLINE_LINES

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
        cdef Py_ssize_t n = src._events, i = start, run_end, j, k = 0
        cdef Py_ssize_t nrejected = 0, last_rejected = -1, value, room
        cdef int64_t base, shift
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
            run_end = last_rejected if i < last_rejected < n else n
            if self.event_limit > 0 and run_end - i > self.event_limit - self._events:
                run_end = i + (self.event_limit - self._events)
            if self.byte_limit > 0:
                room = self.byte_limit - self._nbytes
                base = src._spans[2 * i]
                for j in range(i, run_end):
                    if src._spans[2 * j + 1] - base >= room:
                        run_end = j + 1
                        break
            base = src._spans[2 * i]
            self._make_room(<Py_ssize_t>(src._spans[2 * run_end - 1] - base), run_end - i)
            # read src's pointers only now: src may be self, just reallocated
            shift = self._nbytes - base
            memcpy(self._data + self._nbytes, src._data + base,
                   <size_t>(src._spans[2 * run_end - 1] - base))
            for j in range(2 * i, 2 * run_end):
                self._spans[2 * self._events + j - 2 * i] = src._spans[j] + shift
            self._events += run_end - i
            self._nbytes = <Py_ssize_t>self._spans[2 * self._events - 1]
            i = run_end
        return i

    def clear(self):
        """Drop all lines; the limits stay."""
        if self._view_count:
            raise BufferError(_VIEWS_ALIVE)
        self._events = 0
        self._nbytes = 0

    def seal(self):
        """Hand the stored lines over to a new SealedBatch, without copying
        them, and leave this buffer empty, with the same limits."""
        if self._view_count:
            raise BufferError(_VIEWS_ALIVE)
        cdef SealedBatch sealed = SealedBatch.__new__(SealedBatch)
        cdef size_t data_size = <size_t>self._nbytes
        cdef size_t spans_size = <size_t>(2 * self._events) * sizeof(int64_t)
        # inline storage is copied out (it is small); malloc'd storage moves
        if self._data == self._inline_data:
            sealed._data = <char *>PyMem_Malloc(data_size or 1)
            if sealed._data == NULL:
                raise MemoryError()
            memcpy(sealed._data, self._data, data_size)
        if self._spans == self._inline_spans:
            sealed._spans = <int64_t *>PyMem_Malloc(spans_size or 1)
            if sealed._spans == NULL:
                raise MemoryError()  # sealed frees its copy of _data
            memcpy(sealed._spans, self._spans, spans_size)
        if sealed._data == NULL:
            sealed._data = <char *>_shrunk(self._data, self._data_cap, data_size)
            self._data = self._inline_data
            self._data_cap = BATCH_INLINE_BYTES
        if sealed._spans == NULL:
            sealed._spans = <int64_t *>_shrunk(
                self._spans, <size_t>(2 * self._spans_cap) * sizeof(int64_t), spans_size)
            self._spans = self._inline_spans
            self._spans_cap = BATCH_INLINE_LINES
        sealed._events = self._events
        sealed._nbytes = self._nbytes
        self._events = 0
        self._nbytes = 0
        return sealed

    def __repr__(self):
        return (f"<BatchBuffer events={self._events} nbytes={self._nbytes} "
                f"event_limit={self.event_limit} byte_limit={self.byte_limit}>")

    cdef inline bint _is_full(self) noexcept:
        return ((self.event_limit > 0 and self._events >= self.event_limit)
                or (self.byte_limit > 0 and self._nbytes >= self.byte_limit))

    cdef int _append(self, const char *line, Py_ssize_t n) except -1:
        cdef int64_t *span
        if (self._view_count or self._nbytes + n > self._data_cap
                or self._events >= self._spans_cap):
            self._make_room(n, 1)
        memcpy(self._data + self._nbytes, line, <size_t>n)
        span = self._spans + 2 * self._events
        span[0] = self._nbytes
        self._nbytes += n
        span[1] = self._nbytes
        self._events += 1
        return 0

    cdef int _append2(self, const char *a, Py_ssize_t na,
                      const char *b, Py_ssize_t nb) except -1:
        cdef int64_t *span
        if (self._view_count or self._nbytes + na + nb > self._data_cap
                or self._events >= self._spans_cap):
            self._make_room(na + nb, 1)
        memcpy(self._data + self._nbytes, a, <size_t>na)
        memcpy(self._data + self._nbytes + na, b, <size_t>nb)
        span = self._spans + 2 * self._events
        span[0] = self._nbytes
        self._nbytes += na + nb
        span[1] = self._nbytes
        self._events += 1
        return 0

    cdef int _make_room(self, Py_ssize_t nbytes, Py_ssize_t nlines) except -1:
        cdef Py_ssize_t need, cap
        cdef void *grown
        if self._view_count:
            raise BufferError(_VIEWS_ALIVE)
        need = self._nbytes + nbytes
        if need > self._data_cap:
            cap = max(need, 2 * self._data_cap)
            if self._data == self._inline_data:
                grown = PyMem_Malloc(<size_t>cap)
                if grown != NULL:
                    memcpy(grown, self._data, <size_t>self._nbytes)
            else:
                grown = PyMem_Realloc(self._data, <size_t>cap)
            if grown == NULL:
                raise MemoryError()
            self._data = <char *>grown
            self._data_cap = cap
        need = self._events + nlines
        if need > self._spans_cap:
            cap = max(need, 2 * self._spans_cap)
            if self._spans == self._inline_spans:
                grown = PyMem_Malloc(<size_t>(2 * cap) * sizeof(int64_t))
                if grown != NULL:
                    memcpy(grown, self._spans, <size_t>(2 * self._events) * sizeof(int64_t))
            else:
                grown = PyMem_Realloc(self._spans, <size_t>(2 * cap) * sizeof(int64_t))
            if grown == NULL:
                raise MemoryError()
            self._spans = <int64_t *>grown
            self._spans_cap = cap
        return 0

    cdef void _truncate(self, Py_ssize_t events) noexcept:
        if events < self._events:
            self._events = events
            self._nbytes = <Py_ssize_t>self._spans[2 * events - 1] if events else 0

    cdef void _reset_storage(self) noexcept:
        if self._data != self._inline_data:
            PyMem_Free(self._data)
            self._data = self._inline_data
            self._data_cap = BATCH_INLINE_BYTES
        if self._spans != self._inline_spans:
            PyMem_Free(self._spans)
            self._spans = self._inline_spans
            self._spans_cap = BATCH_INLINE_LINES
        self._events = 0
        self._nbytes = 0


@cython.final
cdef class SealedBatch(_Lines):
    """Immutable lines taken from a BatchBuffer by seal(); its data() and
    spans() views stay valid however long they are kept."""

    def __dealloc__(self):
        PyMem_Free(self._data)
        PyMem_Free(self._spans)

    def __repr__(self):
        return f"<SealedBatch events={self._events} nbytes={self._nbytes}>"


@cython.final
cdef class LineFramer:
    """Splits one connection's byte stream into NDJSON lines."""

    def __cinit__(self):
        self._tail = self._inline_tail
        self._tail_cap = FRAMER_INLINE_TAIL

    def __init__(self, Py_ssize_t max_line_bytes=1 << 20):
        if max_line_bytes < 0:
            raise ValueError("max_line_bytes must be >= 0")
        self.max_line_bytes = max_line_bytes

    def __dealloc__(self):
        if self._tail != self._inline_tail:
            PyMem_Free(self._tail)

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
        return self._tail_len

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
        cdef Py_ssize_t appended = out._events
        if self._discarding:
            self._discarding = False
        elif self._tail_len:
            self._emit(NULL, 0, out)
        return out._events - appended

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
        cdef Py_ssize_t ntail = self._tail_len
        if nseg:
            if seg[nseg - 1] == c'\r':
                nseg -= 1
        elif ntail and self._tail[ntail - 1] == c'\r':
            ntail -= 1
        # too long whatever it holds, as when it was cut short by _keep_tail
        if ntail + nseg > self.max_line_bytes:
            self._too_long += 1
            self._lines_seen += 1
        elif not (_is_blank(self._tail, ntail) and _is_blank(seg, nseg)):
            if ntail and nseg:
                out._append2(self._tail, ntail, seg, nseg)
            elif ntail:
                out._append(self._tail, ntail)
            else:
                out._append(seg, nseg)
            self._lines_seen += 1
        if self._tail_len:
            self._reset_tail()
        return 0

    cdef int _keep_tail(self, const char *piece, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self._tail_len + n, cap
        cdef void *grown
        if self._discarding:
            return 0
        # one byte of slack: a final "\r" is not part of the line
        if need - 1 > self.max_line_bytes:
            self._too_long += 1
            self._lines_seen += 1
            self._discarding = True
            self._reset_tail()
            return 0
        if need > self._tail_cap:
            cap = max(need, 2 * self._tail_cap)
            if self._tail == self._inline_tail:
                grown = PyMem_Malloc(<size_t>cap)
                if grown != NULL:
                    memcpy(grown, self._tail, <size_t>self._tail_len)
            else:
                grown = PyMem_Realloc(self._tail, <size_t>cap)
            if grown == NULL:
                raise MemoryError()
            self._tail = <char *>grown
            self._tail_cap = cap
        memcpy(self._tail + self._tail_len, piece, <size_t>n)
        self._tail_len = need
        return 0

    cdef void _reset_tail(self) noexcept:
        self._tail_len = 0
        if self._tail != self._inline_tail and self._tail_cap > FRAMER_TAIL_KEEP_BYTES:
            PyMem_Free(self._tail)
            self._tail = self._inline_tail
            self._tail_cap = FRAMER_INLINE_TAIL


def split_json_array(body, BatchBuffer out not None):
    """Append each top-level element of the JSON array `body` (bytes-like) to
    `out` as one line, ignoring out's limits; returns the number of elements.

    Only element boundaries are found (the encoder validates the elements).
    Raises ValueError, leaving `out` as it was, when body is not one array.
    """
    cdef Py_buffer view
    cdef Py_ssize_t events = out._events
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
    cdef char *stack = inline_stack
    cdef void *grown
    cdef Py_ssize_t depth, stack_cap = SPLIT_INLINE_DEPTH
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
                depth = 0
                while pos < end:
                    c = p[pos]
                    if c == c'"':
                        stop = _string_end(p, pos, end)
                        if stop < 0:
                            raise _array_error(f"unterminated string starting at byte {pos}")
                        pos = stop + 1
                        continue
                    if c == c'[' or c == c'{':
                        if depth == stack_cap:
                            stack_cap *= 2
                            if stack == inline_stack:
                                grown = PyMem_Malloc(<size_t>stack_cap)
                                if grown != NULL:
                                    memcpy(grown, stack, <size_t>depth)
                            else:
                                grown = PyMem_Realloc(stack, <size_t>stack_cap)
                            if grown == NULL:
                                raise MemoryError()
                            stack = <char *>grown
                        stack[depth] = c
                        depth += 1
                    elif c == c']' or c == c'}':
                        if depth == 0:
                            if c == c']':
                                break
                            raise _array_error(f"unexpected '}}' at byte {pos}: no '{{' is open")
                        depth -= 1
                        if stack[depth] != (c'[' if c == c']' else c'{'):
                            expected = "]" if stack[depth] == c'[' else "}"
                            raise _array_error(
                                f"mismatched '{chr(c)}' at byte {pos}: expected '{expected}'")
                    elif c == c',' and depth == 0:
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
        if stack != inline_stack:
            PyMem_Free(stack)
    pos = _skip_ws(p, pos, end)
    if pos != end:
        raise _array_error(f"unexpected {_describe(<unsigned char>p[pos])} at byte {pos} after the closing ']'")
    return count
