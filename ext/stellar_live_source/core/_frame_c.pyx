"""RawLedger protobuf framing, compiled twin of ``_frame_py``.

gRPC gets finished wire bytes of ``message RawLedger { uint32 sequence = 1;
bytes ledger_close_meta_xdr = 2; }``: the header is written into an
uninitialised bytes object and the ledger follows with one memcpy from the
decompressed buffer. Behaviour, messages included, matches ``_frame_py``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from stellar_live_source.core._prefault cimport prefault, prefaulted

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef enum:
    # Copies this big run without the GIL so gRPC's threads keep going; the
    # held Py_buffer keeps the source alive and unresizable meanwhile.
    _NOGIL_COPY = 1 << 16


cdef int64_t _sequence(object value) except -1:
    cdef int overflow = 0
    cdef long long v
    if isinstance(value, int):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and 0 <= v <= 0xFFFFFFFF:
            return v
    raise ValueError(f"sequence must be an int in 0..4294967295, got {value!r}")


cdef Py_ssize_t _span(object value, str name) except -1:
    cdef int overflow = 0
    cdef long long v
    if isinstance(value, int):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow > 0 or v > PY_SSIZE_T_MAX:
            return PY_SSIZE_T_MAX  # too big for C: fails the bounds check, with the twin's message
        if overflow == 0 and v >= 0:
            return <Py_ssize_t>v
    raise ValueError(f"{name} must be an int >= 0, got {value!r}")


cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline unsigned char* _put_varint(unsigned char* p, uint64_t v) noexcept nogil:
    while v >= 0x80:
        p[0] = <unsigned char>(v | 0x80)
        p += 1
        v >>= 7
    p[0] = <unsigned char>v
    return p + 1


cdef bytes frame_c(uint32_t sequence, const unsigned char* data, Py_ssize_t length):
    cdef Py_ssize_t head = 0
    cdef bytes out
    cdef unsigned char* p
    if sequence:
        head += 1 + _varint_size(sequence)
    if length:
        head += 1 + _varint_size(<uint64_t>length)
    out = PyBytes_FromStringAndSize(NULL, head + length)
    p = <unsigned char*>PyBytes_AS_STRING(out)
    if sequence:
        p[0] = 0x08
        p = _put_varint(p + 1, sequence)
    if length:
        p[0] = 0x12
        p = _put_varint(p + 1, <uint64_t>length)
        if length >= _NOGIL_COPY:
            with nogil:
                prefault(p, length)
                memcpy(p, data, length)
        else:
            memcpy(p, data, length)
    return out


cdef int _check_bounds(Py_buffer* view, Py_ssize_t off, Py_ssize_t n, object offset, object length) except -1:
    if off > view.len or n > view.len - off:
        raise ValueError(f"offset {offset} + length {length} exceeds the {view.len}-byte buffer")
    return 0


def raw_ledger_frame(sequence, buf, offset, length):
    """Wire bytes of RawLedger(sequence, buf[offset:offset+length])."""
    cdef Py_buffer view
    cdef uint32_t seq = <uint32_t>_sequence(sequence)
    cdef Py_ssize_t off = _span(offset, "offset")
    cdef Py_ssize_t n = _span(length, "length")
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        _check_bounds(&view, off, n, offset, length)
        return frame_c(seq, <const unsigned char*>view.buf + off, n)
    finally:
        PyBuffer_Release(&view)


def raw_ledger_frames(buf, sequences, offsets, lengths):
    """``raw_ledger_frame`` for many ledgers of one buffer."""
    cdef Py_buffer view
    cdef Py_ssize_t count = len(sequences), i, off, n
    cdef uint32_t seq
    cdef list out = []
    if len(offsets) != count or len(lengths) != count:
        raise ValueError(
            f"sequences, offsets and lengths differ in length: {count}, {len(offsets)}, {len(lengths)}"
        )
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        for i in range(count):
            offset = offsets[i]
            length = lengths[i]
            seq = <uint32_t>_sequence(sequences[i])
            off = _span(offset, "offset")
            n = _span(length, "length")
            _check_bounds(&view, off, n, offset, length)
            out.append(frame_c(seq, <const unsigned char*>view.buf + off, n))
    finally:
        PyBuffer_Release(&view)
    return out


cdef Py_ssize_t _read_varint(const unsigned char* data, Py_ssize_t pos, Py_ssize_t end, uint64_t* out) except -1:
    """Decodes the varint at pos into out and returns the position after it."""
    cdef uint64_t value = 0
    cdef unsigned int shift = 0
    cdef Py_ssize_t i = pos
    cdef unsigned char b
    while True:
        if i >= end:
            raise ValueError(f"malformed RawLedger: truncated varint at byte {pos}")
        b = data[i]
        i += 1
        value |= <uint64_t>(b & 0x7F) << shift
        if b < 0x80:
            out[0] = value
            return i
        shift += 7
        if shift >= 70:
            raise ValueError(f"malformed RawLedger: varint over 10 bytes at byte {pos}")


def parse_raw_ledger(frame):
    """``(sequence, ledger_close_meta_xdr)`` of RawLedger wire bytes.

    Fields may come in any order and repeat (the last wins); unknown fields of
    wire types 0, 1, 2 and 5 are skipped, as protobuf does.
    """
    cdef Py_buffer view
    cdef const unsigned char* data
    cdef Py_ssize_t pos = 0, i, end, ledger_at = 0, ledger_len = 0, size
    cdef uint64_t tag, value
    cdef uint32_t sequence = 0
    cdef int wire
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        data = <const unsigned char*>view.buf
        end = view.len
        while pos < end:
            i = _read_varint(data, pos, end, &tag)
            wire = tag & 7
            if tag >> 3 == 0 or tag > 0xFFFFFFFF:
                raise ValueError(f"malformed RawLedger: bad tag {tag} at byte {pos}")
            if wire == 0:
                i = _read_varint(data, i, end, &value)
                if tag == 0x08:
                    sequence = <uint32_t>value  # uint32 keeps the low bits, as protobuf does
            elif wire == 2:
                i = _read_varint(data, i, end, &value)
                if value > <uint64_t>(end - i):
                    raise ValueError(f"malformed RawLedger: truncated field at byte {i}")
                if tag == 0x12:
                    ledger_at = i
                    ledger_len = <Py_ssize_t>value
                i += <Py_ssize_t>value
            elif wire == 1 or wire == 5:
                size = 8 if wire == 1 else 4
                if size > end - i:
                    raise ValueError(f"malformed RawLedger: truncated field at byte {i}")
                i += size
            else:
                raise ValueError(f"malformed RawLedger: unsupported wire type {wire} at byte {pos}")
            pos = i
        # Copied once, after the loop: a repeated field 2 costs no extra copies.
        return sequence, PyBytes_FromStringAndSize(<const char*>data + ledger_at, ledger_len)
    finally:
        PyBuffer_Release(&view)


def prefaulted_bytes():
    """Bytes of fresh frame pages this module had the kernel populate in one call
    per buffer instead of one page fault each (``_prefault.h``); stays 0 where
    the kernel cannot (before Linux 5.14, other systems)."""
    return prefaulted
