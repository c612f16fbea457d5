# Constants of the JSON -> Arrow encoder (included by _encoder.pxd).
# The pure-Python reference (ingest/hotpath/reference/encoder.py) spells the
# same type names out as strings; the reason texts of the ErrorCodes are in
# ingest/hotpath/reasons.py, used by both.


cdef enum FieldType:
    # What a value is, and what a column holds once typed (same numbering, so
    # a column takes the type of its first non-null value as is).
    FT_NONE = 0        # JSON null / a column that has seen only nulls (not in the schema)
    FT_BOOL = 1        # bool
    FT_INT64 = 2       # int64
    FT_FLOAT64 = 3     # float64 (also integers outside int64)
    FT_STRING = 4      # string
    FT_TIMESTAMP = 5   # timestamp[us, tz=UTC], from an ISO-8601 string
    FT_JSON = 6        # nested object/array, kept as its original text
    # declared columns only (ingest.schema):
    FT_DATE = 7        # date32, from a "YYYY-MM-DD" string
    FT_LIST = 8        # Arrow list: int32 offsets into its element node
    FT_STRUCT = 9      # Arrow struct: one child node per field


cdef enum JsonKind:
    # What a value is, as named in the reasons for declared columns.
    K_NULL = 0
    K_BOOL = 1
    K_INTEGER = 2      # an integer literal (no fraction or exponent), of any size
    K_NUMBER = 3       # a number with a fraction or an exponent
    K_STRING = 4
    K_OBJECT = 5
    K_ARRAY = 6


cdef enum ErrorCode:
    # Why a line was rejected; formatted into a reason string with the GIL.
    E_OK = 0
    E_EMPTY_LINE = 1              # only whitespace (or a BOM)
    E_UTF8 = 2                    # invalid UTF-8 at `at`
    E_END_OF_LINE = 3             # the line ended inside a value
    E_EXPECTED_VALUE = 4
    E_EXPECTED_KEY = 5            # expected '"' starting a key
    E_EXPECTED_COLON = 6
    E_EXPECTED_COMMA_BRACE = 7    # expected ',' or '}'
    E_EXPECTED_COMMA_BRACKET = 8  # expected ',' or ']'
    E_EXPECTED_END = 9            # data after the top-level object
    E_BAD_LITERAL = 10            # not true/false/null
    E_BAD_NUMBER = 11             # leading zero, '1.', '-', '1e', ...
    E_BAD_ESCAPE = 12
    E_LONE_SURROGATE = 13         # \uD800-\uDFFF not forming a pair
    E_CONTROL_CHAR = 14           # raw byte < 0x20 inside a string
    E_NOT_OBJECT = 15             # valid JSON, but not an object
    E_TOO_DEEP = 16               # more than max_depth nested containers
    E_EMPTY_KEY = 17              # top-level key ""
    E_TYPE_CONFLICT = 18          # value does not fit the column's type
    E_TEXT_TOO_LARGE = 19         # a column's text would pass 2 GiB in one batch
    E_NO_MEMORY = 20              # malloc failed: the whole call raises MemoryError
    # declared columns (the field's path is kept in the LineError):
    E_DECLARED_TYPE = 21          # value of the wrong kind for the declared type
    E_INT_RANGE = 22              # int64 column: an integer outside int64
    E_NOT_TIMESTAMP = 23          # timestamp column: a string that is not ISO-8601 (the value is quoted)
    E_NOT_DATE = 24               # date column: a string that is not YYYY-MM-DD
    E_TIMESTAMP_RANGE = 25        # timestamp column: an epoch integer or a UTC instant outside years 1-9999
    E_UNDECLARED = 26             # strict table: a key the schema does not declare
    E_LIST_TOO_LONG = 27          # a list node would pass 2**31-1 elements in one batch
    E_NUMBER_RANGE = 28           # a number beyond DOUBLE's range (1e400, a 400-digit integer)
    E_TOO_MANY_KEYS = 29          # the event's object has more than MAX_EVENT_KEYS keys


cdef enum:
    HASH_MIN_SLOTS = 64           # first size of the column-name hash table
    MAX_TEXT_BYTES = 2147483647   # int32 offsets: text bytes of one column in one batch
    MAX_DEPTH_LIMIT = 100000      # largest max_depth an Encoder accepts
    MAX_LIST_ELEMENTS = 2147483647  # int32 offsets: elements of one list node in one batch
    # Width of one event (the reference spells out the same numbers):
    MAX_EVENT_KEYS = 10000        # keys of the top-level object (repeats count); nesting is max_depth
    QUOTED_VALUE_BYTES = 64       # = reasons.QUOTED_VALUE_BYTES: a value's bytes quoted in a reason
