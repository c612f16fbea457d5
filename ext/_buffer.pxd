# Raw-byte buffering and NDJSON framing: where a record ends. The hot path of
# `ingest.buffer`.
#
# Table of contents and data layout of _buffer.pyx. Lines are stored back to
# back, without their newline, in one contiguous byte buffer plus an int64
# spans array [start0, end0, start1, end1, ...]. Appends grow both by
# doubling; seal() moves the two allocations into a SealedBatch, which the
# encoder reads from a worker thread while the BatchBuffer keeps receiving.
#
# _buffer.pyx includes this file: setup.py builds the module as
# `ingest._buffer` from ext/, where Cython would look for
# ext/ingest._buffer.pxd, so it never pairs this file with the .pyx by
# itself (the same as _encoder.pxd). Cython 3 allows no forward declarations
# in a .pyx, so the classes and their C methods are listed here as comments;
# their fields are declared in the .pyx with the same one-line comments.

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


# Classes of _buffer.pyx, in file order. Hot classes are @cython.final.
#
# _Lines                          what BatchBuffer and SealedBatch share
#   char *_data                     payload bytes of all lines, back to back
#   int64_t *_spans                 [start, end) offsets into _data, two per line
#   Py_ssize_t _nbytes              bytes used in _data
#   Py_ssize_t _events              lines stored; _spans holds 2 * _events values
#   Py_ssize_t _view_count          memoryviews from data()/spans() still alive
#   events, nbytes, data(), spans(), line(i)
#
# _Export (final)                 read-only buffer-protocol export of a _Lines'
#                                 payload ('B') or spans ('q'), behind the
#                                 memoryviews of data() and spans(); counts
#                                 itself in owner._view_count while exported
#   _Lines owner, bint is_spans, Py_ssize_t shape, stride
#   of(owner, is_spans)             (static) the exporter for one view
#
# BatchBuffer(_Lines) (final)     lines of one table waiting to be sealed
#   public Py_ssize_t event_limit   seal at this many lines (0 = no limit)
#   public Py_ssize_t byte_limit    seal at this many payload bytes (0 = no limit)
#   Py_ssize_t _data_cap            bytes allocated at _data
#   Py_ssize_t _spans_cap           lines that fit in the allocation at _spans
#   char _inline_data[BATCH_INLINE_BYTES]          _data while the payload is small
#   int64_t _inline_spans[2 * BATCH_INLINE_LINES]  _spans while there are few lines
#   is_full, append_line(), extend(), clear(), seal()
#   _is_full()                      inline: a limit reached?
#   _append(line, n)                one line (BufferError while views are alive)
#   _append2(a, na, b, nb)          one line in two pieces: framer tail + chunk head
#   _make_room(nbytes, nlines)      grow by doubling; refuses while views are alive
#   _truncate(events)               drop lines from `events` on (failed split)
#   _reset_storage()                back to the inline storage, freeing the rest
#
# SealedBatch(_Lines) (final)     immutable lines taken by seal(); owns _data
#                                 and _spans (always malloc'd) and frees them
#
# LineFramer (final)              splits one connection's byte stream into lines
#   readonly Py_ssize_t max_line_bytes  longer lines (without "\n", "\r") dropped
#   char *_tail                     the unterminated line carried to the next chunk
#   Py_ssize_t _tail_len            bytes in _tail
#   Py_ssize_t _tail_cap            bytes allocated at _tail
#   bint _discarding                inside an over-long line: drop up to the newline
#   Py_ssize_t _too_long            over-long lines dropped so far
#   Py_ssize_t _lines_seen          non-empty lines seen, over-long ones included
#   char _inline_tail[FRAMER_INLINE_TAIL]  _tail while the partial line is small
#   too_long, lines_seen, pending_bytes, feed(), finish()
#   _feed(p, pos, end, out)         the memchr loop over one chunk
#   _emit(seg, nseg, out)           judge tail + segment as one line; append it
#   _keep_tail(piece, n)            carry an unterminated piece (or discard it)
#   _reset_tail()                   forget the tail, freeing a large one
#
# Functions of _buffer.pyx
#   _shrunk(block, allocated, used) realloc a sealed block down when much is unused
#   _is_blank(p, n)                 inline: only spaces, tabs and CRs?
#   split_json_array(body, out)     def: top-level elements of a JSON array as lines
#   _is_ws, _skip_ws                inline: JSON whitespace
#   _string_end(p, pos, end)        the quote closing the string opened at pos
#   _describe(c), _array_error(msg) (with Python objects) error messages
#   _split_json_array(p, end, out)  the bracket-depth loop of split_json_array
