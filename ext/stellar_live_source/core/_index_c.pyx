"""Ledger-sequence indexing: the facts of each ledger the stream needs (sequence,
LedgerCloseMeta version, protocol, hash, previous hash, and whether the hash
is SHA-256 of the header), read in place from spans the walker found.

A LedgerCloseMeta starts with its arm (4 bytes); v1 and v2 then carry an
``ext`` (LedgerCloseMetaExt, 4 bytes or more), all three then the LedgerHeaderHistoryEntry: hash (32), then the
LedgerHeader: ledgerVersion (4), previousLedgerHash (32), StellarValue
(variable), txSetResultHash and bucketListHash (64), ledgerSeq (4), ...
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from stellar_live_source.core._frame_c cimport frame_c
from stellar_live_source.core._prefault cimport prefault

from stellar_live_source.core._walk_c cimport (
    WalkState, header_hash_is, w_LedgerCloseMetaExt, w_LedgerHeader_after_scpValue, w_StellarValue,
)
from stellar_live_source.core._xdr cimport invariant, rd32
from stellar_live_source.core.codes import WALK_ERRORS
from stellar_live_source.errors import HashError, XdrError

_TRUNC = "input ends before the value does"


cdef struct Located:
    uint32_t v  # the LedgerCloseMeta arm
    Py_ssize_t hash_at, h, he, seq_at  # header hash, header start and end, ledgerSeq


cdef int _locate(const uint8_t[::1] b, Py_ssize_t off, Py_ssize_t length, object ledger, Located* at) except -1:
    """Where the header parts of the ledger at ``off`` are."""
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
    # The StellarValue on its own (where it ends places ledgerSeq), then the rest of the header.
    cdef Py_ssize_t sv_end = w_StellarValue(&b[0], h + 36, n, &st)
    if sv_end < 0:
        raise XdrError(WALK_ERRORS[st.code], st.offset, "StellarValue", ledger)
    cdef Py_ssize_t he = w_LedgerHeader_after_scpValue(&b[0], sv_end, n, &st)
    if he < 0:
        raise XdrError(WALK_ERRORS[st.code], st.offset, "LedgerHeader", ledger)
    # The header walk passed, so ledgerSeq (after the StellarValue and two hashes) is inside it.
    invariant(off < hash_at and hash_at + 32 == h and h + 36 <= sv_end and sv_end + 68 <= he and he <= n)
    at.v, at.hash_at, at.h, at.he, at.seq_at = v, hash_at, h, he, sv_end + 64
    return 0


def header_span(buf, Py_ssize_t offset, Py_ssize_t length):
    """``(lcm_v, hash_at, header_start, header_end, seq_at)``: where the parts
    of the ledger header sit, for tools that rewrite headers."""
    cdef Located at
    _locate(buf, offset, length, None, &at)
    return at.v, at.hash_at, at.h, at.he, at.seq_at


def index_ledgers(buf, spans, Py_ssize_t first=0):
    """One ``(seq, lcm_v, protocol, hash, prev, hash_ok)`` per ``(offset, length, ...)`` span."""
    cdef const uint8_t[::1] b = buf
    cdef const char* c = <const char*>&b[0] if b.shape[0] else NULL
    cdef Py_ssize_t i = first
    cdef Located at
    out = []
    for span in spans:
        _locate(b, span[0], span[1], i, &at)
        own = PyBytes_FromStringAndSize(c + at.hash_at, 32)
        out.append((rd32(&b[at.seq_at]), at.v, rd32(&b[at.h]), own, PyBytes_FromStringAndSize(c + at.h + 4, 32),
                    header_hash_is(&b[0], at.h, at.he, <const uint8_t*>c + at.hash_at, buf)))
        i += 1
    return out


cdef enum:
    _NOGIL_COPY = 1 << 16  # as _frame_c: a run this big is copied without the GIL


cdef inline uint64_t _close_time(const uint8_t[::1] b, Located* at) noexcept:
    """scpValue.closeTime of a located ledger: txSetHash (32), then closeTime;
    the StellarValue walk passed, so it is inside the buffer."""
    return (<uint64_t>rd32(&b[at.h + 68]) << 32) | rd32(&b[at.h + 72])


cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef Py_ssize_t _put_varint(unsigned char* p, uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        p[n] = <unsigned char>(v | 0x80)
        n += 1
        v >>= 7
    p[n] = <unsigned char>v
    return n + 1


cdef bytes _v1_frame(uint32_t sequence, const unsigned char* data, Py_ssize_t length, bytes net, uint64_t close):
    """The stellar.v1 RawLedger frame of one ledger, as ``v1_frames`` makes of
    ``frame_c(sequence, data, length)``: that frame, then ``network`` (3) and
    ``closed_at`` (4), each omitted when empty or zero."""
    cdef Py_ssize_t nlen = len(net), head = 0, size
    cdef bytes out
    cdef unsigned char* p
    if sequence:
        head += 1 + _varint_size(sequence)
    if length:
        head += 1 + _varint_size(<uint64_t>length)
    size = head + length
    if nlen:
        size += 1 + _varint_size(<uint64_t>nlen) + nlen
    if close:
        size += 1 + _varint_size(close)
    out = PyBytes_FromStringAndSize(NULL, size)
    p = <unsigned char*>PyBytes_AS_STRING(out)
    if sequence:
        p[0] = 0x08
        p += 1 + _put_varint(p + 1, sequence)
    if length:
        p[0] = 0x12
        p += 1 + _put_varint(p + 1, <uint64_t>length)
        if length >= _NOGIL_COPY:
            with nogil:
                prefault(p, length)
                memcpy(p, data, length)
        else:
            memcpy(p, data, length)
        p += length
    if nlen:
        p[0] = 0x1A
        p += 1 + _put_varint(p + 1, <uint64_t>nlen)
        memcpy(p, <const char*>net, nlen)
        p += nlen
    if close:
        p[0] = 0x20
        _put_varint(p + 1, close)
    return out


def frame_ledgers(buf, spans, uint32_t start, uint32_t end, bint verify=True, network=None):
    """The RawLedger frames of a batch's ledgers, checked one by one on the
    way: the batch bounds ``start``-``end`` number the spans; each ledger's
    sequence must be its number (XdrError) and, with ``verify``, its header
    must hash to its hash and name the previous ledger's (HashError).
    With ``network`` (a str), the ``stellar.v1`` RawLedger frames instead,
    as ``v1_frames`` would make of the RawLedger ones, the ledger copied
    once, straight out of ``buf``.

    Returns ``(frames, first_prev, last_hash, nbytes, fallback)``: what a
    stream needs of an object, with no Python object per ledger but its frame.
    """
    cdef const uint8_t[::1] b = buf
    cdef const char* c = <const char*>&b[0] if b.shape[0] else NULL
    cdef Py_ssize_t i, count = len(spans), off, nbytes = 0, fallback = 0
    cdef uint32_t seq
    cdef Located at
    cdef bytes own, frame, prev_hash = None, first_prev = None
    cdef bytes net = None
    cdef bint v1 = network is not None
    if v1:
        if not isinstance(network, str):
            raise TypeError(f"network must be a str, got {network!r}")
        net = (<str>network).encode()
    if end < start or <int64_t>end - <int64_t>start + 1 != count:
        raise XdrError(f"batch bounds {start}-{end} do not match its {count} ledgers", 0, "LedgerCloseMetaBatch")
    frames = []
    for i in range(count):
        span = spans[i]
        off = span[0]
        _locate(b, off, span[1], i, &at)
        seq = rd32(&b[at.seq_at])
        if seq != start + i:
            raise XdrError(f"ledger sequence {seq} where the batch bounds {start}-{end} put {start + i}",
                           off, "LedgerCloseMetaBatch", i)
        own = PyBytes_FromStringAndSize(c + at.hash_at, 32)
        if i == 0:
            first_prev = PyBytes_FromStringAndSize(c + at.h + 4, 32)
        if verify:
            if not header_hash_is(&b[0], at.h, at.he, <const uint8_t*>c + at.hash_at, buf):
                raise HashError(f"ledger {seq}: header hash does not match SHA-256 of the header (at byte {off})")
            if prev_hash is not None and memcmp(c + at.h + 4, <const char*>prev_hash, 32) != 0:
                raise HashError(
                    f"ledger {seq}: previousLedgerHash {(c + at.h + 4)[:32].hex()} is not the hash of ledger "
                    f"{seq - 1} ({prev_hash.hex()}) (at byte {off})")
        prev_hash = own
        if v1:
            frame = _v1_frame(seq, <const unsigned char*>c + off, span[1], net, _close_time(b, &at))
        else:
            frame = frame_c(seq, <const unsigned char*>c + off, span[1])
        nbytes += len(frame)
        fallback += <bint>span[2]
        frames.append(frame)
    return frames, first_prev, prev_hash, nbytes, fallback


cdef Py_ssize_t _varint_at(const uint8_t[::1] b, Py_ssize_t pos, uint64_t* out):
    """The varint at ``pos`` (at most 9 bytes) into ``out``; the position after it, -1: none."""
    cdef uint64_t value = 0
    cdef unsigned int shift = 0
    cdef Py_ssize_t i = pos
    while i < b.shape[0] and i - pos < 9:
        value |= <uint64_t>(b[i] & 0x7F) << shift
        i += 1
        if b[i - 1] < 0x80:
            out[0] = value
            return i
        shift += 7
    return -1


def v1_frames(frames, network):
    """The ``stellar.v1`` RawLedger frames of an object's RawLedger frames:
    each frame (fields 1 and 2) followed by ``network`` (3) and ``closed_at``
    (4, the header's scpValue.closeTime, read in place), both omitted when
    zero as proto3 does. Returns ``(frames, nbytes)``."""
    cdef const uint8_t[::1] b
    cdef Py_ssize_t i = 0, pos, n, extra, size
    cdef uint64_t value, close
    cdef Located at
    cdef bytes net, out
    cdef unsigned char* p
    cdef const uint8_t* src
    cdef unsigned char tail[32]
    cdef Py_ssize_t net_head = 0, nbytes = 0
    if not isinstance(network, str):
        raise TypeError(f"network must be a str, got {network!r}")
    net = (<str>network).encode()
    if len(net):
        tail[0] = 0x1A
        net_head = 1 + _put_varint(tail + 1, <uint64_t>len(net))
    result = []
    for frame in frames:
        b = frame
        n = b.shape[0]
        pos = 0
        if n and b[0] == 0x08:
            pos = _varint_at(b, 1, &value)
            if pos < 0 or value > 0xFFFFFFFF:
                pos = -1
        if pos >= 0 and pos < n and b[pos] == 0x12:
            pos = _varint_at(b, pos + 1, &value)
            if pos >= 0 and value != <uint64_t>(n - pos):
                pos = -1
        else:
            pos = -1
        if pos < 0:
            raise ValueError(f"frame {i} is not a RawLedger frame (a sequence, then the ledger to its end)")
        _locate(b, pos, n - pos, i, &at)
        close = _close_time(b, &at)
        extra = net_head + len(net)
        size = 0
        if close:
            tail[net_head] = 0x20  # scratch past the network's head; the network bytes go between
            size = _put_varint(tail + net_head + 1, close) + 1
        out = PyBytes_FromStringAndSize(NULL, n + extra + size)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        src = &b[0]
        if n >= _NOGIL_COPY:
            with nogil:
                prefault(p, n)
                memcpy(p, src, n)
        else:
            memcpy(p, src, n)
        p += n
        if net_head:
            memcpy(p, tail, net_head)
            memcpy(p + net_head, <const char*>net, len(net))
            p += extra
        if size:
            memcpy(p, tail + net_head, size)
        nbytes += n + extra + size
        result.append(out)
        i += 1
    return result, nbytes


def raw_frames(frames):
    """The RawLedger frames of an object's ``stellar.v1`` RawLedger frames:
    the prefix of each (fields 1 and 2) that ``v1_frames`` appended to, cut
    out, so that an object decoded for a v1 call serves raw calls too.
    Returns ``(frames, nbytes)``."""
    cdef const uint8_t[::1] b
    cdef Py_ssize_t i = 0, pos, n, nbytes = 0
    cdef uint64_t value
    cdef bytes out
    cdef unsigned char* p
    cdef const uint8_t* src
    result = []
    for frame in frames:
        b = frame
        n = b.shape[0]
        pos = -1
        if n and b[0] == 0x08:
            pos = _varint_at(b, 1, &value)
            if pos >= 0 and value > 0xFFFFFFFF:
                pos = -1
        if pos >= 0 and pos < n and b[pos] == 0x12:
            pos = _varint_at(b, pos + 1, &value)
            if pos >= 0 and value > <uint64_t>(n - pos):
                pos = -1
        else:
            pos = -1
        if pos < 0:
            raise ValueError(f"frame {i} is not a stellar.v1 RawLedger frame (a sequence, then the ledger, then the rest)")
        pos += <Py_ssize_t>value
        out = PyBytes_FromStringAndSize(NULL, pos)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        src = &b[0]
        if pos >= _NOGIL_COPY:
            with nogil:
                prefault(p, pos)
                memcpy(p, src, pos)
        else:
            memcpy(p, src, pos)
        nbytes += pos
        result.append(out)
        i += 1
    return result, nbytes
