/* Fresh pages for a big buffer in one madvise(MADV_POPULATE_WRITE) instead of
   one page fault each. A fresh process's heap grows while its cache fills, and
   every new 4 KiB page then costs a fault; populating a range costs less per
   page (docs/benchmarks.md). Only fresh pages are worth it (populating resident
   ones costs for nothing), so the buffer's residency is asked first: the
   heap grows upward, so a big block is resident up to some page and fresh
   after it. Linux 5.14+; elsewhere, or where the kernel refuses, a no-op. */
#ifndef SLS_PREFAULT_H
#define SLS_PREFAULT_H
#include <stddef.h>
#include <stdint.h>

#define SLS_PREFAULT_MIN ((size_t)1 << 20) /* smaller blocks: a few faults, not worth two syscalls */

#if defined(__linux__)
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static int sls_prefault_on = 1; /* cleared once the kernel says it cannot */
static size_t sls_prefaulted = 0; /* bytes populated so far, per module (tests read it) */

static inline int sls_resident(uintptr_t page_at, size_t page) {
    unsigned char v = 1; /* on error, count it resident: do nothing */
    (void)mincore((void *)page_at, page, &v);
    return v & 1;
}

/* Returns how many bytes it populated. Safe without the GIL. */
static inline size_t sls_prefault(void *p, size_t n) {
    size_t page, lo, hi, mid;
    uintptr_t a, e;
    if (!sls_prefault_on || n < SLS_PREFAULT_MIN) return 0;
    page = (size_t)sysconf(_SC_PAGESIZE);
    a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    e = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
    if (e <= a || sls_resident(e - page, page)) return 0;
    /* The first fresh page: the last page is fresh; search for the boundary. */
    lo = 0;
    hi = (e - a) / page - 1;
    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (sls_resident(a + mid * page, page)) lo = mid + 1;
        else hi = mid;
    }
    a += lo * page;
    /* In steps of SLS_PREFAULT_MIN: the call holds the address space's lock, and
       another thread growing the heap (brk) waits for it. */
    for (uintptr_t at = a; at < e; at += SLS_PREFAULT_MIN) {
        size_t step = e - at < SLS_PREFAULT_MIN ? e - at : SLS_PREFAULT_MIN;
        if (madvise((void *)at, step, MADV_POPULATE_WRITE) != 0) {
            if (errno == EINVAL || errno == ENOSYS || errno == EPERM) sls_prefault_on = 0;
            e = at;
            break;
        }
    }
    if (e <= a) return 0;
#if defined(__GNUC__)
    __atomic_add_fetch(&sls_prefaulted, e - a, __ATOMIC_RELAXED);
#else
    sls_prefaulted += e - a;
#endif
    return e - a;
}
#else
static size_t sls_prefaulted = 0;
static inline size_t sls_prefault(void *p, size_t n) {
    (void)p;
    (void)n;
    return 0;
}
#endif
#endif
