# A LineError as its reason text (with the GIL); the texts are ingest.hotpath.reasons'.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


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
