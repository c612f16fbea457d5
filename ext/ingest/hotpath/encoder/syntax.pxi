# Syntax: one line, byte by byte, no Python objects; validate_lines()'s loop.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


cdef inline int fail(Parser *ps, int code, Py_ssize_t at) noexcept nogil:
    ps.error = code
    ps.error_at = at
    return -1


cdef inline void skip_ws(Parser *ps) noexcept nogil:
    cdef Py_ssize_t pos = ps.pos
    cdef unsigned char c
    while pos < ps.end:
        c = ps.line[pos]
        if c != 32 and c != 9 and c != 10 and c != 13:
            break
        pos += 1
    ps.pos = pos


cdef inline bint is_digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57


cdef inline int32_t hex4(const unsigned char *s, Py_ssize_t at, Py_ssize_t n) noexcept nogil:
    """The value of 4 hex digits at `at`, or -1."""
    cdef int32_t value = 0
    cdef unsigned char c
    cdef Py_ssize_t k
    if at + 4 > n:
        return -1
    for k in range(at, at + 4):
        c = s[k]
        if 48 <= c <= 57:
            value = value * 16 + (c - 48)
        elif 97 <= c <= 102:
            value = value * 16 + (c - 87)
        elif 65 <= c <= 70:
            value = value * 16 + (c - 55)
        else:
            return -1
    return value


cdef inline Py_ssize_t put_utf8(int32_t cp, char *out) noexcept nogil:
    if cp < 0x80:
        out[0] = <char>cp
        return 1
    if cp < 0x800:
        out[0] = <char>(0xC0 | (cp >> 6))
        out[1] = <char>(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        out[0] = <char>(0xE0 | (cp >> 12))
        out[1] = <char>(0x80 | ((cp >> 6) & 0x3F))
        out[2] = <char>(0x80 | (cp & 0x3F))
        return 3
    out[0] = <char>(0xF0 | (cp >> 18))
    out[1] = <char>(0x80 | ((cp >> 12) & 0x3F))
    out[2] = <char>(0x80 | ((cp >> 6) & 0x3F))
    out[3] = <char>(0x80 | (cp & 0x3F))
    return 4


cdef Py_ssize_t utf8_invalid_at(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """Offset of the first byte of the first invalid UTF-8 sequence, or -1."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef unsigned char c, lo, hi
    while i + 8 <= n:  # ASCII fast path
        memcpy(&word, s + i, 8)
        if word & INGEST_HIGH_BITS:
            break
        i += 8
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return i
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return i
            i += 2
            continue
        lo = 0x80
        hi = 0xBF
        if c == 0xE0:
            lo = 0xA0  # overlong
        elif c == 0xED:
            hi = 0x9F  # surrogates
        elif c == 0xF0:
            lo = 0x90  # overlong
        elif c == 0xF4:
            hi = 0x8F  # above U+10FFFF
        if i + 1 >= n or s[i + 1] < lo or s[i + 1] > hi:
            return i
        if i + 2 >= n or (s[i + 2] & 0xC0) != 0x80:
            return i
        if c < 0xF0:
            i += 3
            continue
        if i + 3 >= n or (s[i + 3] & 0xC0) != 0x80:
            return i
        i += 4
    return -1


cdef inline Py_ssize_t plain_run(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """How many bytes before the first '"', '\\' or control character."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word, quote, backslash, hit
    cdef unsigned char c
    if INGEST_SWAR:
        while i + 8 <= n:
            memcpy(&word, s + i, 8)
            quote = word ^ INGEST_QUOTES
            backslash = word ^ INGEST_BACKSLASHES
            # A byte is flagged when zero after the xor, or below 0x20; the
            # lowest flag is always exact (borrows only run upwards).
            hit = (((quote - INGEST_ONES) & ~quote)
                   | ((backslash - INGEST_ONES) & ~backslash)
                   | ((word - INGEST_SPACES) & ~word)) & INGEST_HIGH_BITS
            if hit:
                return i + (ingest_ctz64(hit) >> 3)
            i += 8
    while i < n:
        c = s[i]
        if c < 0x20 or c == 34 or c == 92:
            return i
        i += 1
    return i


cdef int parser_init(Parser *ps, int max_depth) noexcept nogil:
    memset(ps, 0, sizeof(Parser))
    ps.max_depth = max_depth
    ps.stack = <uint8_t *>malloc(max_depth + 1)
    return -1 if ps.stack == NULL else 0


cdef void parser_free(Parser *ps) noexcept nogil:
    free(ps.stack)
    ps.stack = NULL
    buf_free(&ps.unescaped)


cdef int parse_line(Parser *ps, Table *table) noexcept nogil:
    """Checks one line; with a table, also collects its top-level fields into
    table.fields. Returns -1 with ps.error set on the first problem (invalid
    UTF-8 anywhere wins; otherwise the first problem in byte order)."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t n = ps.end
    cdef Py_ssize_t bad = utf8_invalid_at(s, n)
    cdef Py_ssize_t key_at
    cdef int32_t prev = -1
    cdef int32_t guess = -1
    cdef const char *key = NULL
    cdef Py_ssize_t key_len = 0
    cdef bint build = table != NULL
    cdef int32_t column = -1
    cdef Field scratch  # the value when only checking syntax (or of an undeclared key)
    cdef Field *field = &scratch
    cdef Py_ssize_t value_at
    cdef Py_ssize_t nkeys = 0
    cdef unsigned char c
    if bad >= 0:
        return fail(ps, E_UTF8, bad)
    ps.pos = 3 if n >= 3 and s[0] == 0xEF and s[1] == 0xBB and s[2] == 0xBF else 0
    ps.unescaped.len = 0
    skip_ws(ps)
    if ps.pos >= n:
        return fail(ps, E_EMPTY_LINE, ps.pos)
    if s[ps.pos] != 123:  # '{'
        if skip_value(ps, 0) < 0:
            return -1
        return fail(ps, E_NOT_OBJECT, 0)
    ps.pos += 1
    skip_ws(ps)
    if ps.pos < n and s[ps.pos] == 125:  # '}'
        ps.pos += 1
    else:
        if build:
            guess = table.first_guess
        while True:
            skip_ws(ps)
            if ps.pos >= n:
                return fail(ps, E_END_OF_LINE, n)
            if s[ps.pos] != 34:
                return fail(ps, E_EXPECTED_KEY, ps.pos)
            nkeys += 1
            if nkeys > MAX_EVENT_KEYS:
                return fail(ps, E_TOO_MANY_KEYS, ps.pos)
            key_at = ps.pos
            if scan_string(ps, build, &key, &key_len) < 0:
                return -1
            if key_len == 0:
                return fail(ps, E_EMPTY_KEY, key_at)
            if build:
                # Keys usually come in the same order as in the last line.
                column = table_find(table, key, key_len, guess)
                if column == -1:
                    return fail(ps, E_NO_MEMORY, key_at)
                if column >= 0:
                    if prev < 0:
                        table.first_guess = column
                    else:
                        table.columns[prev].next_guess = column
                    prev = column
                    guess = table.columns[column].next_guess
                elif table.undeclared_field < 0:  # strict, and not declared: judged in order
                    table.undeclared_field = table.nfields
                    table.undeclared_name.len = 0
                    if buf_append(&table.undeclared_name, key, key_len) < 0:
                        return fail(ps, E_NO_MEMORY, key_at)
            skip_ws(ps)
            if ps.pos >= n:
                return fail(ps, E_END_OF_LINE, n)
            if s[ps.pos] != 58:  # ':'
                return fail(ps, E_EXPECTED_COLON, ps.pos)
            ps.pos += 1
            skip_ws(ps)
            if build:
                # parsed straight into its slot: no copy of the Field
                field = table_field_slot(table, column) if column >= 0 else &scratch
                if field == NULL:
                    return fail(ps, E_NO_MEMORY, key_at)
            value_at = ps.pos
            if parse_field(ps, field, build) < 0:
                return -1
            field.raw = <const char *>(s + value_at)
            field.raw_len = ps.pos - value_at
            skip_ws(ps)
            if ps.pos >= n:
                return fail(ps, E_END_OF_LINE, n)
            c = s[ps.pos]
            ps.pos += 1
            if c == 44:  # ','
                continue
            if c == 125:  # '}'
                break
            return fail(ps, E_EXPECTED_COMMA_BRACE, ps.pos - 1)
    skip_ws(ps)
    if ps.pos < n:
        return fail(ps, E_EXPECTED_END, ps.pos)
    return 0


cdef int parse_field(Parser *ps, Field *field, bint build) noexcept nogil:
    """One top-level value at ps.pos; with build, fills field's type and value."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t start = ps.pos
    cdef unsigned char c
    if start >= ps.end:
        return fail(ps, E_END_OF_LINE, ps.end)
    c = s[start]
    if c == 34:  # '"'
        if scan_string(ps, build, &field.text, &field.text_len) < 0:
            return -1
        if build:
            if parse_timestamp(<const unsigned char *>field.text, field.text_len,
                               &field.int_value):
                field.type = FT_TIMESTAMP
            else:
                field.type = FT_STRING
    elif c == 123 or c == 91:  # '{' '['
        if skip_value(ps, 1) < 0:
            return -1
        field.type = FT_JSON
        field.text = <const char *>(s + start)
        field.text_len = ps.pos - start
    elif c == 116:
        if scan_literal(ps, "true", 4) < 0:
            return -1
        field.type = FT_BOOL
        field.int_value = 1
    elif c == 102:
        if scan_literal(ps, "false", 5) < 0:
            return -1
        field.type = FT_BOOL
        field.int_value = 0
    elif c == 110:
        if scan_literal(ps, "null", 4) < 0:
            return -1
        field.type = FT_NONE
    elif c == 45 or is_digit(c):
        if scan_number(ps, field if build else NULL) < 0:
            return -1
    else:
        return fail(ps, E_EXPECTED_VALUE, start)
    return 0


cdef int scan_string(Parser *ps, bint decode, const char **text,
                     Py_ssize_t *length) noexcept nogil:
    """Checks the string whose opening quote is at ps.pos and moves past it.
    With decode, *text / *length get its UTF-8 value (the raw bytes in the line
    when there are no escapes, else a copy in ps.unescaped); without, only
    *length is set, to the raw length."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t n = ps.end
    cdef Py_ssize_t start = ps.pos + 1
    cdef Py_ssize_t pos = start + plain_run(s + start, n - start)
    cdef Py_ssize_t step, run
    cdef Py_ssize_t out_len = 0
    cdef char *out = NULL
    cdef unsigned char c
    if pos < n and s[pos] == 34:  # no escapes: the common case
        text[0] = <const char *>(s + start)
        length[0] = pos - start
        ps.pos = pos + 1
        return 0
    if decode:
        # Decoded strings are never longer than their raw bytes, so once this
        # holds the whole line, earlier pointers into it stay valid.
        if buf_reserve(&ps.unescaped, n - ps.unescaped.len) < 0:
            return fail(ps, E_NO_MEMORY, start)
        out = ps.unescaped.data + ps.unescaped.len
        memcpy(out, s + start, pos - start)
        out_len = pos - start
    while True:
        if pos >= n:
            return fail(ps, E_END_OF_LINE, n)
        c = s[pos]
        if c == 34:
            break
        if c < 0x20:
            return fail(ps, E_CONTROL_CHAR, pos)
        step = scan_escape(ps, pos, out, &out_len)
        if step < 0:
            return -1
        pos += step
        run = plain_run(s + pos, n - pos)
        if decode:
            memcpy(out + out_len, s + pos, run)
            out_len += run
        pos += run
    if decode:
        text[0] = out
        length[0] = out_len
        ps.unescaped.len += out_len
    else:
        length[0] = pos - start
    ps.pos = pos + 1
    return 0


cdef Py_ssize_t scan_escape(Parser *ps, Py_ssize_t at, char *out,
                            Py_ssize_t *out_len) noexcept nogil:
    """The escape whose backslash is at `at`: returns how many bytes it spans
    (writing its UTF-8 at out + *out_len when out is not NULL), or -1."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t n = ps.end
    cdef Py_ssize_t used = 2
    cdef int32_t cp, low
    cdef unsigned char e
    if at + 1 >= n:
        return fail(ps, E_BAD_ESCAPE, at)
    e = s[at + 1]
    if e == 34 or e == 92 or e == 47:  # '"' '\\' '/'
        cp = e
    elif e == 98:
        cp = 8
    elif e == 102:
        cp = 12
    elif e == 110:
        cp = 10
    elif e == 114:
        cp = 13
    elif e == 116:
        cp = 9
    elif e == 117:  # 'u'
        cp = hex4(s, at + 2, n)
        if cp < 0:
            return fail(ps, E_BAD_ESCAPE, at)
        used = 6
        if 0xD800 <= cp <= 0xDBFF:
            low = -1
            if at + 7 < n and s[at + 6] == 92 and s[at + 7] == 117:
                low = hex4(s, at + 8, n)
            if low < 0xDC00 or low > 0xDFFF:
                return fail(ps, E_LONE_SURROGATE, at)
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            used = 12
        elif 0xDC00 <= cp <= 0xDFFF:
            return fail(ps, E_LONE_SURROGATE, at)
    else:
        return fail(ps, E_BAD_ESCAPE, at)
    if out != NULL:
        out_len[0] += put_utf8(cp, out + out_len[0])
    return used


cdef int scan_number(Parser *ps, Field *field) noexcept nogil:
    """Checks the number at ps.pos and moves past it; with a field, stores it
    as FT_INT64 (an integer literal that fits) or FT_FLOAT64."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t n = ps.end
    cdef Py_ssize_t start = ps.pos
    cdef Py_ssize_t pos = start
    cdef bint negative = False
    cdef bint is_float = False
    cdef bint exact = True      # every significant digit is in `mantissa`
    cdef bint exp_negative = False
    cdef uint64_t mantissa = 0
    cdef int digits = 0         # significant digits in `mantissa`
    cdef int64_t exp10 = 0
    cdef int64_t exponent = 0
    cdef double value
    if s[pos] == 45:
        negative = True
        pos += 1
    if pos >= n or not is_digit(s[pos]):
        return fail(ps, E_BAD_NUMBER, start)
    if s[pos] == 48:
        pos += 1
        if pos < n and is_digit(s[pos]):
            return fail(ps, E_BAD_NUMBER, start)  # leading zero
    else:
        while pos < n and is_digit(s[pos]):
            if digits < 19:
                mantissa = mantissa * 10 + (s[pos] - 48)
                digits += 1
            else:
                exact = False
            pos += 1
    if pos < n and s[pos] == 46:  # '.'
        is_float = True
        pos += 1
        if pos >= n or not is_digit(s[pos]):
            return fail(ps, E_BAD_NUMBER, start)
        while pos < n and is_digit(s[pos]):
            if digits < 19:
                if mantissa != 0 or s[pos] != 48:
                    mantissa = mantissa * 10 + (s[pos] - 48)
                    digits += 1
                exp10 -= 1
            else:
                exact = False
            pos += 1
    if pos < n and (s[pos] == 101 or s[pos] == 69):  # 'e' 'E'
        is_float = True
        pos += 1
        if pos < n and (s[pos] == 43 or s[pos] == 45):
            exp_negative = s[pos] == 45
            pos += 1
        if pos >= n or not is_digit(s[pos]):
            return fail(ps, E_BAD_NUMBER, start)
        while pos < n and is_digit(s[pos]):
            if exponent < 100000:
                exponent = exponent * 10 + (s[pos] - 48)
            pos += 1
        exp10 += -exponent if exp_negative else exponent
    ps.pos = pos
    if field == NULL:
        return 0
    if not is_float and exact:
        if not negative and mantissa <= <uint64_t>INT64_MAX:
            field.type = FT_INT64
            field.int_value = <int64_t>mantissa
            return 0
        if negative and mantissa <= (<uint64_t>1) << 63:
            field.type = FT_INT64
            field.int_value = -<int64_t>(mantissa - 1) - 1 if mantissa else 0
            return 0
    field.type = FT_FLOAT64
    field.big = not is_float
    if exact and mantissa <= (<uint64_t>1) << 53 and -22 <= exp10 <= 22:
        # Both operands are exact doubles: one IEEE operation rounds correctly.
        value = <double>mantissa
        if exp10 >= 0:
            value = value * POW10[exp10]
        else:
            value = value / POW10[-exp10]
        field.float_value = -value if negative else value
        return 0
    if slow_number(ps, start, &field.float_value) < 0:
        return -1
    return 0


cdef int slow_number(Parser *ps, Py_ssize_t start, double *value) noexcept nogil:
    """strtod of the number text from `start` to ps.pos (needs a NUL-terminated copy)."""
    cdef Py_ssize_t n = ps.pos - start
    cdef char small[64]
    cdef char *text = small
    if n >= 64:
        text = <char *>malloc(n + 1)
        if text == NULL:
            return fail(ps, E_NO_MEMORY, start)
    memcpy(text, ps.line + start, n)
    text[n] = 0
    value[0] = ingest_strtod(text)
    if text != small:
        free(text)
    return 0


cdef int scan_literal(Parser *ps, const char *word, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t start = ps.pos
    cdef Py_ssize_t k
    for k in range(n):
        if start + k >= ps.end:
            return fail(ps, E_END_OF_LINE, ps.end)
        if ps.line[start + k] != <unsigned char>word[k]:
            return fail(ps, E_BAD_LITERAL, start)
    ps.pos = start + n
    return 0


cdef int scan_key(Parser *ps) noexcept nogil:
    """A key and its ':' inside a nested object (whitespace before it skipped)."""
    cdef const char *text = NULL
    cdef Py_ssize_t length = 0
    if ps.pos >= ps.end:
        return fail(ps, E_END_OF_LINE, ps.end)
    if ps.line[ps.pos] != 34:
        return fail(ps, E_EXPECTED_KEY, ps.pos)
    if scan_string(ps, False, &text, &length) < 0:
        return -1
    skip_ws(ps)
    if ps.pos >= ps.end:
        return fail(ps, E_END_OF_LINE, ps.end)
    if ps.line[ps.pos] != 58:
        return fail(ps, E_EXPECTED_COLON, ps.pos)
    ps.pos += 1
    return 0


cdef int skip_value(Parser *ps, int depth) noexcept nogil:
    """Checks one JSON value at ps.pos and moves past it, without recursion;
    `depth` containers are already open around it."""
    cdef const unsigned char *s = ps.line
    cdef Py_ssize_t n = ps.end
    cdef int top = 0  # containers opened here, kinds in ps.stack
    cdef const char *text = NULL
    cdef Py_ssize_t length = 0
    cdef unsigned char c
    while True:
        # A value is expected.
        skip_ws(ps)
        if ps.pos >= n:
            return fail(ps, E_END_OF_LINE, n)
        c = s[ps.pos]
        if c == 123 or c == 91:  # '{' '['
            if depth + top + 1 > ps.max_depth:
                return fail(ps, E_TOO_DEEP, ps.pos)
            ps.stack[top] = c
            top += 1
            ps.pos += 1
            skip_ws(ps)
            if ps.pos < n and s[ps.pos] == c + 2:  # '}' / ']': empty
                ps.pos += 1
                top -= 1
            elif c == 123:
                if scan_key(ps) < 0:
                    return -1
                continue
            else:
                continue
        elif c == 34:
            if scan_string(ps, False, &text, &length) < 0:
                return -1
        elif c == 116:
            if scan_literal(ps, "true", 4) < 0:
                return -1
        elif c == 102:
            if scan_literal(ps, "false", 5) < 0:
                return -1
        elif c == 110:
            if scan_literal(ps, "null", 4) < 0:
                return -1
        elif c == 45 or is_digit(c):
            if scan_number(ps, NULL) < 0:
                return -1
        else:
            return fail(ps, E_EXPECTED_VALUE, ps.pos)
        # A value ended: close containers until one continues with ','.
        while True:
            if top == 0:
                return 0
            skip_ws(ps)
            if ps.pos >= n:
                return fail(ps, E_END_OF_LINE, n)
            c = s[ps.pos]
            if c == 44:
                ps.pos += 1
                if ps.stack[top - 1] == 123:
                    skip_ws(ps)
                    if scan_key(ps) < 0:
                        return -1
                break
            if c == ps.stack[top - 1] + 2:
                ps.pos += 1
                top -= 1
                continue
            if ps.stack[top - 1] == 123:
                return fail(ps, E_EXPECTED_COMMA_BRACE, ps.pos)
            return fail(ps, E_EXPECTED_COMMA_BRACKET, ps.pos)


cdef int validate_all(Parser *ps, const unsigned char *data, const int64_t *spans,
                      Py_ssize_t nlines, GrowBuf *errors) noexcept nogil:
    cdef LineError err
    cdef Py_ssize_t i
    memset(&err, 0, sizeof(LineError))
    for i in range(nlines):
        ps.line = data + spans[2 * i]
        ps.end = spans[2 * i + 1] - spans[2 * i]
        if parse_line(ps, NULL) == 0:
            continue
        if ps.error == E_NO_MEMORY:
            return -1
        err.line = i
        err.code = ps.error
        err.at = ps.error_at
        if buf_append(errors, &err, sizeof(LineError)) < 0:
            return -1
    return 0


cdef Py_ssize_t check_spans(const int64_t *spans, Py_ssize_t nlines,
                            Py_ssize_t size) noexcept nogil:
    """Index of the first span outside the data, or -1."""
    cdef Py_ssize_t i
    for i in range(nlines):
        if not (0 <= spans[2 * i] <= spans[2 * i + 1] <= size):
            return i
    return -1
