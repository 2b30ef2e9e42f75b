cdef extern from "stellar_live_source/core/_prefault.h":
    # Populate a big buffer's fresh pages at once; bytes populated (0: nothing to do).
    size_t prefault "sls_prefault"(void* p, size_t n) noexcept nogil
    size_t prefaulted "sls_prefaulted"
