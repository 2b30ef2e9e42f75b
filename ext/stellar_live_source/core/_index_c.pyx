"""Ledger-sequence indexing: the facts of each ledger the stream needs (sequence,
LedgerCloseMeta version, protocol, hash, previous hash, and whether the hash
is SHA-256 of the header), read in place from spans the walker found.

A LedgerCloseMeta starts with its arm (4 bytes); v1 and v2 then carry an
``ext`` (LedgerCloseMetaExt, 4 bytes or more), all three then the LedgerHeaderHistoryEntry: hash (32), then the
LedgerHeader: ledgerVersion (4), previousLedgerHash (32), StellarValue
(variable), txSetResultHash and bucketListHash (64), ledgerSeq (4), ...
"""

from libc.stdint cimport uint8_t, uint32_t
from cpython.bytes cimport PyBytes_FromStringAndSize
from hashlib import sha256

from stellar_live_source.core._walk_c cimport WalkState, w_LedgerCloseMetaExt, w_LedgerHeader, w_StellarValue
from stellar_live_source.core._xdr cimport invariant, rd32
from stellar_live_source.core.errors import WALK_ERRORS, XdrError

_TRUNC = "input ends before the value does"


cdef tuple _locate(const uint8_t[::1] b, Py_ssize_t off, Py_ssize_t length, object ledger):
    """(lcm_v, hash_at, header_start, header_end, seq_at) of the ledger at ``off``."""
    cdef Py_ssize_t n = off + length
    cdef WalkState st
    st.code = 0
    st.depth = 0
    st.max_depth = 8
    if off < 0 or length < 0 or n > b.shape[0]:
        raise ValueError(f"span {off}+{length} outside a {b.shape[0]}-byte buffer")
    if length < 8:
        raise XdrError(_TRUNC, off, "LedgerCloseMeta", ledger)
    cdef uint32_t v = rd32(&b[off])
    # v0 has no ext; later arms (known or not) keep v1's prefix.
    cdef Py_ssize_t hash_at = off + 4
    if v != 0:
        hash_at = w_LedgerCloseMetaExt(&b[0], off + 4, n, &st)
        if hash_at < 0:
            raise XdrError(WALK_ERRORS[st.code], st.offset, "LedgerCloseMetaExt", ledger)
    cdef Py_ssize_t h = hash_at + 32
    if n - h < 36:
        raise XdrError(_TRUNC, h, "LedgerHeader", ledger)
    cdef Py_ssize_t sv_end = w_StellarValue(&b[0], h + 36, n, &st)
    if sv_end < 0:
        raise XdrError(WALK_ERRORS[st.code], st.offset, "StellarValue", ledger)
    cdef Py_ssize_t he = w_LedgerHeader(&b[0], h, n, &st)
    if he < 0:
        raise XdrError(WALK_ERRORS[st.code], st.offset, "LedgerHeader", ledger)
    # The header walk passed, so ledgerSeq (after the StellarValue and two hashes) is inside it.
    invariant(off < hash_at and hash_at + 32 == h and h + 36 <= sv_end and sv_end + 68 <= he and he <= n)
    return v, hash_at, h, he, sv_end + 64


def header_span(buf, Py_ssize_t offset, Py_ssize_t length):
    """``(lcm_v, hash_at, header_start, header_end, seq_at)``: where the parts
    of the ledger header sit, for tools that rewrite headers."""
    return _locate(buf, offset, length, None)


def index_ledgers(buf, spans, Py_ssize_t first=0):
    """One ``(seq, lcm_v, protocol, hash, prev, hash_ok)`` per ``(offset, length, ...)`` span."""
    cdef const uint8_t[::1] b = buf
    cdef const char* c = <const char*>&b[0] if b.shape[0] else NULL
    cdef Py_ssize_t i = first, hash_at, h, he, seq_at
    mv = memoryview(buf)
    out = []
    for span in spans:
        v, hash_at, h, he, seq_at = _locate(b, span[0], span[1], i)
        own = PyBytes_FromStringAndSize(c + hash_at, 32)
        out.append((rd32(&b[seq_at]), v, rd32(&b[h]), own, PyBytes_FromStringAndSize(c + h + 4, 32),
                    sha256(mv[h:he]).digest() == own))
        i += 1
    return out
