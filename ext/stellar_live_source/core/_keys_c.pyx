"""Datalake object keys, compiled twin of ``_keys_py``.

Runs for every object fetched, so keys are formatted by hand into a stack
buffer (snprintf costs more than the rest of the work) and decoded once, and ``parse_key``
reads the str's code points in place instead of slicing. Behaviour, messages
included, matches ``_keys_py`` exactly.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport UINT32_MAX as _MAX, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

#: ``.xdr.zst`` since August 2025, ``.xdr.zstd`` before.
EXTENSIONS = (".xdr.zst", ".xdr.zstd")

cdef enum:
    _BUF = 96  # partition dir (31) + "/" + file name (31) + extension (9), rounded up


cdef inline const char* _ext_c(int ext) noexcept:
    if ext:
        return b".xdr.zstd"
    return b".xdr.zst"


cdef inline uint32_t _cap(uint64_t v) noexcept:
    return <uint32_t>(v if v < _MAX else _MAX)


cdef const char* _HEX = b"0123456789ABCDEF"


cdef inline char* _put_hex8(char* p, uint32_t v) noexcept:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = _HEX[v & 15]
        v >>= 4
    return p + 8


cdef inline char* _put_dec(char* p, uint32_t v) noexcept:
    cdef char digits[10]
    cdef int n = 0
    while True:
        digits[n] = c'0' + v % 10
        n += 1
        v //= 10
        if v == 0:
            break
    while n:
        n -= 1
        p[0] = digits[n]
        p += 1
    return p


cdef inline char* _put_range(char* p, uint32_t start, uint64_t width) noexcept:
    """``%08X--%u`` of start, then ``-%u`` of the capped end when width > 1."""
    p = _put_hex8(p, _MAX - start)
    p[0] = c'-'
    p[1] = c'-'
    p = _put_dec(p + 2, start)
    if width > 1:
        p[0] = c'-'
        p = _put_dec(p + 1, _cap(start + width - 1))
    return p


cdef int64_t _seq(object seq) except -1:
    cdef int overflow = 0
    cdef long long v
    if isinstance(seq, int):
        v = PyLong_AsLongLongAndOverflow(seq, &overflow)
        if overflow == 0 and 0 <= v <= _MAX:
            return v
    # One ValueError for negatives, overflow and non-ints alike, as in the twin.
    raise ValueError(f"ledger sequence must be an int in 0..4294967295, got {seq!r}")


cdef int _ext_index(object extension) except -1:
    if extension == ".xdr.zst":
        return 0
    if extension == ".xdr.zstd":
        return 1
    raise ValueError(f"extension must be one of {EXTENSIONS}, got {extension!r}")


cdef inline bint _match(str k, Py_ssize_t pos, const char* s, Py_ssize_t m) noexcept:
    """k[pos:pos+m] == s[:m]; the caller guarantees the range is inside k."""
    cdef Py_ssize_t j
    for j in range(m):
        if k[pos + j] != <Py_UCS4>(<unsigned char>s[j]):
            return False
    return True


cdef inline bint _partition_like(str k, Py_ssize_t begin, Py_ssize_t end) noexcept:
    """Whether k[begin:end] starts like a partition folder: 8 hex digits and "--"."""
    cdef Py_ssize_t j
    cdef Py_UCS4 c
    if end - begin < 10 or k[begin + 8] != u'-' or k[begin + 9] != u'-':
        return False
    for j in range(begin, begin + 8):
        c = k[j]
        if not (u'0' <= c <= u'9' or u'A' <= c <= u'F' or u'a' <= c <= u'f'):
            return False
    return True


cdef class Layout:
    """How an exporter groups ledgers into files and files into partitions."""

    def __cinit__(self, ledgers_per_file, files_per_partition, extension=".xdr.zst"):
        # __cinit__, not __init__: an unvalidated instance would divide by zero.
        for name, value in (("ledgers_per_file", ledgers_per_file), ("files_per_partition", files_per_partition)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        per_partition = ledgers_per_file * files_per_partition
        if per_partition > _MAX:
            raise ValueError(f"ledgers_per_file * files_per_partition must fit in uint32, got {per_partition}")
        self._ext = _ext_index(extension)
        self.extension = EXTENSIONS[self._ext]
        self.ledgers_per_file = ledgers_per_file
        self.files_per_partition = files_per_partition
        self.ledgers_per_partition = per_partition

    cdef Py_ssize_t _put_partition_dir(self, char* buf, uint32_t seq) noexcept:
        if self.files_per_partition == 1:
            return 0
        return _put_range(buf, seq - seq % self.ledgers_per_partition, self.ledgers_per_partition) - buf

    cdef Py_ssize_t _put_file_name(self, char* buf, uint32_t seq, int ext) noexcept:
        cdef char* p = _put_range(buf, seq - seq % self.ledgers_per_file, self.ledgers_per_file)
        memcpy(p, _ext_c(ext), 8 + ext)
        return p + 8 + ext - buf

    cdef Py_ssize_t _put_object_key(self, char* buf, uint32_t seq, int ext) noexcept:
        cdef Py_ssize_t n = self._put_partition_dir(buf, seq)
        if n:
            buf[n] = c'/'
            n += 1
        return n + self._put_file_name(buf + n, seq, ext)

    cdef str object_key_c(self, uint32_t seq):
        cdef char buf[_BUF]
        cdef Py_ssize_t n = self._put_object_key(buf, seq, self._ext)
        return buf[:n].decode("ascii")

    def file_start(self, seq):
        cdef uint32_t s = <uint32_t>_seq(seq)
        return s - s % self.ledgers_per_file

    def file_end(self, seq):
        cdef uint32_t s = <uint32_t>_seq(seq)
        return _cap(<uint64_t>(s - s % self.ledgers_per_file) + self.ledgers_per_file - 1)

    def partition_start(self, seq):
        cdef uint32_t s = <uint32_t>_seq(seq)
        return s - s % self.ledgers_per_partition

    def partition_end(self, seq):
        cdef uint32_t s = <uint32_t>_seq(seq)
        return _cap(<uint64_t>(s - s % self.ledgers_per_partition) + self.ledgers_per_partition - 1)

    def partition_dir(self, seq):
        cdef char buf[_BUF]
        cdef Py_ssize_t n = self._put_partition_dir(buf, <uint32_t>_seq(seq))
        return buf[:n].decode("ascii")

    def file_name(self, seq, extension=None):
        cdef char buf[_BUF]
        cdef uint32_t s = <uint32_t>_seq(seq)
        cdef int ext = self._ext if extension is None else _ext_index(extension)
        return buf[:self._put_file_name(buf, s, ext)].decode("ascii")

    def object_key(self, seq, extension=None):
        cdef char buf[_BUF]
        cdef uint32_t s = <uint32_t>_seq(seq)
        cdef int ext = self._ext if extension is None else _ext_index(extension)
        return buf[:self._put_object_key(buf, s, ext)].decode("ascii")

    def parse_key(self, key):
        """``(file_start, file_end, extension)`` of a key this layout would write.

        Anything before the partition folder is taken as a prefix; a parent
        component shaped like a partition folder must be the right one.
        """
        cdef char buf[_BUF]
        cdef str k
        cdef Py_ssize_t n, slash, name, stem_end, i, parent, m
        cdef int ext
        cdef uint64_t start = 0
        cdef Py_UCS4 c
        if not isinstance(key, str):
            raise TypeError(f"key must be str, got {type(key).__name__}")
        k = <str>key
        n = len(k)
        slash = n - 1
        while slash >= 0 and k[slash] != u'/':
            slash -= 1
        name = slash + 1
        if n - name >= 8 and _match(k, n - 8, b".xdr.zst", 8):
            ext = 0
        elif n - name >= 9 and _match(k, n - 9, b".xdr.zstd", 9):
            ext = 1
        else:
            raise ValueError(f"bad datalake key {key!r} for {self!r}: no extension of {EXTENSIONS}")
        stem_end = n - 8 - ext
        i = name + 10
        if stem_end - name >= 10 and k[name + 8] == u'-' and k[name + 9] == u'-':
            while i < stem_end:
                c = k[i]
                if not u'0' <= c <= u'9':
                    break
                if i - name < 20:  # at most 10 digits count; more is rejected below
                    start = start * 10 + (<int>c - <int>u'0')
                i += 1
        if not 1 <= i - name - 10 <= 10 or start > _MAX:
            raise ValueError(f"bad datalake key {key!r} for {self!r}: malformed file name")
        # Regenerating and comparing checks hex, alignment, width and spelling at once.
        m = self._put_file_name(buf, <uint32_t>start, ext)
        if n - name != m or not _match(k, name, buf, m):
            raise ValueError(
                f"bad datalake key {key!r} for {self!r}: file name should be {buf[:m].decode('ascii')!r}"
            )
        if slash >= 0:
            parent = slash - 1
            while parent >= 0 and k[parent] != u'/':
                parent -= 1
            parent += 1
            if self.files_per_partition == 1:
                if _partition_like(k, parent, slash):
                    raise ValueError(f"bad datalake key {key!r} for {self!r}: layout has no partition folders")
            else:
                m = self._put_partition_dir(buf, <uint32_t>start)
                if not (slash - parent == m and _match(k, parent, buf, m)) and _partition_like(k, parent, slash):
                    raise ValueError(
                        f"bad datalake key {key!r} for {self!r}: "
                        f"partition folder should be {buf[:m].decode('ascii')!r}"
                    )
        return <uint32_t>start, _cap(start + self.ledgers_per_file - 1), EXTENSIONS[ext]

    def __eq__(self, other):
        if not isinstance(other, Layout):
            return NotImplemented
        return (self.ledgers_per_file, self.files_per_partition, self.extension) == (
            (<Layout>other).ledgers_per_file, (<Layout>other).files_per_partition, (<Layout>other).extension)

    def __hash__(self):
        return hash((self.ledgers_per_file, self.files_per_partition, self.extension))

    def __reduce__(self):
        return Layout, (self.ledgers_per_file, self.files_per_partition, self.extension)

    def __repr__(self):
        return (
            f"Layout(ledgers_per_file={self.ledgers_per_file}, "
            f"files_per_partition={self.files_per_partition}, extension={self.extension!r})"
        )
