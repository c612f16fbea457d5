"""JSON lines -> Arrow record batches: the compiled hot path of `ingest.hotpath.encoder`.

The layout is described in _encoder.pxd; `ingest/_reference/encoder.py` is the
readable specification of the same behaviour, and the tests assert that both
give identical batches and identical errors.

Text columns use int32 offsets (pa.string()): a line whose text would take a
column past 2 GiB within one encode() call is rejected ("... over 2 GiB of
text in one batch") rather than switching to large_string.

Declared schemas (Encoder(schema=..., strict=...), see ingest.schema and the
reference module for the rules) are checked, converted and built here too,
lists and structs as real Arrow arrays (offsets and child arrays) with no
Python object per value.
"""
cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_FillInfo
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.math cimport isinf
from libc.string cimport memcmp, memcpy, memset

from ingest.hotpath._growbuf cimport buf_append, buf_detach, buf_free, buf_reserve

import pyarrow as pa

from ingest.hotpath import reasons
from ingest.hotpath.protocols import EncodeResult
from ingest.schema import JSON_METADATA, declared_types

__all__ = ["Encoder", "validate_lines"]

cdef extern from *:
    """
    #include <locale.h>
    #include <stdlib.h>

    /* Scanning strings 8 bytes at a time needs little-endian loads and ctz. */
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ \\
        && (defined(__GNUC__) || defined(__clang__))
    #define INGEST_SWAR 1
    #define ingest_ctz64(x) __builtin_ctzll(x)
    #else
    #define INGEST_SWAR 0
    #define ingest_ctz64(x) 0
    #endif
    #define INGEST_ONES 0x0101010101010101ULL
    #define INGEST_HIGH_BITS 0x8080808080808080ULL
    #define INGEST_QUOTES 0x2222222222222222ULL
    #define INGEST_BACKSLASHES 0x5C5C5C5C5C5C5C5CULL
    #define INGEST_SPACES 0x2020202020202020ULL

    /* strtod in the "C" locale: correctly rounded, thread-safe, and not
       fooled by a process that set LC_NUMERIC to a comma locale. */
    static locale_t ingest_c_locale = (locale_t)0;
    static int ingest_init_c_locale(void) {
        ingest_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        return ingest_c_locale == (locale_t)0 ? -1 : 0;
    }
    static double ingest_strtod(const char *s) {
        return strtod_l(s, NULL, ingest_c_locale);
    }
    """
    const int INGEST_SWAR
    const uint64_t INGEST_ONES
    const uint64_t INGEST_HIGH_BITS
    const uint64_t INGEST_QUOTES
    const uint64_t INGEST_BACKSLASHES
    const uint64_t INGEST_SPACES
    int ingest_ctz64(uint64_t x) noexcept nogil
    int ingest_init_c_locale() noexcept
    double ingest_strtod(const char *s) noexcept nogil

if ingest_init_c_locale() != 0:
    raise ImportError("ingest.hotpath._encoder: cannot create the C numeric locale")

# Epoch bounds of a declared timestamp given as an integer: years 0001-9999.
cdef int64_t MIN_MICROS = -62135596800000000   # 0001-01-01T00:00:00Z
cdef int64_t MAX_MICROS = 253402300799999999   # 9999-12-31T23:59:59.999999Z

cdef double POW10[23]
POW10[:] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
            1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]

TYPE_NAMES = ("null", "bool", "int64", "float64", "string", "timestamp", "json", "date", "list",
              "struct")
KIND_NAMES = ("null", "bool", "integer", "number", "string", "object", "array")
DECLARED_KINDS = {"bool": FT_BOOL, "int64": FT_INT64, "float64": FT_FLOAT64, "string": FT_STRING,
                  "timestamp": FT_TIMESTAMP, "json": FT_JSON, "date": FT_DATE, "list": FT_LIST,
                  "struct": FT_STRUCT}
ARROW_TYPES = (None, pa.bool_(), pa.int64(), pa.float64(), pa.string(),
               pa.timestamp("us", tz="UTC"), pa.string())

# What a syntax error found, by ErrorCode (the texts are in ingest.hotpath.reasons).
SYNTAX_REASONS = {
    E_END_OF_LINE: reasons.END_OF_LINE,
    E_EXPECTED_VALUE: reasons.EXPECTED_VALUE,
    E_EXPECTED_KEY: reasons.EXPECTED_KEY,
    E_EXPECTED_COLON: reasons.EXPECTED_COLON,
    E_EXPECTED_COMMA_BRACE: reasons.EXPECTED_COMMA_BRACE,
    E_EXPECTED_COMMA_BRACKET: reasons.EXPECTED_COMMA_BRACKET,
    E_EXPECTED_END: reasons.EXPECTED_END,
    E_BAD_LITERAL: reasons.BAD_LITERAL,
    E_BAD_NUMBER: reasons.BAD_NUMBER,
    E_BAD_ESCAPE: reasons.BAD_ESCAPE,
    E_LONE_SURROGATE: reasons.LONE_SURROGATE,
    E_CONTROL_CHAR: reasons.CONTROL_CHAR,
}

_py_buffer = pa.py_buffer
_from_buffers = pa.Array.from_buffers
_from_arrays = pa.RecordBatch.from_arrays


# ---------------------------------------------------------------------------
# Bitmaps (in GrowBufs, _growbuf.pxd)

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


# ---------------------------------------------------------------------------
# Syntax

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


cdef inline int two_digits(const unsigned char *s) noexcept nogil:
    if not is_digit(s[0]) or not is_digit(s[1]):
        return -1
    return (s[0] - 48) * 10 + (s[1] - 48)


cdef inline int64_t days_from_civil(int64_t year, int month, int day) noexcept nogil:
    """Days since 1970-01-01 in the proleptic Gregorian calendar."""
    cdef int64_t y = year - 1 if month <= 2 else year
    cdef int64_t era = y // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int days_in_month(int year, int month) noexcept nogil:
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    if month == 4 or month == 6 or month == 9 or month == 11:
        return 30
    return 31


cdef bint parse_date(const char *text, Py_ssize_t n, int64_t *days) noexcept nogil:
    """YYYY-MM-DD (years 0001-9999) -> days since the epoch."""
    cdef const unsigned char *s = <const unsigned char *>text
    cdef int high, low, month, day
    if n != 10 or s[4] != 45 or s[7] != 45:
        return False
    high = two_digits(s)
    low = two_digits(s + 2)
    month = two_digits(s + 5)
    day = two_digits(s + 8)
    if high < 0 or low < 0 or month < 1 or month > 12 or day < 1:
        return False
    if high * 100 + low < 1 or day > days_in_month(high * 100 + low, month):
        return False
    days[0] = days_from_civil(high * 100 + low, month, day)
    return True


cdef inline bint parse_timestamp(const unsigned char *s, Py_ssize_t n, int64_t *micros) noexcept nogil:
    """An ISO-8601 date-time whose UTC instant is within years 0001-9999."""
    return (timestamp_syntax(s, n, micros)
            and MIN_MICROS <= micros[0] <= MAX_MICROS)


cdef inline bint timestamp_syntax(const unsigned char *s, Py_ssize_t n, int64_t *micros) noexcept nogil:
    """YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|+HH:MM|+HHMM|-...] -> µs since the
    epoch, UTC (no offset means UTC; digits past µs are truncated); the
    offset may take the instant outside years 0001-9999."""
    cdef int year, month, day, hour, minute, second, hours, minutes
    cdef int frac_digits = 0
    cdef int64_t frac = 0
    cdef int64_t offset = 0
    cdef int64_t days
    cdef Py_ssize_t pos = 19
    if n < 19 or n > 35:
        return False
    if (s[4] != 45 or s[7] != 45 or (s[10] != 84 and s[10] != 32)
            or s[13] != 58 or s[16] != 58):
        return False
    hours = two_digits(s)
    minutes = two_digits(s + 2)
    if hours < 0 or minutes < 0:
        return False
    year = hours * 100 + minutes
    month = two_digits(s + 5)
    day = two_digits(s + 8)
    hour = two_digits(s + 11)
    minute = two_digits(s + 14)
    second = two_digits(s + 17)
    if (year < 1 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23
            or minute < 0 or minute > 59 or second < 0 or second > 59):
        return False
    if day > days_in_month(year, month):
        return False
    if pos < n and s[pos] == 46:  # '.'
        pos += 1
        while pos < n and is_digit(s[pos]):
            if frac_digits < 6:
                frac = frac * 10 + (s[pos] - 48)
            frac_digits += 1
            pos += 1
        if frac_digits == 0 or frac_digits > 9:
            return False
        while frac_digits < 6:
            frac *= 10
            frac_digits += 1
    if pos < n:
        if s[pos] == 90 and pos + 1 == n:  # 'Z'
            pass
        elif s[pos] == 43 or s[pos] == 45:  # '+' '-'
            hours = two_digits(s + pos + 1) if pos + 3 <= n else -1
            if pos + 6 == n and s[pos + 3] == 58:
                minutes = two_digits(s + pos + 4)
            elif pos + 5 == n:
                minutes = two_digits(s + pos + 3)
            else:
                return False
            if hours < 0 or hours > 23 or minutes < 0 or minutes > 59:
                return False
            offset = hours * 3600 + minutes * 60
            if s[pos] == 45:
                offset = -offset
        else:
            return False
    days = days_from_civil(year, month, day)
    micros[0] = ((days * 86400 + hour * 3600 + minute * 60 + second) - offset) * 1000000 + frac
    return True


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


cdef str reason(const LineError *e, str name, int max_depth, bytes value=None):
    """`name` is the field's name or path, `value` the quoted value's first
    bytes (E_NOT_TIMESTAMP); the texts are ingest.hotpath.reasons'."""
    cdef int code = e.code
    if code == E_TYPE_CONFLICT:
        return reasons.type_conflict(name, TYPE_NAMES[e.expected], TYPE_NAMES[e.got])
    if code == E_TEXT_TOO_LARGE:
        return reasons.text_too_large(name)
    if code == E_DECLARED_TYPE:
        return reasons.type_conflict(name, TYPE_NAMES[e.expected], KIND_NAMES[e.got])
    if code == E_INT_RANGE:
        return reasons.int_range(name)
    if code == E_NOT_TIMESTAMP:
        return reasons.not_timestamp(name, value)
    if code == E_NUMBER_RANGE:
        return reasons.number_range(name)
    if code == E_TOO_MANY_KEYS:
        return reasons.too_many_keys(MAX_EVENT_KEYS)
    if code == E_NOT_DATE:
        return reasons.not_date(name)
    if code == E_TIMESTAMP_RANGE:
        return reasons.timestamp_range(name)
    if code == E_UNDECLARED:
        return reasons.undeclared(name)
    if code == E_LIST_TOO_LONG:
        return reasons.list_too_long(name, MAX_LIST_ELEMENTS)
    if code == E_UTF8:
        return reasons.utf8(e.at)
    if code == E_EMPTY_LINE:
        return reasons.empty_line()
    if code == E_NOT_OBJECT:
        return reasons.not_object()
    if code == E_TOO_DEEP:
        return reasons.too_deep(max_depth)
    if code == E_EMPTY_KEY:
        return reasons.empty_key()
    return reasons.syntax(e.at, SYNTAX_REASONS[code])


# ---------------------------------------------------------------------------
# The table: columns by key, the current line's fields

cdef int table_init(Table *t) noexcept nogil:
    memset(t, 0, sizeof(Table))
    t.first_guess = -1
    t.undeclared_field = -1
    t.schema_changed = True
    t.slots = <int32_t *>calloc(HASH_MIN_SLOTS, sizeof(int32_t))
    if t.slots == NULL:
        return -1
    t.nslots = HASH_MIN_SLOTS
    return 0


cdef void table_free(Table *t) noexcept nogil:
    cdef Py_ssize_t i
    cdef Column *c
    for i in range(t.ncolumns + t.nnodes):
        c = &t.columns[i] if i < t.ncolumns else &t.nodes[i - t.ncolumns]
        free(c.name)
        buf_free(&c.validity)
        buf_free(&c.values)
        buf_free(&c.text)
    free(t.columns)
    free(t.nodes)
    free(t.frames)
    free(t.order)
    free(t.slots)
    free(t.fields)
    buf_free(&t.undeclared_name)
    memset(t, 0, sizeof(Table))


cdef uint64_t hash_name(const char *name, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL  # FNV-1a
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ <uint8_t>name[i]) * 1099511628211ULL
    return h


cdef int table_rehash(Table *t, Py_ssize_t nslots) noexcept nogil:
    cdef int32_t *slots = <int32_t *>calloc(nslots, sizeof(int32_t))
    cdef Py_ssize_t i, j
    if slots == NULL:
        return -1
    for i in range(t.ncolumns):
        j = <Py_ssize_t>(t.columns[i].hash & <uint64_t>(nslots - 1))
        while slots[j]:
            j = (j + 1) & (nslots - 1)
        slots[j] = <int32_t>(i + 1)
    free(t.slots)
    t.slots = slots
    t.nslots = nslots
    return 0


cdef int32_t table_add_column(Table *t, const char *name, Py_ssize_t n, uint64_t h) noexcept nogil:
    """Registers a new key (untyped until its first non-null value); -1 on OOM."""
    cdef Py_ssize_t cap, j
    cdef Column *columns
    cdef int32_t *order
    cdef Column *c
    cdef char *copy
    if (t.ncolumns + 1) * 2 > t.nslots and table_rehash(t, t.nslots * 2) < 0:
        return -1
    if t.ncolumns == t.columns_cap:
        cap = t.columns_cap * 2 if t.columns_cap else 16
        columns = <Column *>realloc(t.columns, cap * sizeof(Column))
        if columns == NULL:
            return -1
        t.columns = columns
        order = <int32_t *>realloc(t.order, cap * sizeof(int32_t))
        if order == NULL:
            return -1
        t.order = order
        t.columns_cap = cap
    copy = <char *>malloc(n)
    if copy == NULL:
        return -1
    memcpy(copy, name, n)
    c = &t.columns[t.ncolumns]
    memset(c, 0, sizeof(Column))
    c.name = copy
    c.name_len = n
    c.hash = h
    c.type = FT_NONE
    c.next_guess = -1
    c.seen_line = -1
    j = <Py_ssize_t>(h & <uint64_t>(t.nslots - 1))
    while t.slots[j]:
        j = (j + 1) & (t.nslots - 1)
    t.ncolumns += 1
    t.slots[j] = <int32_t>t.ncolumns
    return <int32_t>(t.ncolumns - 1)


cdef inline bint same_name(const char *a, const char *b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n > 16:
        return memcmp(a, b, n) == 0
    for i in range(n):  # short keys: cheaper than a call to memcmp
        if a[i] != b[i]:
            return False
    return True


cdef int32_t table_find(Table *t, const char *name, Py_ssize_t n, int32_t guess) noexcept nogil:
    """Column id of a key: the guess if it matches, else a hash lookup, else a
    new column (-1: out of memory), or in a strict table -2 (not declared)."""
    cdef Column *c
    cdef uint64_t h
    cdef Py_ssize_t j
    cdef int32_t id
    if guess >= 0:
        c = &t.columns[guess]
        if c.name_len == n and same_name(c.name, name, n):
            return guess
    h = hash_name(name, n)
    j = <Py_ssize_t>(h & <uint64_t>(t.nslots - 1))
    while t.slots[j]:
        id = t.slots[j] - 1
        c = &t.columns[id]
        if c.hash == h and c.name_len == n and memcmp(c.name, name, n) == 0:
            return id
        j = (j + 1) & (t.nslots - 1)
    if t.strict:
        return -2
    return table_add_column(t, name, n, h)


cdef Field *table_field_slot(Table *t, int32_t column) noexcept nogil:
    """Where the current line's value of `column` goes: a new slot, or for a
    repeated key its first one (the last value wins, in the first place).
    NULL when out of memory."""
    cdef Column *c = &t.columns[column]
    cdef Field *fields
    cdef Py_ssize_t cap
    if c.seen_line == t.line_stamp:
        return &t.fields[c.slot]
    if t.nfields == t.fields_cap:
        cap = t.fields_cap * 2 if t.fields_cap else 32
        fields = <Field *>realloc(t.fields, cap * sizeof(Field))
        if fields == NULL:
            return NULL
        t.fields = fields
        t.fields_cap = cap
    c.seen_line = t.line_stamp
    c.slot = t.nfields
    t.nfields += 1
    t.fields[c.slot].column = column
    return &t.fields[c.slot]


cdef int table_check_line(Table *t, Parser *ps, LineError *err, GrowBuf *paths) noexcept nogil:
    """Whether every value of the line fits its column, in order of first
    appearance; -1 with err filled if not (err.code E_NO_MEMORY: out of
    memory). Declared lists and structs are converted into their nodes here
    (the field is then marked null: nothing is left to commit)."""
    cdef Py_ssize_t k
    cdef Field *f
    cdef Column *c
    cdef int target
    cdef Py_ssize_t stop = t.nfields if t.undeclared_field < 0 else t.undeclared_field
    for k in range(stop):
        f = &t.fields[k]
        if f.type == FT_NONE:
            continue
        c = &t.columns[f.column]
        if f.column < t.ndeclared:
            if declared_field(t, ps, c, f, err) < 0:
                return line_rejected(t, c, err, paths)
            continue
        if f.type == FT_FLOAT64 and isinf(f.float_value):
            memset(err, 0, sizeof(LineError))
            err.code = E_NUMBER_RANGE
            err.column = f.column
            return line_rejected(t, NULL, err, paths)
        target = c.type
        if target == FT_TIMESTAMP and f.type == FT_STRING:
            timestamp_error(f, err)
            err.column = f.column
            return line_rejected(t, NULL, err, paths)
        if target == FT_NONE:
            target = f.type
        elif not (target == f.type
                  or (target == FT_FLOAT64 and f.type == FT_INT64)
                  or (target == FT_INT64 and f.type == FT_FLOAT64)
                  or (target == FT_STRING and f.type == FT_TIMESTAMP)):
            memset(err, 0, sizeof(LineError))
            err.code = E_TYPE_CONFLICT
            err.column = f.column
            err.expected = c.type
            err.got = f.type
            return line_rejected(t, NULL, err, paths)
        if (target == FT_STRING or target == FT_JSON) and c.text.len + f.text_len > MAX_TEXT_BYTES:
            memset(err, 0, sizeof(LineError))
            err.code = E_TEXT_TOO_LARGE
            err.column = f.column
            return line_rejected(t, NULL, err, paths)
    if t.undeclared_field >= 0:
        memset(err, 0, sizeof(LineError))
        err.code = E_UNDECLARED
        return line_rejected(t, NULL, err, paths)
    return 0


cdef int line_rejected(Table *t, const Column *root, LineError *err, GrowBuf *paths) noexcept nogil:
    """Finishes a rejection: the path of a declared field's error goes to
    `paths` (root: the declared column, t.frames the way down), and the
    declared lists/structs drop what this line put in. Returns -1."""
    cdef Py_ssize_t i
    cdef Column *c
    if err.code == E_NO_MEMORY:
        return -1  # the whole batch is dropped
    err.path_at = paths.len
    if root != NULL:
        if render_path(paths, root, t.frames, t.nframes) < 0:
            err.code = E_NO_MEMORY
            return -1
    elif err.code == E_UNDECLARED:
        if buf_append(paths, t.undeclared_name.data, t.undeclared_name.len) < 0:
            err.code = E_NO_MEMORY
            return -1
    err.path_len = paths.len - err.path_at
    if err.value != NULL:
        err.value_at = paths.len
        if buf_append(paths, err.value, min(err.value_len, QUOTED_VALUE_BYTES + 1)) < 0:
            err.code = E_NO_MEMORY
            return -1
        err.value_len = paths.len - err.value_at
        err.value = NULL
    if t.has_nested:
        for i in range(t.ndeclared):
            c = &t.columns[i]
            if c.type == FT_LIST or c.type == FT_STRUCT:
                column_truncate(c, t.rows)
    return -1


cdef int table_commit_line(Table *t) noexcept nogil:
    """Appends the checked line as row `t.rows`: types new columns, widens int64 ones."""
    cdef Py_ssize_t k
    cdef const Field *f
    cdef Column *c
    for k in range(t.nfields):
        f = &t.fields[k]
        if f.type == FT_NONE:
            continue  # null: padded later
        c = &t.columns[f.column]
        if c.type == FT_NONE:
            c.type = f.type
            t.order[t.ntyped] = f.column
            t.ntyped += 1
            t.schema_changed = True
        elif c.type == FT_INT64 and f.type == FT_FLOAT64:
            column_widen(c)
            t.schema_changed = True
        if c.length < t.rows and column_pad(c, t.rows) < 0:
            return -1
        if column_append(c, f) < 0:
            return -1
    t.rows += 1
    return 0


cdef int table_finish_batch(Table *t) noexcept nogil:
    """Pads every typed column to t.rows rows."""
    cdef Py_ssize_t k
    cdef Column *c
    cdef int32_t zero = 0
    for k in range(t.ntyped):
        c = &t.columns[t.order[k]]
        if column_pad(c, t.rows) < 0:
            return -1
        if (c.type == FT_STRING or c.type == FT_JSON) and c.values.len == 0:
            if buf_append(&c.values, &zero, sizeof(int32_t)) < 0:
                return -1
        if (c.type == FT_LIST or c.type == FT_STRUCT) and column_finish(c) < 0:
            return -1
    return 0


cdef void table_discard_batch(Table *t) noexcept nogil:
    """Drops the rows of the current batch (after running out of memory)."""
    cdef Py_ssize_t i
    for i in range(t.ncolumns):
        column_reset(&t.columns[i])
    for i in range(t.nnodes):
        column_reset(&t.nodes[i])
    t.rows = 0


# ---------------------------------------------------------------------------
# Columns

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


# ---------------------------------------------------------------------------
# Declared columns: check, convert, and fill lists and structs

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


# ---------------------------------------------------------------------------
# Python side

cdef const unsigned char[::1] bytes_view(object data):
    cdef object view = memoryview(data)
    if view.format != "B":
        view = view.cast("B")
    return view


cdef const int64_t[::1] spans_view(object spans):
    cdef object view = memoryview(spans)
    if view.format != "q":
        view = view.cast("B").cast("q")
    return view


cdef int check_input(const int64_t[::1] spans, Py_ssize_t size) except -1:
    cdef Py_ssize_t bad
    if spans.shape[0] % 2:
        raise ValueError("spans must hold an even number of int64 offsets")
    if spans.shape[0] == 0:
        return 0
    bad = check_spans(&spans[0], spans.shape[0] // 2, size)
    if bad >= 0:
        raise ValueError(f"span {bad} ({spans[2 * bad]}, {spans[2 * bad + 1]}) "
                         f"is not within the data ({size} bytes)")
    return 0


cdef int check_max_depth(int max_depth) except -1:
    if not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, got {max_depth}")
    return 0


def validate_lines(data, spans, int max_depth=64):
    """Syntax-only check of NDJSON lines (no schema): the (line index, reason)
    errors that encode() would give for syntax, UTF-8, depth and empty keys."""
    cdef const unsigned char[::1] raw = bytes_view(data)
    cdef const int64_t[::1] offsets = spans_view(spans)
    cdef Py_ssize_t nlines = offsets.shape[0] // 2
    cdef const unsigned char *base = <const unsigned char *>""
    cdef const int64_t *sp = NULL
    cdef Parser ps
    cdef GrowBuf errors
    cdef const LineError *e
    cdef Py_ssize_t k
    cdef int rc
    check_max_depth(max_depth)
    check_input(offsets, raw.shape[0])
    if raw.shape[0]:
        base = &raw[0]
    if nlines:
        sp = &offsets[0]
    memset(&errors, 0, sizeof(GrowBuf))
    if parser_init(&ps, max_depth) < 0:
        parser_free(&ps)
        raise MemoryError()
    try:
        with nogil:
            rc = validate_all(&ps, base, sp, nlines, &errors)
        if rc < 0:
            raise MemoryError()
        result = []
        for k in range(errors.len // <Py_ssize_t>sizeof(LineError)):
            e = (<const LineError *>errors.data) + k
            result.append((e.line, reason(e, None, max_depth)))
        return result
    finally:
        parser_free(&ps)
        buf_free(&errors)


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


@cython.final
cdef class Encoder:
    """Turns one table's NDJSON lines into Arrow record batches, keeping the
    table's column types across calls (see ingest.hotpath.protocols.Encoder)."""

    def __cinit__(self, str table="", int max_depth=64, schema=None, bint strict=False):
        check_max_depth(max_depth)
        if strict and schema is None:
            raise ValueError("strict=True needs a declared schema")
        self.table = table
        self.max_depth = max_depth
        self.strict = strict
        self._names = []
        self._declared = []
        if table_init(&self._table) < 0 or parser_init(&self._parser, max_depth) < 0:
            raise MemoryError()
        if schema is not None:
            self._declare(schema)
        self._schema = self._build_schema()
        self._table.schema_changed = False

    def __dealloc__(self):
        table_free(&self._table)
        parser_free(&self._parser)
        buf_free(&self._errors)
        buf_free(&self._paths)

    def __repr__(self):
        return f"<ingest.hotpath._encoder.Encoder table={self.table!r} columns={self._table.ntyped}>"

    cdef int _declare(self, object schema) except -1:
        """Columns 0..n-1 for the declared fields, typed, first in the schema;
        the nodes below lists and structs in one array (children contiguous)."""
        cdef Table *t = &self._table
        cdef Py_ssize_t nnodes = 0
        cdef Py_ssize_t next_node = 0
        cdef Py_ssize_t nesting = 0
        cdef int32_t column
        cdef bytes name
        columns = declared_types(schema, self.max_depth)
        pending = [declared for _, declared in columns]
        while pending:  # count the nodes: every list item and struct field, at any depth
            declared = pending.pop()
            children = [declared.item] if declared.kind == "list" else [c for _, c in declared.fields]
            nnodes += len(children)
            pending.extend(children)
        for _, declared in columns:
            nesting = max(nesting, declared.nesting)
        t.nodes = <Column *>calloc(nnodes if nnodes else 1, sizeof(Column))
        t.frames = <Frame *>calloc(nesting + 1, sizeof(Frame))
        if t.nodes == NULL or t.frames == NULL:
            raise MemoryError()
        t.nnodes = nnodes
        for name_str, declared in columns:
            name = name_str.encode("utf-8")
            column = table_add_column(t, name, len(name), hash_name(name, len(name)))
            if column < 0:
                raise MemoryError()
            next_node = self._init_node(&t.columns[column], declared, next_node)
            t.order[t.ntyped] = column
            t.ntyped += 1
            t.has_nested = t.has_nested or declared.kind in ("list", "struct")
        t.ndeclared = len(columns)
        t.strict = self.strict
        self._declared = list(schema)
        return 0

    cdef Py_ssize_t _init_node(self, Column *c, object declared, Py_ssize_t next_node) except -1:
        """Types column or node c as `declared`; its children take the nodes
        from t.nodes[next_node:]. Returns the next free node."""
        cdef Table *t = &self._table
        cdef Column *child
        cdef Py_ssize_t i
        cdef bytes name
        c.type = DECLARED_KINDS[declared.kind]
        c.declared = True
        c.divisor = declared.divisor
        c.seen_object = -1
        if declared.kind == "list":
            children = [("", declared.item)]
        elif declared.kind == "struct":
            children = declared.fields
        else:
            return next_node
        c.children = &t.nodes[next_node]
        c.nchildren = len(children)
        next_node += len(children)
        for i, (child_name, child_type) in enumerate(children):
            child = &c.children[i]
            name = child_name.encode("utf-8")
            child.name = <char *>malloc(len(name) if name else 1)
            if child.name == NULL:
                raise MemoryError()
            memcpy(child.name, <const char *>name, len(name))
            child.name_len = len(name)
            next_node = self._init_node(child, child_type, next_node)
        return next_node

    @property
    def schema(self):
        """The table's current schema: declared columns first, as given, then
        the inferred ones in order of first typing."""
        # While encode() runs without the GIL in another thread the columns
        # may move: answer with the schema as of the last finished call.
        if self._table.schema_changed and not self._busy:
            self._schema = self._build_schema()
            self._table.schema_changed = False
        return self._schema

    def encode(self, data, spans):
        """Encodes the lines data[spans[2i]:spans[2i+1]] into one record batch."""
        cdef const unsigned char[::1] raw = bytes_view(data)
        cdef const int64_t[::1] offsets = spans_view(spans)
        cdef Py_ssize_t nlines = offsets.shape[0] // 2
        cdef const unsigned char *base = <const unsigned char *>""
        cdef const int64_t *sp = NULL
        cdef int rc
        check_input(offsets, raw.shape[0])
        if raw.shape[0]:
            base = &raw[0]
        if nlines:
            sp = &offsets[0]
        if self._busy:
            raise RuntimeError(f"Encoder for table {self.table!r} is already encoding "
                               "(use one Encoder per thread)")
        self._busy = True
        try:
            with nogil:
                rc = self._encode_lines(base, sp, nlines)
            if rc < 0:
                table_discard_batch(&self._table)
                raise MemoryError(f"out of memory encoding a batch of table {self.table!r}")
            try:
                batch = self._take_batch()
            except BaseException:
                table_discard_batch(&self._table)
                raise
            return EncodeResult(batch, self._error_list())
        finally:
            self._busy = False

    cdef int _encode_lines(self, const unsigned char *data, const int64_t *spans,
                           Py_ssize_t nlines) noexcept nogil:
        cdef Table *t = &self._table
        cdef Parser *ps = &self._parser
        cdef LineError err
        cdef Py_ssize_t i
        self._errors.len = 0
        self._paths.len = 0
        for i in range(nlines):
            ps.line = data + spans[2 * i]
            ps.end = spans[2 * i + 1] - spans[2 * i]
            t.line_stamp += 1
            t.nfields = 0
            t.undeclared_field = -1
            if parse_line(ps, t) < 0:
                if ps.error == E_NO_MEMORY:
                    return -1
                memset(&err, 0, sizeof(LineError))
                err.code = ps.error
                err.at = ps.error_at
            elif table_check_line(t, ps, &err, &self._paths) == 0:
                if table_commit_line(t) < 0:
                    return -1
                continue
            elif err.code == E_NO_MEMORY:
                return -1
            err.line = i
            if buf_append(&self._errors, &err, sizeof(LineError)) < 0:
                return -1
        return table_finish_batch(t)

    cdef object _take_batch(self):
        """The current batch as a RecordBatch (the columns' buffers move into it)."""
        cdef Table *t = &self._table
        cdef Py_ssize_t rows = t.rows
        cdef Py_ssize_t k
        if t.schema_changed:
            self._schema = self._build_schema()
            t.schema_changed = False
        schema = self._schema
        t.rows = 0
        if t.ntyped == 0:
            if rows == 0:
                return None
            return _from_arrays([pa.nulls(rows)], names=["_"]).select([])
        arrays = []
        for k in range(t.ntyped):
            column = t.order[k]
            arrow_type = (self._declared[column].type if column < t.ndeclared
                          else ARROW_TYPES[t.columns[column].type])
            arrays.append(self._column_array(&t.columns[column], arrow_type))
        return _from_arrays(arrays, schema=schema)

    cdef object _column_array(self, Column *c, object arrow_type):
        cdef Py_ssize_t rows = c.length
        cdef Py_ssize_t nulls = c.null_count
        cdef Py_ssize_t i
        validity = None
        if nulls:
            validity = _py_buffer(ArrowBuffer.adopt(&c.validity))
        else:
            c.validity.len = 0
        c.length = 0
        c.null_count = 0
        c.has_validity = False
        if c.type == FT_STRING or c.type == FT_JSON:
            buffers = [validity, _py_buffer(ArrowBuffer.adopt(&c.values)),
                       _py_buffer(ArrowBuffer.adopt(&c.text))]
        elif c.type == FT_LIST:
            buffers = [validity, _py_buffer(ArrowBuffer.adopt(&c.values))]
            item = self._column_array(c.children, arrow_type.value_type)
            return _from_buffers(arrow_type, rows, buffers, null_count=nulls, children=[item])
        elif c.type == FT_STRUCT:
            children = [self._column_array(&c.children[i], arrow_type.field(i).type)
                        for i in range(c.nchildren)]
            return _from_buffers(arrow_type, rows, [validity], null_count=nulls, children=children)
        else:
            buffers = [validity, _py_buffer(ArrowBuffer.adopt(&c.values))]
        return _from_buffers(arrow_type, rows, buffers, null_count=nulls)

    cdef object _build_schema(self):
        cdef Table *t = &self._table
        cdef Py_ssize_t k
        cdef int32_t column
        fields = []
        for k in range(t.ntyped):
            column = t.order[k]
            if column < t.ndeclared:
                fields.append(self._declared[column])
                continue
            kind = t.columns[column].type
            fields.append(pa.field(self._name(column), ARROW_TYPES[kind],
                                   metadata=JSON_METADATA if kind == FT_JSON else None))
        return pa.schema(fields)

    cdef str _name(self, int32_t column):
        cdef Column *c = &self._table.columns[column]
        while len(self._names) <= column:
            self._names.append(None)
        name = self._names[column]
        if name is None:
            name = c.name[:c.name_len].decode("utf-8")
            self._names[column] = name
        return name

    cdef list _error_list(self):
        cdef const LineError *e
        cdef Py_ssize_t k
        result = []
        for k in range(self._errors.len // <Py_ssize_t>sizeof(LineError)):
            e = (<const LineError *>self._errors.data) + k
            name = None
            if e.path_len:
                name = self._paths.data[e.path_at:e.path_at + e.path_len].decode("utf-8")
            elif e.code in (E_TYPE_CONFLICT, E_TEXT_TOO_LARGE, E_NUMBER_RANGE, E_NOT_TIMESTAMP,
                            E_TIMESTAMP_RANGE):
                name = self._name(e.column)
            value = (self._paths.data[e.value_at:e.value_at + e.value_len]
                     if e.code == E_NOT_TIMESTAMP else None)
            result.append((e.line, reason(e, name, self.max_depth, value)))
        return result
