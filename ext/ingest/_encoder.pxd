# JSON lines -> Arrow columns: the hot path of `ingest.encoder`.
#
# Table of contents and data layout of _encoder.pyx, which Cython pairs with
# this file (module ingest._encoder). Parsing runs without the GIL over plain
# C structs: a Parser walks one line, a Table maps its keys to Columns and
# collects the line's values as Fields, which are checked against the column
# types and only then appended (a rejected line leaves no trace). After the
# loop, with the GIL, each Column's buffers become ArrowBuffers that pyarrow
# wraps without copying.
#
# The structs and the two classes (fields, cdef methods) are declared below;
# the module's C functions are listed after them, in comments only: Cython
# exports every function a .pxd declares through __pyx_capi__, which takes
# its address and stops gcc inlining the ones called once (encode() measured
# 13% slower that way).

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

include "encoder_consts.pxi"


cdef struct GrowBuf:
    char *data              # malloc'd bytes; NULL until the first write
    Py_ssize_t len          # bytes in use
    Py_ssize_t cap          # bytes allocated; while data is NULL, the size to allocate first


cdef struct Column:
    char *name              # the decoded key (UTF-8, not NUL-terminated), malloc'd
    Py_ssize_t name_len     # bytes at name
    uint64_t hash           # hash_name(name)
    int type                # FieldType; FT_NONE until the first non-null value
    int32_t next_guess      # id of the key that followed this one in the last line, or -1
    int64_t seen_line       # Table.line_stamp of the last line that set this key (duplicates)
    Py_ssize_t slot         # index of that line's value in Table.fields
    Py_ssize_t length       # rows written in the current batch (nulls are padded lazily)
    Py_ssize_t null_count   # nulls among those rows
    bint has_validity       # validity bitmap started (only once a null is written)
    GrowBuf validity        # Arrow validity bitmap, LSB first
    GrowBuf values          # int64 / double / µs values, bool bitmap, or int32 text offsets
    GrowBuf text            # UTF-8 bytes of string and json columns


cdef struct Field:
    int32_t column          # column id of the key
    int type                # FieldType of the value (FT_NONE for null)
    int64_t int_value       # bool 0/1, int64, or timestamp µs
    double float_value      # float64
    const char *text        # string bytes (decoded) or json text, in the line or Parser.unescaped
    Py_ssize_t text_len     # bytes at text


cdef struct Table:
    Column *columns         # every key ever seen (typed or not), by column id
    Py_ssize_t ncolumns     # columns in use
    Py_ssize_t columns_cap  # columns allocated; also the capacity of `order`
    int32_t *order          # ids of the typed columns, in schema order
    Py_ssize_t ntyped       # ids in `order`
    int32_t *slots          # open-addressing hash of names: column id + 1, 0 = empty
    Py_ssize_t nslots       # power of two, at least twice ncolumns
    int32_t first_guess     # id of the first key of the last line, or -1
    Field *fields           # values of the current line, one per distinct key, in key order
    Py_ssize_t nfields      # fields in use
    Py_ssize_t fields_cap   # fields allocated
    int64_t line_stamp      # counts lines over the table's life, for duplicate keys
    Py_ssize_t rows         # rows accepted into the current batch
    bint schema_changed     # a column got its type or widened since the schema was built


cdef struct Parser:
    const unsigned char *line  # the line being parsed; error offsets are relative to it
    Py_ssize_t pos          # next byte to read
    Py_ssize_t end          # length of the line
    int max_depth           # deepest nesting allowed (the top-level object is depth 1)
    uint8_t *stack          # open containers ('{' or '[') inside a nested value, max_depth bytes
    GrowBuf unescaped       # keys and strings of the current line that had escapes, decoded
    int error               # ErrorCode of the first problem found
    Py_ssize_t error_at     # its byte offset in the line


cdef struct LineError:
    Py_ssize_t line         # index of the line within the encode() call
    int code                # ErrorCode
    Py_ssize_t at           # byte offset within the line (syntax errors)
    int32_t column          # column id (type conflicts, text too large)
    int expected            # FieldType of the column (type conflicts)
    int got                 # FieldType of the value (type conflicts)


@cython.final
cdef class ArrowBuffer:
    # A finished column buffer, exported read-only through __getbuffer__.
    cdef:
        char *_data         # malloc'd, owned; freed with the object
        Py_ssize_t _length  # bytes
        int _view_count     # buffer-protocol views alive (pyarrow holds one per Buffer)

    @staticmethod
    cdef ArrowBuffer adopt(GrowBuf *buf)  # takes buf's memory, leaving buf empty


@cython.final
cdef class Encoder:
    # One per table: encode() lines into record batches; keeps column types across calls.
    cdef:
        readonly str table  # table name, for messages
        readonly int max_depth  # deepest nesting a line may have
        Table _table        # columns, their types and this batch's buffers
        Parser _parser      # syntax state, reused line after line
        GrowBuf _errors     # LineError records of the current call
        list _names         # column id -> str name, filled lazily with the GIL
        object _schema      # cached pyarrow.Schema of the typed columns
        bint _busy          # an encode() call is running (an Encoder is not shareable)

    cdef int _encode_lines(self, const unsigned char *data, const int64_t *spans,
                           Py_ssize_t nlines) noexcept nogil  # the loop of encode(), GIL released
    cdef object _take_batch(self)               # the batch as a RecordBatch (buffers move into it)
    cdef object _column_array(self, Column *c)  # one column's buffers as a pyarrow Array
    cdef object _build_schema(self)             # pyarrow.Schema of the typed columns
    cdef str _name(self, int32_t column)        # a column's name as str, cached
    cdef list _error_list(self)                 # this call's LineErrors as (line, reason)


# C functions of _encoder.pyx, in file order (why not declared: see the top).
# Unless noted they are `noexcept nogil`; int results are 0 = ok, -1 = error
# with Parser.error set or out of memory. "inline": `cdef inline`.
#
# growable buffers and bitmaps
#   int buf_reserve(GrowBuf *buf, Py_ssize_t extra)       room for `extra` more bytes
#   int buf_grow(GrowBuf *buf, Py_ssize_t need)           realloc, doubling (the slow half of buf_reserve)
#   int buf_append(GrowBuf *buf, const void *src, Py_ssize_t n)
#   void buf_free(GrowBuf *buf)
#   int bitmap_extend(GrowBuf *bits, Py_ssize_t nbits)    cover nbits bits, the new ones 0
#   void bitmap_set(GrowBuf *bits, Py_ssize_t i)          inline
#
# syntax: one line, no Python objects
#   int fail(Parser *ps, int code, Py_ssize_t at)         inline: records the error, returns -1
#   void skip_ws(Parser *ps)                              inline
#   bint is_digit(unsigned char c)                        inline
#   int32_t hex4(const unsigned char *s, Py_ssize_t at, Py_ssize_t n)
#                                                         inline: 4 hex digits, or -1
#   Py_ssize_t put_utf8(int32_t cp, char *out)            inline: bytes written
#   Py_ssize_t utf8_invalid_at(const unsigned char *s, Py_ssize_t n)
#                                                         first invalid UTF-8 sequence, or -1
#   Py_ssize_t plain_run(const unsigned char *s, Py_ssize_t n)
#                                                         inline: bytes before '"', '\\' or a control
#                                                         char (8 at a time)
#   int parser_init(Parser *ps, int max_depth)
#   void parser_free(Parser *ps)
#   int parse_line(Parser *ps, Table *table)              one line; table=NULL only checks syntax
#   int parse_field(Parser *ps, Field *field, bint build) one top-level value
#   int scan_string(Parser *ps, bint decode, const char **text, Py_ssize_t *length)
#   Py_ssize_t scan_escape(Parser *ps, Py_ssize_t at, char *out, Py_ssize_t *out_len)
#                                                         bytes the escape spans, or -1
#   int scan_number(Parser *ps, Field *field)             field=NULL only checks syntax
#   int slow_number(Parser *ps, Py_ssize_t start, double *value)
#                                                         strtod in the C locale
#   int scan_literal(Parser *ps, const char *word, Py_ssize_t n)
#   int scan_key(Parser *ps)                              a nested key and its ':'
#   int skip_value(Parser *ps, int depth)                 any value, iteratively, with the depth limit
#   int two_digits(const unsigned char *s)                inline: 0-99, or -1
#   bint parse_timestamp(const unsigned char *s, Py_ssize_t n, int64_t *micros)
#                                                         ISO-8601 -> µs since the epoch, UTC
#   int validate_all(Parser *ps, const unsigned char *data, const int64_t *spans,
#                    Py_ssize_t nlines, GrowBuf *errors)  the loop of validate_lines()
#   Py_ssize_t check_spans(const int64_t *spans, Py_ssize_t nlines, Py_ssize_t size)
#                                                         first span outside the data, or -1
#   str reason(const LineError *e, str name, int max_depth)
#                                                         with the GIL: a LineError's reason string
#
# the table: key lookup, per-line fields, type check, commit
#   int table_init(Table *t)
#   void table_free(Table *t)
#   uint64_t hash_name(const char *name, Py_ssize_t n)    FNV-1a
#   int table_rehash(Table *t, Py_ssize_t nslots)
#   int32_t table_add_column(Table *t, const char *name, Py_ssize_t n, uint64_t h)
#                                                         a new untyped column's id, or -1
#   bint same_name(const char *a, const char *b, Py_ssize_t n)
#                                                         inline
#   int32_t table_find(Table *t, const char *name, Py_ssize_t n, int32_t guess)
#                                                         the guess, else the hash, else a new column
#   Field *table_field_slot(Table *t, int32_t column)     where the line's value goes (a repeated
#                                                         key: its first slot); NULL on OOM
#   int table_check_line(Table *t, LineError *err)        every value fits its column?
#   int table_commit_line(Table *t)                       append the line as a row, typing/widening
#   int table_finish_batch(Table *t)                      pad every typed column to the row count
#   void table_discard_batch(Table *t)                    drop the batch (after running out of memory)
#
# columns
#   int column_pad(Column *c, Py_ssize_t rows)            append nulls up to `rows`
#   int column_append(Column *c, const Field *field)      append one checked value
#   void column_widen(Column *c)                          int64 -> float64 in place
#
# Python side (with the GIL)
#   const unsigned char[::1] bytes_view(object data)      any bytes-like input, as bytes
#   const int64_t[::1] spans_view(object spans)           any bytes-like input, as int64
#   int check_input(const int64_t[::1] spans, Py_ssize_t size) except -1
#                                                         ValueError for bad spans
#   int check_max_depth(int max_depth) except -1          ValueError outside 1..MAX_DEPTH_LIMIT
#   def validate_lines(data, spans, int max_depth=64)     module-level, syntax only, no schema
