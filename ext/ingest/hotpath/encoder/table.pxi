# The table: columns by key, the current line's fields, type check and commit.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


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
