# Declared columns: check, convert, and fill lists and structs.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


cdef inline int field_kind(const Field *f) noexcept nogil:
    if f.type == FT_BOOL:
        return K_BOOL
    if f.type == FT_INT64:
        return K_INTEGER
    if f.type == FT_FLOAT64:
        return K_INTEGER if f.big else K_NUMBER
    if f.type == FT_STRING or f.type == FT_TIMESTAMP:
        return K_STRING
    if f.type == FT_JSON:
        return K_OBJECT if f.text[0] == 123 else K_ARRAY
    return K_NULL


cdef inline int declared_error(LineError *err, int code, int expected, int got) noexcept nogil:
    memset(err, 0, sizeof(LineError))
    err.code = code
    err.expected = expected
    err.got = got
    return -1


cdef int timestamp_error(const Field *f, LineError *err) noexcept nogil:
    """A string for a timestamp column that parse_timestamp refused: out of
    range, or not ISO-8601 (its text is kept for the reason). Returns -1."""
    cdef int64_t micros
    if timestamp_syntax(<const unsigned char *>f.text, f.text_len, &micros):
        return declared_error(err, E_TIMESTAMP_RANGE, FT_TIMESTAMP, K_STRING)
    declared_error(err, E_NOT_TIMESTAMP, FT_TIMESTAMP, K_STRING)
    err.value = f.text
    err.value_len = f.text_len
    return -1


cdef int declared_convert(const Column *c, Field *f, LineError *err) noexcept nogil:
    """Whether a non-null scalar value fits the declared (non-list, non-struct)
    column c; puts it in the form column_append takes (a float for float64,
    the stored unit for timestamps, days for dates, the raw text for json).
    -1 with err filled if it does not fit."""
    cdef int want = c.type
    cdef int got = f.type
    if want == FT_JSON:
        f.text = f.raw
        f.text_len = f.raw_len
        return 0
    if want == FT_STRING:
        if got == FT_STRING or got == FT_TIMESTAMP:
            return 0
    elif want == FT_INT64:
        if got == FT_INT64:
            return 0
        if got == FT_FLOAT64 and f.big:
            return declared_error(err, E_INT_RANGE, want, K_INTEGER)
    elif want == FT_FLOAT64:
        if got == FT_INT64:
            f.float_value = <double>f.int_value
            f.type = FT_FLOAT64
            return 0
        if got == FT_FLOAT64:
            if isinf(f.float_value):
                return declared_error(err, E_NUMBER_RANGE, want, K_NUMBER)
            return 0
    elif want == FT_BOOL:
        if got == FT_BOOL:
            return 0
    elif want == FT_TIMESTAMP:
        if got == FT_TIMESTAMP:  # µs from ISO-8601: truncated to the unit (floor)
            if c.divisor != 1:
                f.int_value = (f.int_value // c.divisor
                               - (1 if f.int_value % c.divisor < 0 else 0))
            return 0
        if got == FT_INT64:  # epoch in the declared unit
            if not MIN_MICROS // c.divisor <= f.int_value <= MAX_MICROS // c.divisor:
                return declared_error(err, E_TIMESTAMP_RANGE, want, K_INTEGER)
            return 0
        if got == FT_FLOAT64 and f.big:
            return declared_error(err, E_TIMESTAMP_RANGE, want, K_INTEGER)
        if got == FT_STRING:
            return timestamp_error(f, err)
    elif want == FT_DATE:
        if got == FT_STRING or got == FT_TIMESTAMP:
            if parse_date(f.text, f.text_len, &f.int_value):
                return 0
            return declared_error(err, E_NOT_DATE, want, K_STRING)
    return declared_error(err, E_DECLARED_TYPE, want, field_kind(f))


cdef int declared_field(Table *t, Parser *ps, Column *c, Field *f, LineError *err) noexcept nogil:
    """One non-null top-level value of a declared column: checked (scalars)
    or converted into the column and its nodes (lists, structs)."""
    t.nframes = 0
    if c.type == FT_LIST or c.type == FT_STRUCT:
        if f.type != FT_JSON:
            return declared_error(err, E_DECLARED_TYPE, c.type, field_kind(f))
        if column_pad(c, t.rows) < 0:
            return declared_error(err, E_NO_MEMORY, 0, 0)
        ps.pos = <const unsigned char *>f.raw - ps.line
        if convert_value(ps, t, c, 1, err) < 0:
            return -1
        f.type = FT_NONE  # its row is in: nothing to commit
        return 0
    if declared_convert(c, f, err) < 0:
        return -1
    if (c.type == FT_STRING or c.type == FT_JSON) and c.text.len + f.text_len > MAX_TEXT_BYTES:
        return declared_error(err, E_TEXT_TOO_LARGE, c.type, 0)
    return 0


cdef int convert_value(Parser *ps, Table *t, Column *node, int depth, LineError *err) noexcept nogil:
    """Converts the value at ps.pos, whose syntax is already checked, into
    `node` (appending a row) and its children; `depth` containers are open
    around it. -1 with err filled (E_NO_MEMORY when out of memory), the path
    of the failing value in t.frames[:t.nframes]. Recursion is bounded by the
    declared type's nesting (ingest.schema.MAX_NESTING)."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t start
    cdef unsigned char c
    cdef Field f
    skip_ws(ps)
    start = ps.pos
    c = s[start]
    if c == 110:  # null
        ps.pos += 4
        if column_pad(node, node.length + 1) < 0:
            return declared_error(err, E_NO_MEMORY, 0, 0)
        return 0
    if node.type == FT_LIST:
        if c != 91:
            return convert_mismatch(ps, node.type, err)
        return convert_list(ps, t, node, depth, err)
    if node.type == FT_STRUCT:
        if c != 123:
            return convert_mismatch(ps, node.type, err)
        return convert_struct(ps, t, node, depth, err)
    if node.type == FT_JSON:
        skip_value(ps, depth)  # cannot fail: checked before
        f.text = <const char *>(s + start)
        f.text_len = ps.pos - start
    else:
        if c == 123 or c == 91:
            return convert_mismatch(ps, node.type, err)
        # (through parse_field, so that parse_timestamp keeps one caller and stays inlined)
        if parse_field(ps, &f, True) < 0:
            return declared_error(err, E_NO_MEMORY, 0, 0)  # the syntax is known good
        if declared_convert(node, &f, err) < 0:
            return -1
    if (node.type == FT_STRING or node.type == FT_JSON) and node.text.len + f.text_len > MAX_TEXT_BYTES:
        return declared_error(err, E_TEXT_TOO_LARGE, node.type, 0)
    if column_append(node, &f) < 0:
        return declared_error(err, E_NO_MEMORY, 0, 0)
    return 0


cdef int convert_mismatch(Parser *ps, int expected, LineError *err) noexcept nogil:
    """The value at ps.pos is not what a list/struct/scalar node takes."""
    cdef unsigned char c = ps.line[ps.pos]
    cdef Field f
    cdef int kind
    if c == 123:
        kind = K_OBJECT
    elif c == 91:
        kind = K_ARRAY
    elif c == 34:
        kind = K_STRING
    elif c == 116 or c == 102:
        kind = K_BOOL
    else:
        if scan_number(ps, &f) < 0:
            return declared_error(err, E_NO_MEMORY, 0, 0)
        kind = field_kind(&f)
    return declared_error(err, E_DECLARED_TYPE, expected, kind)


cdef int convert_list(Parser *ps, Table *t, Column *node, int depth, LineError *err) noexcept nogil:
    cdef const unsigned char *s = ps.line
    cdef Column *item = node.children
    cdef Frame *frame = &t.frames[t.nframes]
    t.nframes += 1
    frame.node = node
    frame.index = 0
    ps.pos += 1  # '['
    skip_ws(ps)
    if s[ps.pos] == 93:  # ']'
        ps.pos += 1
    else:
        while True:
            if item.length >= MAX_LIST_ELEMENTS:
                return declared_error(err, E_LIST_TOO_LONG, node.type, 0)
            if convert_value(ps, t, item, depth + 1, err) < 0:
                return -1
            skip_ws(ps)
            ps.pos += 1
            if s[ps.pos - 1] == 93:
                break
            frame.index += 1  # it was ','
    t.nframes -= 1
    if column_append_row(node) < 0:
        return declared_error(err, E_NO_MEMORY, 0, 0)
    return 0


cdef int convert_struct(Parser *ps, Table *t, Column *node, int depth, LineError *err) noexcept nogil:
    """Fields by name; a field missing from the object is null, a key the
    struct does not declare is skipped (rejected in a strict table), a repeated
    key must fit each time and the last one wins."""
    cdef const unsigned char *s = ps.line
    cdef Frame *frame = &t.frames[t.nframes]
    cdef Py_ssize_t row = node.length  # this object's row, in node and in each child
    cdef int64_t stamp
    cdef Column *child
    cdef Py_ssize_t guess = 0
    cdef Py_ssize_t i
    t.object_stamp += 1
    stamp = t.object_stamp
    t.nframes += 1
    frame.node = node
    frame.key = NULL
    frame.key_len = 0
    ps.pos += 1  # '{'
    skip_ws(ps)
    if s[ps.pos] == 125:  # '}'
        ps.pos += 1
    else:
        while True:
            skip_ws(ps)
            if scan_string(ps, True, &frame.key, &frame.key_len) < 0:
                return declared_error(err, E_NO_MEMORY, 0, 0)
            skip_ws(ps)
            ps.pos += 1  # ':'
            child = struct_child(node, frame.key, frame.key_len, guess)
            if child == NULL:
                if t.strict:
                    return declared_error(err, E_UNDECLARED, 0, 0)
                skip_value(ps, depth + 1)  # cannot fail: checked before
            else:
                guess = child - node.children + 1  # keys usually come in declared order
                if child.seen_object == stamp:
                    column_truncate(child, row)  # a repeated key: drop the earlier value
                child.seen_object = stamp
                if convert_value(ps, t, child, depth + 1, err) < 0:
                    return -1
            skip_ws(ps)
            ps.pos += 1
            if s[ps.pos - 1] == 125:
                break
    for i in range(node.nchildren):
        child = &node.children[i]
        if child.seen_object != stamp and column_pad(child, row + 1) < 0:
            return declared_error(err, E_NO_MEMORY, 0, 0)
    t.nframes -= 1
    if column_append_row(node) < 0:
        return declared_error(err, E_NO_MEMORY, 0, 0)
    return 0


cdef Column *struct_child(Column *node, const char *key, Py_ssize_t n, Py_ssize_t guess) noexcept nogil:
    """The field node of a struct named `key`, trying index `guess` first; or NULL."""
    cdef Column *c
    cdef Py_ssize_t i
    if guess < node.nchildren:
        c = &node.children[guess]
        if c.name_len == n and memcmp(c.name, key, n) == 0:
            return c
    for i in range(node.nchildren):
        c = &node.children[i]
        if c.name_len == n and memcmp(c.name, key, n) == 0:
            return c
    return NULL


cdef int render_path(GrowBuf *out, const Column *root, const Frame *frames, Py_ssize_t n) noexcept nogil:
    """The path of a value in a declared column, as in its reasons:
    root, then ".key" for a struct field and "[i]" for a list element."""
    cdef char digits[24]
    cdef Py_ssize_t k, d
    cdef uint64_t index
    if buf_append(out, root.name, root.name_len) < 0:
        return -1
    for k in range(n):
        if frames[k].node.type == FT_LIST:
            index = <uint64_t>frames[k].index
            d = 24
            d -= 1
            digits[d] = 93  # ']'
            while True:
                d -= 1
                digits[d] = <char>(48 + index % 10)
                index //= 10
                if index == 0:
                    break
            d -= 1
            digits[d] = 91  # '['
            if buf_append(out, digits + d, 24 - d) < 0:
                return -1
        else:
            if buf_append(out, ".", 1) < 0 or buf_append(out, frames[k].key, frames[k].key_len) < 0:
                return -1
    return 0
