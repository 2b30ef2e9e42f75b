"""Finds the exact byte span of every LedgerCloseMeta in a buffer, without
building a Python object per XDR value.

XDR has no length prefixes on structs and unions, so the only way to know where
a ledger ends is to walk the whole grammar. The per-type walkers are generated
(``_walk_gen.pxi``, by ``python -m stellar_live_source.xdrgen``); this file is
the hand-written driver around them: batches, error reports, and the
hash-chain fallback for union arms newer than the grammar. Its pure-Python twin
is ``stellar_live_source.core._walk_py``.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcmp
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer

from hashlib import sha256

from stellar_live_source.core.codes import E_UNKNOWN_ARM, WALK_ERRORS
from stellar_live_source.errors import XdrError

from stellar_live_source.core._xdr cimport DEBUG_BUILD, invariant, rd32, zeros


cdef inline Py_ssize_t fail(WalkState* st, int code, int tid, Py_ssize_t off) noexcept nogil:
    st.code = code
    st.tid = tid
    st.offset = off
    return -1


include "_walk_gen.pxi"

DEFAULT_MAX_DEPTH = 512
#: True in builds with the debug-only invariant checks (STELLAR_LIVE_SOURCE_DEBUG=1)
DEBUG = bool(DEBUG_BUILD)
_TYPE_IDS = {name: i for i, name in enumerate(TYPE_NAMES)}
# A v1/v2 LedgerCloseMeta starts: arm (4), ext (LedgerCloseMetaExt, 4 or
# more), hash (32), then the header: ledgerVersion (4), previousLedgerHash.
cdef enum:
    MAX_EXT = 64  # the largest ext the fallback looks for when it meets an unknown arm


cdef object _error(WalkState* st, object ledger):
    return XdrError(WALK_ERRORS[st.code], st.offset, TYPE_NAMES[st.tid], ledger)


cdef class _View:
    """A read-only byte view of any buffer, released when dropped."""
    cdef Py_buffer view
    cdef const uint8_t* b
    cdef Py_ssize_t n

    def __cinit__(self, obj):
        PyObject_GetBuffer(obj, &self.view, PyBUF_SIMPLE)
        self.b = <const uint8_t*>self.view.buf
        self.n = self.view.len

    def __dealloc__(self):
        PyBuffer_Release(&self.view)


# Header hashes, for the index and the hash-chain fallback. A hashlib object
# per header costs several times the digest of a 300-byte header, in Python
# calls; OpenSSL's SHA256_Init/Update/Final, from the libcrypto hashlib itself
# loaded, cost about the digest (its one-shot SHA256 goes through EVP and is
# slower; docs/benchmarks.md).
# Used only if they give the known digest of "abc"; else (no _hashlib,
# Windows, a libcrypto without them) hashlib, as before. SHA256 names the one
# in use.
ctypedef int (*sha_init_fn)(void* ctx) noexcept nogil
ctypedef int (*sha_update_fn)(void* ctx, const void* d, size_t n) noexcept nogil
ctypedef int (*sha_final_fn)(unsigned char* md, void* ctx) noexcept nogil
cdef sha_init_fn _sha_init = NULL
cdef sha_update_fn _sha_update = NULL
cdef sha_final_fn _sha_final = NULL

cdef struct ShaCtx:  # room for SHA256_CTX (112 bytes in OpenSSL 1.1 and 3) and then some
    uint64_t words[64]

_ABC = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def _find_libcrypto_sha256():
    try:
        import ctypes
        import _hashlib
        lib = ctypes.CDLL(_hashlib.__file__)  # its dependencies' symbols too: the libcrypto it uses
        return [ctypes.cast(getattr(lib, f"SHA256_{part}"), ctypes.c_void_p).value for part in ("Init", "Update", "Final")]
    except (ImportError, OSError, AttributeError):
        return None


cdef bint _sha256(const void* d, size_t n, unsigned char* md) noexcept nogil:
    cdef ShaCtx ctx
    return _sha_init(&ctx) == 1 and _sha_update(&ctx, d, n) == 1 and _sha_final(md, &ctx) == 1


cdef bint _take(object found):
    global _sha_init, _sha_update, _sha_final
    cdef unsigned char md[32]
    cdef bytes expected = _ABC
    if not found or not all(found):
        return False
    _sha_init = <sha_init_fn><uintptr_t>found[0]
    _sha_update = <sha_update_fn><uintptr_t>found[1]
    _sha_final = <sha_final_fn><uintptr_t>found[2]
    if not _sha256(<const char*>b"abc", 3, md) or memcmp(md, <const char*>expected, 32) != 0:
        _sha_init = NULL
    return _sha_init != NULL


SHA256 = "libcrypto" if _take(_find_libcrypto_sha256()) else "hashlib"


cdef bint header_hash_is(const uint8_t* b, Py_ssize_t h, Py_ssize_t he, const uint8_t* own, object buf) except -1:
    """Whether SHA-256 of ``b[h:he]`` is the 32 bytes at ``own``; ``b`` points
    into ``buf``, which hashlib reads where libcrypto is not to be had."""
    cdef unsigned char md[32]
    cdef bytes digest
    # A few hundred bytes: not worth letting the GIL go.
    if _sha_init != NULL and _sha256(b + h, he - h, md):
        if DEBUG_BUILD:
            digest = sha256(memoryview(buf)[h:he]).digest()
            invariant(memcmp(md, <const char*>digest, 32) == 0)
        return memcmp(md, own, 32) == 0
    digest = sha256(memoryview(buf)[h:he]).digest()
    return memcmp(<const char*>digest, own, 32) == 0


cdef Py_ssize_t _hashed_header(_View v, Py_ssize_t p, Py_ssize_t n):
    """With a v1/v2 prefix at ``p``: where its hash starts, if the header
    that follows hashes to it; else -1."""
    cdef WalkState st
    st.code = 0
    st.depth = 0
    st.max_depth = 8
    cdef Py_ssize_t h = w_LedgerCloseMetaExt(v.b, p + 4, n, &st)
    if h < 0 or n - h < 32:
        return -1
    cdef Py_ssize_t end = w_LedgerHeader(v.b, h + 32, n, &st)
    if end < 0:
        return -1
    return h if header_hash_is(v.b, h + 32, end, v.b + h, v.view.obj) else -1


cdef Py_ssize_t _delimit_by_hash(_View v, Py_ssize_t p, Py_ssize_t n, bint last) except -2:
    """The end of the ledger at ``p`` found through the hash chain, or -1.

    Assumes the v1/v2 prefix; the ledger is accepted only when its header
    hashes to its hash, and it ends where the next ledger's header names that
    hash as previousLedgerHash (and hashes right itself).
    """
    if n - p < 8:
        return -1
    cdef Py_ssize_t h = _hashed_header(v, p, n)
    if h < 0:
        return -1
    if last:
        return n
    own = bytes(v.b[h:h + 32])
    cdef Py_ssize_t base = h + 32 + 36, q, s, k
    rest = bytes(v.b[base:n])
    found = rest.find(own)
    while found >= 0:
        q = base + found  # a candidate previousLedgerHash of the next ledger
        for k in range(4, MAX_EXT + 4, 4):  # its ext's size is not known yet
            s = q - 4 - 32 - k - 4
            if s > h and _hashed_header(v, s, n) == s + 4 + k:
                return s
        found = rest.find(own, found + 1)
    return -1


cdef list _split(_View v, Py_ssize_t p, Py_ssize_t n, Py_ssize_t count, int max_depth, bint fallback, Py_ssize_t first):
    """Spans of ``count`` consecutive ledgers from ``p`` that must end at ``n``."""
    cdef WalkState st
    cdef Py_ssize_t i, q
    spans = []
    for i in range(count):
        st.code = 0
        st.depth = 0
        st.max_depth = max_depth
        with nogil:
            q = w_LedgerCloseMeta(v.b, p, n, &st)
        # A walk either fails with its state filled, or moves forward within bounds.
        invariant((q < 0 and st.code != 0) or (q > p and q <= n and st.code == 0 and st.depth == 0))
        flagged = False
        if q < 0:
            if not (fallback and st.code == E_UNKNOWN_ARM):
                raise _error(&st, first + i)
            q = _delimit_by_hash(v, p, n, i == count - 1)
            if q < 0:
                raise _error(&st, first + i)
            flagged = True
            invariant(q > p and q <= n)
        spans.append((p, q - p, flagged))
        p = q
    if p != n:
        raise XdrError(f"{n - p} bytes after the last ledger", p, "LedgerCloseMeta", None)
    return spans


def split_batch(buf, int max_depth=DEFAULT_MAX_DEPTH, bint fallback=False):
    """Split a decompressed LedgerCloseMetaBatch.

    Returns ``(start_sequence, end_sequence, spans)``; ``spans`` holds one
    ``(offset, length, fallback)`` per ledger, ``fallback`` true where the
    hash chain (not the grammar) delimited it.
    """
    cdef _View v = _View(buf)
    if v.n < 12:
        raise XdrError("input ends before the value does", 0, "LedgerCloseMetaBatch", None)
    start = rd32(v.b)
    end = rd32(v.b + 4)
    cdef uint32_t count = rd32(v.b + 8)
    if <uint64_t>count * 4 > <uint64_t>(v.n - 12):
        raise XdrError("input ends before the value does", 8, "LedgerCloseMetaBatch", None)
    return start, end, _split(v, 12, v.n, count, max_depth, fallback, 0)


def split_ledgers(buf, Py_ssize_t offset=0, Py_ssize_t end=-1, Py_ssize_t count=1,
                  int max_depth=DEFAULT_MAX_DEPTH, bint fallback=False, Py_ssize_t first=0):
    """Spans of ``count`` LedgerCloseMetas laid end to end in ``buf[offset:end]``."""
    cdef _View v = _View(buf)
    if end < 0:
        end = v.n
    if not 0 <= offset <= end <= v.n:
        raise ValueError(f"bad range {offset}..{end} of a {v.n}-byte buffer")
    return _split(v, offset, end, count, max_depth, fallback, first)


def walk_type(str name, buf, int max_depth=DEFAULT_MAX_DEPTH):
    """Where one value of the XDR type ``name`` starting at byte 0 ends."""
    cdef int tid = _TYPE_IDS[name]
    cdef _View v = _View(buf)
    cdef WalkState st
    st.code = 0
    st.depth = 0
    st.max_depth = max_depth
    cdef Py_ssize_t q = WALKERS[tid](v.b, 0, v.n, &st)
    invariant((q < 0 and st.code != 0) or (0 < q <= v.n and st.depth == 0))
    if q < 0:
        raise _error(&st, None)
    return q
