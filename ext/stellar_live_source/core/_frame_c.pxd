from libc.stdint cimport uint32_t


# For other compiled modules that already hold the decompressed buffer: the
# wire bytes of RawLedger(sequence, data[:length]), no argument checks.
cdef bytes frame_c(uint32_t sequence, const unsigned char* data, Py_ssize_t length)
