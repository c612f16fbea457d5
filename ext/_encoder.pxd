# JSON lines -> Arrow columns: the hot path of `ingest.encoder`.
#
# Table of contents and data layout of _encoder.pyx. Parsing runs without the
# GIL over plain C structs: a Parser walks one line, a Table maps its keys to
# Columns and collects the line's values as Fields, which are checked against
# the column types and only then appended (a rejected line leaves no trace).
# After the loop, with the GIL, each Column's buffers become ArrowBuffers that
# pyarrow wraps without copying.
#
# _encoder.pyx includes this file: setup.py builds the module as
# `ingest._encoder` from ext/, where Cython would look for
# ext/ingest._encoder.pxd, so it never pairs this file with the .pyx by
# itself. Cython 3 allows no forward declarations in a .pyx, so the C
# functions and the two classes are listed here as comments.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

include "encoder_consts.pxi"


cdef struct GrowBuf:
    char *data              # malloc'd bytes; NULL until the first write
    Py_ssize_t len          # bytes in use
    Py_ssize_t cap          # bytes allocated; while data is NULL, the size to allocate first


cdef struct Column:
    char *name              # the decoded key (UTF-8, not NUL-terminated), malloc'd
    Py_ssize_t name_len
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
    Py_ssize_t text_len


cdef struct Table:
    Column *columns         # every key ever seen (typed or not), by column id
    Py_ssize_t ncolumns
    Py_ssize_t columns_cap  # also the capacity of `order`
    int32_t *order          # ids of the typed columns, in schema order
    Py_ssize_t ntyped
    int32_t *slots          # open-addressing hash of names: column id + 1, 0 = empty
    Py_ssize_t nslots       # power of two, at least twice ncolumns
    int32_t first_guess     # id of the first key of the last line, or -1
    Field *fields           # values of the current line, one per distinct key, in key order
    Py_ssize_t nfields
    Py_ssize_t fields_cap
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


# Functions of _encoder.pyx, in file order (all `noexcept nogil` unless noted;
# int results are 0 = ok, -1 = error with Parser.error set or out of memory):
#
# growable buffers and bitmaps
#   buf_reserve(buf, extra)         room for `extra` more bytes
#   buf_grow(buf, need)             realloc, doubling (the slow half of buf_reserve)
#   buf_append(buf, src, n)
#   buf_free(buf)
#   bitmap_extend(bits, nbits)      cover nbits bits, the new ones 0
#   bitmap_set(bits, i)             inline
#
# syntax: one line, no Python objects
#   fail, skip_ws, is_digit, hex4, put_utf8, two_digits    inline helpers
#   utf8_invalid_at(s, n)           first invalid UTF-8 sequence, or -1
#   plain_run(s, n)                 bytes before '"', '\\' or a control char (8 at a time)
#   parser_init / parser_free
#   parse_line(ps, table)           one line; table=NULL only checks syntax
#   parse_field(ps, field, build)   one top-level value
#   scan_string / scan_escape / scan_number / slow_number / scan_literal / scan_key
#   skip_value(ps, depth)           any nested value, iteratively, with the depth limit
#   parse_timestamp(s, n, &micros)  ISO-8601 -> µs since the epoch, UTC
#   validate_all(...)               the loop of validate_lines()
#   check_spans(spans, n, size)     first span outside the data, or -1
#   reason(error, name, max_depth)  (with the GIL) the reason string of a LineError
#
# the table: key lookup, per-line fields, type check, commit
#   table_init / table_free
#   hash_name, table_rehash, table_add_column, same_name (inline)
#   table_find(t, name, n, guess)   the guessed column, else the hash table, else a new column
#   table_field_slot(t, column)     where the line's value goes (a repeated key: its first slot)
#   table_check_line(t, &err)       every value fits its column?
#   table_commit_line(t)            append the line as a row, typing/widening columns
#   table_finish_batch(t)           pad every typed column to the row count
#   table_discard_batch(t)          drop the batch (after running out of memory)
#
# columns
#   column_pad(c, rows)             append nulls up to `rows`
#   column_append(c, field)         append one checked value
#   column_widen(c)                 int64 -> float64 in place
#
# Python side (with the GIL)
#   bytes_view, spans_view          any bytes-like input -> typed memoryviews
#   check_input, check_max_depth    ValueError for bad spans / max_depth
#
# classes (fields declared in the .pyx, one comment each)
#   ArrowBuffer                     a finished column buffer exported read-only
#                                   through __getbuffer__ (view-counted); adopt()
#   Encoder                         one per table: encode(), schema; cdef methods
#                                   _encode_lines (nogil), _take_batch,
#                                   _column_array, _build_schema, _name, _error_list
#   validate_lines(data, spans, max_depth=64)   module-level, syntax only
