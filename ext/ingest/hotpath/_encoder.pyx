"""JSON lines -> Arrow record batches: the compiled hot path of `ingest.hotpath.encoder`.

The layout is described in _encoder.pxd; `ingest/hotpath/reference/encoder.py` is the
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

cdef extern from "encoder/platform.h":
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

_py_buffer = pa.py_buffer
_from_buffers = pa.Array.from_buffers
_from_arrays = pa.RecordBatch.from_arrays


# The encoder's sections, in one compile unit (see _encoder.pxd for their functions).
include "encoder/syntax.pxi"
include "encoder/datetime.pxi"
include "encoder/reasons.pxi"
include "encoder/table.pxi"
include "encoder/columns.pxi"
include "encoder/declared.pxi"
include "encoder/export.pxi"


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
