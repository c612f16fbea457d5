# Dates and ISO-8601 timestamps -> days / microseconds since the epoch, UTC.
# Included by _encoder.pyx, which stays one compile unit (gcc inlines across
# these files); its functions are listed in _encoder.pxd.


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
