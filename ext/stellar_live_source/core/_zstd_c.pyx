"""zstd decompression of one datalake object into one ``bytes`` (pure twin: ``_zstd_py``).

Why it is built this way:
- Objects may or may not declare their content size. A first pass reads frame and block
  headers only (ZSTD_findFrameCompressedSize) so structural errors name their offset,
  declared sizes over the cap are refused up front, and the output is sized exactly when
  all frames declare one (libzstd then decodes in one pass, in place, checking the size);
  else from the blocks' bound, at most 32x the input. Frames are streamed (ZSTD_decompressStream).
- The output is a ``bytes`` grown geometrically by _PyBytes_Resize to max_size + 1 bytes
  at most: a bomb stops at the cap, a small object gets a small buffer, and the result is
  that buffer, never a copy. A good first size matters: once glibc's mmap threshold has
  risen, realloc copies (docs/benchmarks.md).
- The GIL is released while libzstd runs, retaken only to grow the buffer.
- Contexts are pooled (under the GIL): a new one per call (~96 KB, plus an 8 MiB pubnet
  window buffer) costs more than decoding a small object. _zstd_py mirrors all of this.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.ref cimport PyObject, Py_XDECREF
from libc.limits cimport ULLONG_MAX

from stellar_live_source.includes.libzstd cimport (
    ZSTD_CONTENTSIZE_UNKNOWN, ZSTD_DCtx, ZSTD_DCtx_reset, ZSTD_createDCtx,
    ZSTD_decompressBound, ZSTD_decompressStream, ZSTD_error_prefix_unknown, ZSTD_error_srcSize_wrong,
    ZSTD_ErrorCode, ZSTD_findFrameCompressedSize, ZSTD_freeDCtx, ZSTD_getErrorCode,
    ZSTD_getErrorName, ZSTD_getFrameContentSize, ZSTD_inBuffer, ZSTD_isError, ZSTD_sizeof_DCtx,
    ZSTD_outBuffer, ZSTD_reset_session_only, ZSTD_versionString,
)

from stellar_live_source.core._prefault cimport prefault, prefaulted
from stellar_live_source.errors import ZstdError

cdef extern from "Python.h":
    PyObject* PyBytes_FromStringAndSize(const char* v, Py_ssize_t n) except NULL
    char* PyBytes_AS_STRING(PyObject* o)
    int _PyBytes_Resize(PyObject** o, Py_ssize_t n) except -1

ZSTD_VERSION = ZSTD_versionString().decode("ascii")

cdef enum:
    POOL_SIZE = 8
    # First buffer when a size is undeclared: the bound the block headers give (blocks x
    # block size), but no more than max(GUESS_RATIO x input, MIN_GUESS); ledgers compress 4-25x.
    GUESS_RATIO = 32
    MIN_GUESS = 64 * 1024
    POOL_MAX_BYTES = 16 * 1024 * 1024  # a context holding more (huge window) is not kept

cdef ZSTD_DCtx* _pool[POOL_SIZE]
cdef int _pooled = 0


cdef ZSTD_DCtx* _take_dctx() except NULL:
    global _pooled
    cdef ZSTD_DCtx* dctx
    if _pooled:
        _pooled -= 1
        return _pool[_pooled]
    dctx = ZSTD_createDCtx()
    if dctx == NULL:
        raise MemoryError()
    return dctx


cdef void _give_dctx(ZSTD_DCtx* dctx) noexcept:
    global _pooled
    if _pooled < POOL_SIZE and ZSTD_sizeof_DCtx(dctx) <= POOL_MAX_BYTES:
        _pool[_pooled] = dctx
        _pooled += 1
    else:
        ZSTD_freeDCtx(dctx)


cdef int _frame_error(size_t code, size_t pos, size_t n) except -1:
    cdef ZSTD_ErrorCode e = ZSTD_getErrorCode(code)
    if e == ZSTD_error_prefix_unknown:
        if pos == 0:
            raise ZstdError("not a zstd frame at byte 0")
        raise ZstdError(f"trailing {n - pos} bytes after the last zstd frame at byte {pos}")
    if e == ZSTD_error_srcSize_wrong:
        raise ZstdError(f"truncated zstd frame at byte {pos} (input ends at byte {n})")
    raise ZstdError(f"invalid zstd frame at byte {pos}: {ZSTD_getErrorName(code).decode()}")


cdef inline unsigned long long _add(unsigned long long a, unsigned long long b) noexcept:
    return a + b if a + b >= a else ULLONG_MAX


cdef int _scan(const char* src, size_t n, unsigned long long* declared, bint* complete,
               unsigned long long* bound) except -1:
    """Check the frame structure; sum the declared sizes and the output bounds (both
    saturating); complete = every frame declares its size."""
    cdef size_t pos = 0, size
    cdef unsigned long long fcs, total = 0, upper = 0
    complete[0] = True
    if n == 0:
        raise ZstdError("empty input: no zstd frame at byte 0")
    while pos < n:
        size = ZSTD_findFrameCompressedSize(src + pos, n - pos)
        if ZSTD_isError(size):
            _frame_error(size, pos, n)
        fcs = ZSTD_getFrameContentSize(src + pos, size)  # 0 for a skippable frame
        if fcs == ZSTD_CONTENTSIZE_UNKNOWN:
            complete[0] = False
            upper = _add(upper, ZSTD_decompressBound(src + pos, size))  # blocks x block size
        else:
            total = _add(total, fcs)
            upper = _add(upper, fcs)
        pos += size
    declared[0] = total
    bound[0] = upper
    return 0


cdef inline size_t _grown(size_t cap, size_t need, size_t limit) noexcept:
    cdef size_t c = cap * 2 if cap * 2 > need else need
    return c if c < limit else limit


cdef bytes _decompress(const char* src, size_t n, size_t max_size):
    cdef unsigned long long declared, bound, fcs
    cdef bint complete
    cdef size_t limit = max_size + 1  # holding limit bytes means over the cap
    cdef size_t cap, pos = 0, opos = 0, size, ret
    cdef ZSTD_inBuffer inb
    cdef ZSTD_outBuffer outb
    cdef ZSTD_DCtx* dctx = NULL
    cdef PyObject* res = NULL
    cdef bytes result

    _scan(src, n, &declared, &complete, &bound)
    if declared > max_size:
        raise ZstdError(f"declared content size {declared} exceeds the cap of {max_size} bytes")
    cap = <size_t>declared if complete else <size_t>min(bound, max(min(n, limit // GUESS_RATIO) * GUESS_RATIO, <size_t>MIN_GUESS))
    cap = max(min(cap, limit), <size_t>1)  # a 0-byte one would be the shared empty bytes
    dctx = _take_dctx()
    try:
        res = PyBytes_FromStringAndSize(NULL, cap)
        while pos < n:
            size = ZSTD_findFrameCompressedSize(src + pos, n - pos)
            if ZSTD_isError(size):  # passed _scan, so a bytearray changed under us
                _frame_error(size, pos, n)
            fcs = ZSTD_getFrameContentSize(src + pos, size)
            # _zstd_py must grow at the same points: libzstd's path, so its error, depends on the room.
            if opos == cap:
                cap = _grown(cap, 0, limit)
                _PyBytes_Resize(&res, cap)
            if fcs != ZSTD_CONTENTSIZE_UNKNOWN and fcs > cap - opos:
                # Room for the declared size lets libzstd decode in one pass, in place.
                if fcs > max_size - opos:
                    raise ZstdError(f"decompressed size exceeds the cap of {max_size} bytes")
                cap = _grown(cap, opos + fcs, limit)
                _PyBytes_Resize(&res, cap)
            ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only)
            inb.src = src + pos
            inb.size = size
            inb.pos = 0
            while True:
                if opos == cap:
                    if cap == limit:
                        raise ZstdError(f"decompressed size exceeds the cap of {max_size} bytes")
                    cap = _grown(cap, 0, limit)
                    _PyBytes_Resize(&res, cap)
                outb.dst = PyBytes_AS_STRING(res)
                outb.size = cap
                outb.pos = opos
                with nogil:
                    prefault(<char*>outb.dst + opos, cap - opos)
                    ret = ZSTD_decompressStream(dctx, &outb, &inb)
                opos = outb.pos
                if ZSTD_isError(ret):
                    raise ZstdError(f"invalid zstd frame at byte {pos}: {ZSTD_getErrorName(ret).decode()}")
                if ret == 0:
                    break
                if opos < cap and inb.pos == inb.size:  # cannot happen after _scan; never spin on it
                    raise ZstdError(f"truncated zstd frame at byte {pos} (input ends at byte {n})")
            if opos > max_size:
                raise ZstdError(f"decompressed size exceeds the cap of {max_size} bytes")
            pos += size
        if opos != cap:
            _PyBytes_Resize(&res, opos)
        result = <bytes>res
        return result
    finally:
        _give_dctx(dctx)
        Py_XDECREF(res)


def decompress(data, Py_ssize_t max_size):
    """Decompress every zstd frame in ``data`` (any buffer) into one bytes of at most
    ``max_size`` bytes; raise ZstdError on invalid input or past the cap."""
    cdef Py_buffer view
    if max_size < 0:
        raise ValueError("max_size must be >= 0")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _decompress(<const char*>view.buf, <size_t>view.len, <size_t>max_size)
    finally:
        PyBuffer_Release(&view)


def content_size(data):
    """Summed declared content size of the frames in ``data``, None if one does not declare it."""
    cdef Py_buffer view
    cdef unsigned long long declared, bound
    cdef bint complete
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        _scan(<const char*>view.buf, <size_t>view.len, &declared, &complete, &bound)
    finally:
        PyBuffer_Release(&view)
    return declared if complete else None


def prefaulted_bytes():
    """Bytes of fresh output pages this module had the kernel populate in one call
    per buffer instead of one page fault each (``_prefault.h``); stays 0 where
    the kernel cannot (before Linux 5.14, other systems)."""
    return prefaulted
