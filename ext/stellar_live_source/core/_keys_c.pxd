from libc.stdint cimport uint32_t


cdef class Layout:
    cdef readonly uint32_t ledgers_per_file
    cdef readonly uint32_t files_per_partition
    cdef readonly uint32_t ledgers_per_partition
    cdef readonly str extension
    cdef int _ext  # index into EXTENSIONS

    # C-level entry points for other compiled modules: seq already validated,
    # ext is an index into EXTENSIONS; they return the length written (buf >= 96 bytes).
    cdef Py_ssize_t _put_partition_dir(self, char* buf, uint32_t seq) noexcept
    cdef Py_ssize_t _put_file_name(self, char* buf, uint32_t seq, int ext) noexcept
    cdef Py_ssize_t _put_object_key(self, char* buf, uint32_t seq, int ext) noexcept
    cdef str object_key_c(self, uint32_t seq)
