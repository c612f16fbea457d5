# Columns: Arrow buffers (validity and bool bitmaps, values, offsets, text) row by row.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


cdef int bitmap_extend(GrowBuf *bits, Py_ssize_t nbits) noexcept nogil:
    """Makes the bitmap cover `nbits` bits; the new bits are 0."""
    cdef Py_ssize_t nbytes = (nbits + 7) >> 3
    if nbytes <= bits.len:
        return 0
    if buf_reserve(bits, nbytes - bits.len) < 0:
        return -1
    memset(bits.data + bits.len, 0, nbytes - bits.len)
    bits.len = nbytes
    return 0


cdef inline void bitmap_set(GrowBuf *bits, Py_ssize_t i) noexcept nogil:
    bits.data[i >> 3] = <char>(<uint8_t>bits.data[i >> 3] | (1 << (i & 7)))


cdef int column_pad(Column *c, Py_ssize_t rows) noexcept nogil:
    """Appends nulls until the column has `rows` rows (a struct's children get
    a null row each too: they always have as many rows as the struct)."""
    cdef Py_ssize_t k = rows - c.length
    cdef Py_ssize_t i
    cdef int32_t offset
    if k <= 0:
        return 0
    if not c.has_validity:
        # The first null: every earlier row of the batch was valid.
        if bitmap_extend(&c.validity, c.length) < 0:
            return -1
        memset(c.validity.data, 0xFF, c.length >> 3)
        if c.length & 7:
            c.validity.data[c.length >> 3] = <char>((1 << (c.length & 7)) - 1)
        c.has_validity = True
    if bitmap_extend(&c.validity, rows) < 0:
        return -1
    if c.type == FT_BOOL:
        if bitmap_extend(&c.values, rows) < 0:
            return -1
    elif c.type == FT_STRING or c.type == FT_JSON or c.type == FT_LIST:
        if buf_reserve(&c.values, (k + 1) * sizeof(int32_t)) < 0:
            return -1
        offset = <int32_t>(c.children.length if c.type == FT_LIST else c.text.len)
        if c.values.len == 0:
            memcpy(c.values.data, &offset, sizeof(int32_t))
            c.values.len = sizeof(int32_t)
        for i in range(k):
            memcpy(c.values.data + c.values.len, &offset, sizeof(int32_t))
            c.values.len += sizeof(int32_t)
    elif c.type == FT_STRUCT:
        for i in range(c.nchildren):
            if column_pad(&c.children[i], rows) < 0:
                return -1
    else:
        i = 4 if c.type == FT_DATE else 8  # bytes per value
        if buf_reserve(&c.values, k * i) < 0:
            return -1
        memset(c.values.data + c.values.len, 0, k * i)
        c.values.len += k * i
    c.null_count += k
    c.length = rows
    return 0


cdef inline int column_append(Column *c, const Field *field) noexcept nogil:
    """Appends one checked, non-null value."""
    cdef Py_ssize_t i = c.length
    cdef double d
    cdef int32_t offset
    if c.has_validity:
        if bitmap_extend(&c.validity, i + 1) < 0:
            return -1
        bitmap_set(&c.validity, i)
    if c.type == FT_INT64 or c.type == FT_TIMESTAMP:
        if buf_append(&c.values, &field.int_value, 8) < 0:
            return -1
    elif c.type == FT_FLOAT64:
        d = field.float_value if field.type == FT_FLOAT64 else <double>field.int_value
        if buf_append(&c.values, &d, 8) < 0:
            return -1
    elif c.type == FT_BOOL:
        if bitmap_extend(&c.values, i + 1) < 0:
            return -1
        if field.int_value:
            bitmap_set(&c.values, i)
    elif c.type == FT_DATE:
        offset = <int32_t>field.int_value
        if buf_append(&c.values, &offset, 4) < 0:
            return -1
    else:  # string / json: text, then the end offset
        if buf_reserve(&c.values, 2 * sizeof(int32_t)) < 0:
            return -1
        if c.values.len == 0:
            offset = 0
            memcpy(c.values.data, &offset, sizeof(int32_t))
            c.values.len = sizeof(int32_t)
        if buf_append(&c.text, field.text, field.text_len) < 0:
            return -1
        offset = <int32_t>c.text.len
        memcpy(c.values.data + c.values.len, &offset, sizeof(int32_t))
        c.values.len += sizeof(int32_t)
    c.length = i + 1
    return 0


cdef int column_append_row(Column *c) noexcept nogil:
    """Appends one non-null list or struct row whose children are already in."""
    cdef Py_ssize_t i = c.length
    cdef int32_t offset = 0
    if c.has_validity:
        if bitmap_extend(&c.validity, i + 1) < 0:
            return -1
        bitmap_set(&c.validity, i)
    if c.type == FT_LIST:
        if c.values.len == 0 and buf_append(&c.values, &offset, sizeof(int32_t)) < 0:
            return -1
        offset = <int32_t>c.children.length
        if buf_append(&c.values, &offset, sizeof(int32_t)) < 0:
            return -1
    c.length = i + 1
    return 0


cdef inline void bitmap_truncate(GrowBuf *bits, Py_ssize_t nbits) noexcept nogil:
    """Keeps `nbits` bits, clearing the rest of the last byte (bitmap_set only ORs)."""
    bits.len = (nbits + 7) >> 3
    if nbits & 7:
        bits.data[nbits >> 3] = <char>(<uint8_t>bits.data[nbits >> 3] & ((1 << (nbits & 7)) - 1))


cdef void column_truncate(Column *c, Py_ssize_t rows) noexcept nogil:
    """Drops the rows past `rows` and what their children hold. Also cleans a
    list/struct whose current row was left half-converted: its children are
    cut back to the rows it has (a struct's children to its own row count, a
    list's element node to its last offset)."""
    cdef Py_ssize_t i, child_rows
    cdef int32_t offset
    if rows > c.length:
        rows = c.length
    if c.type == FT_LIST:
        child_rows = 0
        if c.values.len:
            memcpy(&offset, c.values.data + rows * sizeof(int32_t), sizeof(int32_t))
            child_rows = offset
        column_truncate(c.children, child_rows)
    elif c.type == FT_STRUCT:
        for i in range(c.nchildren):
            column_truncate(&c.children[i], rows)
    if c.length == rows:
        return
    if c.has_validity:
        for i in range(rows, c.length):
            if not (<uint8_t>c.validity.data[i >> 3] >> (i & 7)) & 1:
                c.null_count -= 1
        bitmap_truncate(&c.validity, rows)
    if c.type == FT_BOOL:
        bitmap_truncate(&c.values, rows)
    elif c.type == FT_STRING or c.type == FT_JSON:
        memcpy(&offset, c.values.data + rows * sizeof(int32_t), sizeof(int32_t))
        c.text.len = offset
        c.values.len = (rows + 1) * sizeof(int32_t)
    elif c.type == FT_LIST:
        c.values.len = (rows + 1) * sizeof(int32_t)
    elif c.type == FT_DATE:
        c.values.len = rows * 4
    elif c.type != FT_STRUCT:
        c.values.len = rows * 8
    c.length = rows


cdef int column_finish(Column *c) noexcept nogil:
    """Gives every text or list node below c (and c) its first offset, which
    an Arrow array needs even with no rows."""
    cdef int32_t zero = 0
    cdef Py_ssize_t i
    if (c.type == FT_STRING or c.type == FT_JSON or c.type == FT_LIST) and c.values.len == 0:
        if buf_append(&c.values, &zero, sizeof(int32_t)) < 0:
            return -1
    for i in range(c.nchildren):
        if column_finish(&c.children[i]) < 0:
            return -1
    return 0


cdef void column_reset(Column *c) noexcept nogil:
    c.length = 0
    c.null_count = 0
    c.has_validity = False
    c.validity.len = 0
    c.values.len = 0
    c.text.len = 0


cdef void column_widen(Column *c) noexcept nogil:
    """int64 -> float64, converting this batch's values in place."""
    cdef Py_ssize_t i
    cdef int64_t v
    cdef double d
    for i in range(c.length):
        memcpy(&v, c.values.data + 8 * i, 8)
        d = <double>v
        memcpy(c.values.data + 8 * i, &d, 8)
    c.type = FT_FLOAT64
