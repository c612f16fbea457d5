/* What the encoder needs from the C platform: SWAR string scanning and
   strtod in the C locale (declared to Cython in _encoder.pyx). */
#ifndef INGEST_ENCODER_PLATFORM_H
#define INGEST_ENCODER_PLATFORM_H

#include <locale.h>
#include <stdlib.h>

/* Scanning strings 8 bytes at a time needs little-endian loads and ctz. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ \
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

#endif
