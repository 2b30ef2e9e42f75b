from libc.stdint cimport uint8_t, uint32_t

cdef struct WalkState:
    int code        # an E_* code of xdrgen.plan, 0 while all is well
    int tid         # the type being read when it failed (index in TYPE_NAMES)
    Py_ssize_t offset
    int depth
    int max_depth

ctypedef Py_ssize_t (*walk_fn)(const uint8_t*, Py_ssize_t, Py_ssize_t, WalkState*) noexcept nogil

# Whether SHA-256 of b[h:he] is the 32 bytes at own (libcrypto where found, else hashlib on buf).
cdef bint header_hash_is(const uint8_t* b, Py_ssize_t h, Py_ssize_t he, const uint8_t* own, object buf) except -1

# For the indexer: the variable-length parts before and inside a ledger header
# (its StellarValue, then the rest of the header after it).
cdef Py_ssize_t w_LedgerCloseMetaExt(const uint8_t* b, Py_ssize_t p, Py_ssize_t n, WalkState* st) noexcept nogil
cdef Py_ssize_t w_StellarValue(const uint8_t* b, Py_ssize_t p, Py_ssize_t n, WalkState* st) noexcept nogil
cdef Py_ssize_t w_LedgerHeader_after_scpValue(const uint8_t* b, Py_ssize_t p, Py_ssize_t n, WalkState* st) noexcept nogil
