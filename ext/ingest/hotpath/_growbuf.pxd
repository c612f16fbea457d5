# One growable byte buffer for the whole hot path: the framer's payload,
# spans, partial lines and bracket stack (_buffer) and the encoder's column
# buffers, bitmaps and error records (_encoder) all grow the same way.
#
# Header-only: every function is `cdef inline` here and there is no
# _growbuf.pyx, so cimporting modules compile it into themselves (no
# __pyx_capi__ indirection, and gcc can inline the fast path of
# buf_reserve). Memory is libc malloc/realloc/free, usable without the GIL,
# so a finished buffer can be handed to pyarrow (ArrowBuffer frees it with
# free()) or to a SealedBatch read from a worker thread.
#
# A GrowBuf may start in `small` storage of its owner's (inside a cdef class
# object, or on the C stack) and mallocs only once it outgrows it; with
# small = NULL it starts empty (data = NULL) and mallocs on the first write.
# A zero-filled GrowBuf (calloc, memset) is a valid empty one without
# small storage.

from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy


cdef enum:
    # first malloc of a GrowBuf without small storage, bytes
    GROWBUF_MIN_BYTES = 64


cdef struct GrowBuf:
    char *data              # the bytes: `small` until they outgrow it, then malloc'd; NULL until the first write
    Py_ssize_t len          # bytes in use
    Py_ssize_t cap          # bytes available at data; while data is NULL, the size to allocate first
    char *small             # the owner's storage used first (never freed here), or NULL
    Py_ssize_t small_cap    # bytes at small


cdef inline void buf_init(GrowBuf *buf, void *small, Py_ssize_t small_cap) noexcept nogil:
    # empty, writing into `small` (may be NULL) until more is needed
    buf.data = <char *>small
    buf.len = 0
    buf.cap = small_cap
    buf.small = <char *>small
    buf.small_cap = small_cap


cdef inline int buf_grow(GrowBuf *buf, Py_ssize_t need) noexcept nogil:
    # the one reallocation path: double (from at least GROWBUF_MIN_BYTES, or
    # the size to allocate first) until `need` bytes fit; -1 when out of memory
    cdef Py_ssize_t cap = buf.cap if buf.data == NULL else 2 * buf.cap
    cdef char *grown
    if cap < GROWBUF_MIN_BYTES:
        cap = GROWBUF_MIN_BYTES
    while cap < need:
        cap *= 2
    if buf.small != NULL and buf.data == buf.small:
        grown = <char *>malloc(<size_t>cap)
        if grown != NULL:
            memcpy(grown, buf.data, <size_t>buf.len)
    else:
        grown = <char *>realloc(buf.data, <size_t>cap)
    if grown == NULL:
        return -1
    buf.data = grown
    buf.cap = cap
    return 0


cdef inline int buf_reserve(GrowBuf *buf, Py_ssize_t extra) noexcept nogil:
    # room for `extra` more bytes at data + len; -1 when out of memory
    if buf.data != NULL and buf.len + extra <= buf.cap:
        return 0
    return buf_grow(buf, buf.len + extra)


cdef inline int buf_append(GrowBuf *buf, const void *src, Py_ssize_t n) noexcept nogil:
    # n bytes at the end; -1 when out of memory
    if buf_reserve(buf, n) < 0:
        return -1
    memcpy(buf.data + buf.len, src, <size_t>n)
    buf.len += n
    return 0


cdef inline void buf_free(GrowBuf *buf) noexcept nogil:
    # empty again, back in its small storage (or with none)
    if buf.data != buf.small:
        free(buf.data)
    buf_init(buf, buf.small, buf.small_cap)


cdef inline char *buf_detach(GrowBuf *buf) noexcept nogil:
    # the bytes as a malloc'd block of at least len bytes (never NULL unless
    # out of memory) that the caller frees; leaves buf empty: in its small
    # storage, or with len as the size to allocate first
    cdef char *block = buf.data
    cdef Py_ssize_t used = buf.len
    if block == NULL:
        block = <char *>calloc(1, GROWBUF_MIN_BYTES)  # pyarrow wants an address even for no bytes
    elif block == buf.small:
        block = <char *>malloc(<size_t>used or 1)
        if block != NULL:
            memcpy(block, buf.data, <size_t>used)
    if block == NULL:
        return NULL
    buf_init(buf, buf.small, buf.small_cap)
    if buf.small == NULL:
        buf.cap = used
    return block
