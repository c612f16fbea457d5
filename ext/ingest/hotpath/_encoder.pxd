# JSON lines -> Arrow columns: the hot path of `ingest.hotpath.encoder`.
#
# Table of contents and data layout of _encoder.pyx and the encoder/*.pxi it
# includes, which Cython pairs with this file (module ingest.hotpath._encoder). Parsing runs without the GIL over plain
# C structs: a Parser walks one line, a Table maps its keys to Columns and
# collects the line's values as Fields, which are checked against the column
# types and only then appended (a rejected line leaves no trace). After the
# loop, with the GIL, each Column's buffers become ArrowBuffers that pyarrow
# wraps without copying.
#
# A declared schema (ingest.schema) adds columns typed up front: they are
# columns 0..ndeclared-1, first in the schema, and never change type. A
# declared list or struct owns a tree of Columns in Table.nodes (its element,
# its fields), filled while the line is checked: the top-level parse only
# skips the nested value; table_check_line walks it again with
# convert_value(), appending straight into the nodes, and a rejected line
# truncates them back (column_truncate).
#
# The structs and the two classes (fields, cdef methods) are declared below;
# the module's C functions are listed after them, in comments only: Cython
# exports every function a .pxd declares through __pyx_capi__, which takes
# its address and stops gcc inlining the ones called once (encode() measured
# 13% slower that way).

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

from ingest.hotpath._growbuf cimport GrowBuf

include "encoder_consts.pxi"


cdef struct Column:
    # A top-level key's column, or a node below a declared list/struct.
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
    GrowBuf values          # int64 / double / timestamp / int32 date values, bool bitmap,
                            # or int32 offsets (into text, or a list's element rows)
    GrowBuf text            # UTF-8 bytes of string and json columns
    bint declared           # typed by the declared schema: never retyped or widened
    int64_t divisor         # declared timestamp: µs per stored unit (1, 1000, 1000000)
    Column *children        # list: its element node; struct: its field nodes (in Table.nodes)
    Py_ssize_t nchildren    # 1 for a list, the field count for a struct, else 0
    int64_t seen_object     # struct field node: Table.object_stamp of the last object that set it


cdef struct Field:
    int32_t column          # column id of the key
    int type                # FieldType of the value (FT_NONE for null)
    int64_t int_value       # bool 0/1, int64, or timestamp µs
    double float_value      # float64
    const char *text        # string bytes (decoded) or json text, in the line or Parser.unescaped
    Py_ssize_t text_len     # bytes at text
    const char *raw         # the value's JSON text in the line (declared json columns)
    Py_ssize_t raw_len      # bytes at raw
    bint big                # FT_FLOAT64 from an integer literal outside int64


cdef struct Frame:
    # A declared list or struct being converted, for the path in a reason.
    Column *node            # the list or struct node
    int64_t index           # list: the element being converted
    const char *key         # struct: the key being converted, decoded (valid for the line)
    Py_ssize_t key_len      # bytes at key


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
    Py_ssize_t ndeclared    # columns 0..ndeclared-1 are the declared ones, in schema order
    bint strict             # an undeclared key rejects the line (at top level and in structs)
    bint has_nested         # a declared column is a list or struct (rejections roll back nodes)
    Column *nodes           # every node below declared lists/structs; fixed at init, never moved
    Py_ssize_t nnodes       # nodes allocated
    Frame *frames           # lists/structs being converted, outermost first (error paths)
    Py_ssize_t nframes      # frames in use
    int64_t object_stamp    # counts objects converted into structs (duplicate keys)
    Py_ssize_t undeclared_field  # strict: index in `fields` where the line's first
                            # undeclared key stood, or -1
    GrowBuf undeclared_name # that key, decoded


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
    int got                 # FieldType of the value; JsonKind for declared columns
    Py_ssize_t path_at      # declared columns: the field's path in Encoder._paths, UTF-8
    Py_ssize_t path_len     # its bytes; 0 = the reason names `column`
    const char *value       # E_NOT_TIMESTAMP: the value's text, valid until line_rejected copies it
    Py_ssize_t value_len    # its bytes (at most QUOTED_VALUE_BYTES + 1 once copied)
    Py_ssize_t value_at     # where line_rejected copied it in Encoder._paths


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
        readonly bint strict  # lines with undeclared keys are rejected
        Table _table        # columns, their types and this batch's buffers
        Parser _parser      # syntax state, reused line after line
        GrowBuf _errors     # LineError records of the current call
        GrowBuf _paths      # field paths named by this call's LineErrors
        list _names         # column id -> str name, filled lazily with the GIL
        list _declared      # declared column id -> its pyarrow.Field, as given
        object _schema      # cached pyarrow.Schema of the typed columns
        bint _busy          # an encode() call is running (an Encoder is not shareable)

    cdef int _encode_lines(self, const unsigned char *data, const int64_t *spans,
                           Py_ssize_t nlines) noexcept nogil  # the loop of encode(), GIL released
    cdef int _declare(self, object schema) except -1  # the declared columns and their nodes
    cdef Py_ssize_t _init_node(self, Column *c, object declared, Py_ssize_t next_node) except -1
                                                # types c (and its children from t.nodes[next_node:])
    cdef object _take_batch(self)               # the batch as a RecordBatch (buffers move into it)
    cdef object _column_array(self, Column *c, object arrow_type)
                                                # one column's (or node's) buffers as a pyarrow Array
    cdef object _build_schema(self)             # pyarrow.Schema of the typed columns
    cdef str _name(self, int32_t column)        # a column's name as str, cached
    cdef list _error_list(self)                 # this call's LineErrors as (line, reason)


# C functions of _encoder.pyx, by the file that has them (why not declared: see
# the top). Unless noted they are `noexcept nogil`; int results are 0 = ok, -1 =
# error with Parser.error set or out of memory. "inline": `cdef inline`. GrowBuf
# and buf_reserve/append/free/detach are _growbuf.pxd's.
#
# encoder/syntax.pxi: one line, no Python objects
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
#   int validate_all(Parser *ps, const unsigned char *data, const int64_t *spans,
#                    Py_ssize_t nlines, GrowBuf *errors)  the loop of validate_lines()
#   Py_ssize_t check_spans(const int64_t *spans, Py_ssize_t nlines, Py_ssize_t size)
#                                                         first span outside the data, or -1
#
# encoder/datetime.pxi: dates and timestamps
#   int two_digits(const unsigned char *s)                inline: 0-99, or -1
#   int64_t days_from_civil(int64_t year, int month, int day)
#                                                         inline: days since 1970-01-01
#   int days_in_month(int year, int month)                inline
#   bint parse_date(const char *text, Py_ssize_t n, int64_t *days)
#                                                         YYYY-MM-DD -> days since the epoch
#   bint parse_timestamp(const unsigned char *s, Py_ssize_t n, int64_t *micros)
#                                                         inline: timestamp_syntax, within years
#                                                         0001-9999 in UTC (one caller, parse_field)
#   bint timestamp_syntax(const unsigned char *s, Py_ssize_t n, int64_t *micros)
#                                                         inline: ISO-8601 -> µs since the epoch, UTC
#
# encoder/reasons.pxi (with the GIL)
#   str reason(const LineError *e, str name, int max_depth, bytes value=None)
#                                                         with the GIL: a LineError's reason string
#                                                         (value: the quoted value, E_NOT_TIMESTAMP)
#
# encoder/table.pxi: key lookup, per-line fields, type check, commit
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
#                                                         (-1: no memory; strict table: -2, undeclared)
#   Field *table_field_slot(Table *t, int32_t column)     where the line's value goes (a repeated
#                                                         key: its first slot); NULL on OOM
#   int table_check_line(Table *t, Parser *ps, LineError *err, GrowBuf *paths)
#                                                         every value fits its column? (converts
#                                                         declared lists/structs into their nodes)
#   int line_rejected(Table *t, const Column *root, LineError *err, GrowBuf *paths)
#                                                         -1: writes the error's path, rolls back nodes
#   int table_commit_line(Table *t)                       append the line as a row, typing/widening
#   int table_finish_batch(Table *t)                      pad every typed column to the row count
#   void table_discard_batch(Table *t)                    drop the batch (after running out of memory)
#
# encoder/columns.pxi: bitmaps and columns
#   int bitmap_extend(GrowBuf *bits, Py_ssize_t nbits)    cover nbits bits, the new ones 0
#   void bitmap_set(GrowBuf *bits, Py_ssize_t i)          inline
#   int column_pad(Column *c, Py_ssize_t rows)            append nulls up to `rows` (a struct's
#                                                         children too)
#   int column_append(Column *c, const Field *field)      inline: append one checked value
#   int column_append_row(Column *c)                      a list/struct row whose children are in
#   void bitmap_truncate(GrowBuf *bits, Py_ssize_t nbits) inline: keep nbits, clear the rest of the byte
#   void column_truncate(Column *c, Py_ssize_t rows)      drop rows past `rows` (and their children's)
#   int column_finish(Column *c)                          offsets of empty text/list nodes, recursively
#   void column_reset(Column *c)                          empty the batch's rows
#   void column_widen(Column *c)                          int64 -> float64 in place
#
# encoder/declared.pxi: declared columns
#   int field_kind(const Field *f)                        inline: the JsonKind of a parsed value
#   int declared_error(LineError *err, int code, int expected, int got)
#                                                         inline: fills err, returns -1
#   int timestamp_error(const Field *f, LineError *err)   -1: why a string is not a timestamp
#                                                         (out of range, or not ISO-8601 + its text)
#   int declared_convert(const Column *c, Field *f, LineError *err)
#                                                         a scalar fits the declared type? (and is
#                                                         put in the form column_append takes)
#   int declared_field(Table *t, Parser *ps, Column *c, Field *f, LineError *err)
#                                                         one top-level declared value
#   int convert_value(Parser *ps, Table *t, Column *node, int depth, LineError *err)
#                                                         a nested value into a node, recursively
#   int convert_mismatch(Parser *ps, int expected, LineError *err)
#                                                         the kind of the value at ps.pos, as error
#   int convert_list(Parser *ps, Table *t, Column *node, int depth, LineError *err)
#   int convert_struct(Parser *ps, Table *t, Column *node, int depth, LineError *err)
#   Column *struct_child(Column *node, const char *key, Py_ssize_t n, Py_ssize_t guess)
#   int render_path(GrowBuf *out, const Column *root, const Frame *frames, Py_ssize_t n)
#                                                         "root.key[3]" as UTF-8
#
# encoder/export.pxi: ArrowBuffer (declared above)
#
# _encoder.pyx itself: the Python side (with the GIL), then the Encoder class
#   const unsigned char[::1] bytes_view(object data)      any bytes-like input, as bytes
#   const int64_t[::1] spans_view(object spans)           any bytes-like input, as int64
#   int check_input(const int64_t[::1] spans, Py_ssize_t size) except -1
#                                                         ValueError for bad spans
#   int check_max_depth(int max_depth) except -1          ValueError outside 1..MAX_DEPTH_LIMIT
#   def validate_lines(data, spans, int max_depth=64)     module-level, syntax only, no schema

