# Raw-byte buffering and NDJSON framing: where a record ends. The hot path of
# `ingest.hotpath.buffer`.
#
# Table of contents and data layout of _buffer.pyx, which Cython pairs with
# this file when it compiles `ingest.hotpath._buffer` (ext/ingest/ mirrors the
# package). Lines are stored back to back, without their newline, in one
# contiguous byte buffer plus an int64 spans array [start0, end0, start1,
# end1, ...], each a GrowBuf (_growbuf.pxd) that starts in storage inside
# the object and grows by doubling; seal() moves the two allocations into a
# SealedBatch, which the encoder reads from a worker thread while the
# BatchBuffer keeps receiving. Hot classes are @cython.final.

cimport cython
from libc.stdint cimport int64_t

from ingest.hotpath._growbuf cimport GrowBuf


cdef enum:
    # payload bytes a BatchBuffer holds inside the object before it mallocs
    BATCH_INLINE_BYTES = 2048
    # lines a BatchBuffer holds inside the object before it mallocs spans
    BATCH_INLINE_LINES = 32
    # partial-line bytes a LineFramer holds inside the object before it mallocs
    FRAMER_INLINE_TAIL = 512
    # a malloc'd tail larger than this is freed once its line is emitted
    FRAMER_TAIL_KEEP_BYTES = 65536
    # bracket nesting split_json_array tracks on the C stack before it mallocs
    SPLIT_INLINE_DEPTH = 64
    # bytes of one line's span in _Lines._spans: [start, end) as two int64
    SPAN_BYTES = 16


cdef class _Lines:
    # what BatchBuffer and SealedBatch share; Python API: events, nbytes,
    # data(), spans(), line(i)
    cdef:
        GrowBuf _payload        # payload bytes of all lines, back to back (len: payload bytes)
        GrowBuf _spans          # int64 [start, end) offsets into _payload, SPAN_BYTES per line
        Py_ssize_t _view_count  # memoryviews from data()/spans() still alive


@cython.final
cdef class _Export:
    # read-only buffer-protocol export of a _Lines' payload ('B') or spans
    # ('q'), behind the memoryviews of data() and spans(); counts itself in
    # owner._view_count while exported
    cdef:
        _Lines owner            # whose memory is exported; counts the views
        bint is_spans           # export the spans ('q') rather than the payload ('B')
        Py_ssize_t shape        # items in the export, for Py_buffer.shape
        Py_ssize_t stride       # item size in bytes, for Py_buffer.strides

    # the exporter for one view
    @staticmethod
    cdef _Export of(_Lines owner, bint is_spans)


@cython.final
cdef class BatchBuffer(_Lines):
    # lines of one table waiting to be sealed; Python API: is_full,
    # append_line(), extend(), clear(), seal()
    cdef:
        public Py_ssize_t event_limit  # seal at this many lines (0 = no limit)
        public Py_ssize_t byte_limit   # seal at this many payload bytes (0 = no limit)
        char _inline_data[BATCH_INLINE_BYTES]          # _payload's small storage
        int64_t _inline_spans[2 * BATCH_INLINE_LINES]  # _spans' small storage

    # a limit reached?
    cdef inline bint _is_full(self) noexcept
    # one line (BufferError while views are alive)
    cdef int _append(self, const char *line, Py_ssize_t n) except -1
    # one line in two pieces: framer tail + chunk head
    cdef int _append2(self, const char *a, Py_ssize_t na,
                      const char *b, Py_ssize_t nb) except -1
    # room for nbytes and nlines more; refuses while views are alive
    cdef int _make_room(self, Py_ssize_t nbytes, Py_ssize_t nlines) except -1
    # drop lines from `events` on (a failed split)
    cdef void _truncate(self, Py_ssize_t events) noexcept
    # back to the inline storage, freeing the rest
    cdef void _reset_storage(self) noexcept


@cython.final
cdef class SealedBatch(_Lines):
    # immutable lines taken by seal(); owns _payload and _spans (always
    # malloc'd, no small storage) and frees them; no fields or C methods of
    # its own
    pass


@cython.final
cdef class LineFramer:
    # splits one connection's byte stream into lines; Python API: too_long,
    # lines_seen, pending_bytes, feed(), finish()
    cdef:
        readonly Py_ssize_t max_line_bytes  # longer lines (without "\n" and a final "\r") are dropped
        GrowBuf _tail               # the unterminated line carried over to the next chunk
        bint _discarding            # inside an over-long line: drop bytes up to the next newline
        Py_ssize_t _too_long        # over-long lines dropped so far
        Py_ssize_t _lines_seen      # non-empty lines seen, over-long ones included
        char _inline_tail[FRAMER_INLINE_TAIL]  # _tail's small storage

    # the memchr loop over one chunk
    cdef Py_ssize_t _feed(self, const char *p, Py_ssize_t pos, Py_ssize_t end,
                          BatchBuffer out) except -1
    # judge tail + segment as one line; append it
    cdef int _emit(self, const char *seg, Py_ssize_t nseg, BatchBuffer out) except -1
    # carry an unterminated piece (or discard it)
    cdef int _keep_tail(self, const char *piece, Py_ssize_t n) except -1
    # forget the tail, freeing a large one
    cdef void _reset_tail(self) noexcept


# Module-level functions of _buffer.pyx, private to it (declaring them here
# would export them to cimporting modules):
#   _events(lines), _spans_of(lines) inline: lines stored; their int64 spans
#   _seal_block(sealed, was, block) a SealedBatch GrowBuf from buf_detach(was), shrunk
#   _shrunk(block, allocated, used) realloc a sealed block down when much is unused
#   _is_blank(p, n)                 inline: only spaces, tabs and CRs?
#   split_json_array(body, out)     def: top-level elements of a JSON array as lines
#   _is_ws, _skip_ws                inline: JSON whitespace
#   _string_end(p, pos, end)        the quote closing the string opened at pos
#   _describe(c), _array_error(msg) (with Python objects) error messages
#   _split_json_array(p, end, out)  the bracket-depth loop of split_json_array
