/* Big-endian reads for the XDR walker and indexer; every caller has already
   checked that the bytes are there. */
#ifndef SLS_XDR_H
#define SLS_XDR_H
#include <stdint.h>
#include <string.h>
#include <Python.h>

static inline uint32_t sls_rd32(const uint8_t *b) {
    uint32_t v;
    memcpy(&v, b, 4);
#if defined(_MSC_VER)
    return _byteswap_ulong(v);
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return v;
#else
    return __builtin_bswap32(v);
#endif
}

/* Debug-only invariant checks (build with STELLAR_LIVE_SOURCE_DEBUG=1). */
#ifdef SLS_CORE_DEBUG
#include <stdio.h>
#include <stdlib.h>
#define SLS_DEBUG_BUILD 1
#define SLS_INVARIANT(cond)                                                              \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "stellar_live_source core invariant failed: %s (%s:%d)\n", \
                    #cond, __FILE__, __LINE__);                                          \
            abort();                                                                     \
        }                                                                                \
    } while (0)
#else
#define SLS_DEBUG_BUILD 0
#define SLS_INVARIANT(cond) ((void)0)
#endif

static inline int sls_zeros(const uint8_t *b, Py_ssize_t n) {
    while (n-- > 0)
        if (*b++) return 0;
    return 1;
}
#endif
