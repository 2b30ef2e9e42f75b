from libc.stdint cimport uint8_t, uint32_t

cdef extern from "stellar_live_source/core/_xdr.h":
    uint32_t rd32 "sls_rd32"(const uint8_t* b) noexcept nogil
    bint zeros "sls_zeros"(const uint8_t* b, Py_ssize_t n) noexcept nogil
    # Checked only in debug builds; free otherwise.
    void invariant "SLS_INVARIANT"(bint cond) noexcept nogil
    const int DEBUG_BUILD "SLS_DEBUG_BUILD"
