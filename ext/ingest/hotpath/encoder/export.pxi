# Finished column buffers handed to pyarrow without a copy.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


@cython.final
cdef class ArrowBuffer:
    """A finished column buffer, read-only, handed to pyarrow without a copy."""

    @staticmethod
    cdef ArrowBuffer adopt(GrowBuf *buf):
        """Takes buf's memory, leaving buf empty (its capacity stays as the
        size to allocate first next time)."""
        cdef ArrowBuffer self = ArrowBuffer.__new__(ArrowBuffer)
        self._length = buf.len
        self._data = buf_detach(buf)
        if self._data == NULL:
            raise MemoryError()
        return self

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("Arrow column buffers are read-only")
        PyBuffer_FillInfo(view, self, self._data, self._length, 1, flags)
        self._view_count += 1

    def __releasebuffer__(self, Py_buffer *view):
        self._view_count -= 1

    def __len__(self):
        return self._length

    @property
    def view_count(self):
        return self._view_count

    def __dealloc__(self):
        free(self._data)
        self._data = NULL
