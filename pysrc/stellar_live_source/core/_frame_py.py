"""RawLedger protobuf framing, pure-Python twin of ``_frame_c``.

Builds the wire bytes of ``message RawLedger { uint32 sequence = 1; bytes
ledger_close_meta_xdr = 2; }`` straight from a decompressed buffer, so gRPC
sends them without re-serializing, and parses them back. Behaviour, messages
included, matches the compiled module exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["parse_raw_ledger", "prefaulted_bytes", "raw_ledger_frame", "raw_ledger_frames"]

_U64 = 0xFFFFFFFFFFFFFFFF


def _sequence(value: object) -> int:
    if isinstance(value, int) and 0 <= value <= 0xFFFFFFFF:
        return value
    raise ValueError(f"sequence must be an int in 0..4294967295, got {value!r}")


def _span(value: object, name: str) -> int:
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _bytes_view(buf: Buffer) -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer (what PyBUF_SIMPLE gives C)."""
    view = memoryview(buf)
    if not view.c_contiguous:
        view.release()
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    if view.format == "B" and view.ndim == 1:
        return view
    with view:
        return view.cast("B")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _frame(sequence: int, data: memoryview, offset: int, length: int) -> bytes:
    if offset + length > len(data):
        raise ValueError(f"offset {offset} + length {length} exceeds the {len(data)}-byte buffer")
    head = b""
    if sequence:
        head = b"\x08" + _varint(sequence)
    if not length:
        return head
    # bytes + memoryview copies the ledger bytes once, like the compiled memcpy.
    return head + b"\x12" + _varint(length) + data[offset : offset + length]


def raw_ledger_frame(sequence: int, buf: Buffer, offset: int, length: int) -> bytes:
    """Wire bytes of RawLedger(sequence, buf[offset:offset+length])."""
    sequence = _sequence(sequence)
    offset = _span(offset, "offset")
    length = _span(length, "length")
    with _bytes_view(buf) as data:
        return _frame(sequence, data, offset, length)


def raw_ledger_frames(
    buf: Buffer, sequences: Sequence[int], offsets: Sequence[int], lengths: Sequence[int]
) -> list[bytes]:
    """``raw_ledger_frame`` for many ledgers of one buffer."""
    if not len(sequences) == len(offsets) == len(lengths):
        raise ValueError(
            f"sequences, offsets and lengths differ in length: {len(sequences)}, {len(offsets)}, {len(lengths)}"
        )
    with _bytes_view(buf) as data:
        return [
            _frame(_sequence(s), data, _span(o, "offset"), _span(n, "length"))
            for s, o, n in zip(sequences, offsets, lengths, strict=True)
        ]


def _malformed(reason: str, pos: int) -> ValueError:
    return ValueError(f"malformed RawLedger: {reason} at byte {pos}")


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    i = pos
    while True:
        if i >= len(data):
            raise _malformed("truncated varint", pos)
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & _U64, i
        shift += 7
        if shift >= 70:
            raise _malformed("varint over 10 bytes", pos)


def parse_raw_ledger(frame: Buffer) -> tuple[int, bytes]:
    """``(sequence, ledger_close_meta_xdr)`` of RawLedger wire bytes.

    Fields may come in any order and repeat (the last wins); unknown fields of
    wire types 0, 1, 2 and 5 are skipped, as protobuf does.
    """
    sequence = 0
    ledger = b""
    with _bytes_view(frame) as data:
        end = len(data)
        pos = 0
        while pos < end:
            tag, i = _read_varint(data, pos)
            wire = tag & 7
            if tag >> 3 == 0 or tag > 0xFFFFFFFF:
                raise _malformed(f"bad tag {tag}", pos)
            if wire == 0:
                value, i = _read_varint(data, i)
                if tag == 0x08:
                    sequence = value & 0xFFFFFFFF  # uint32 keeps the low bits, as protobuf does
            elif wire == 2:
                size, i = _read_varint(data, i)
                if size > end - i:
                    raise _malformed("truncated field", i)
                if tag == 0x12:
                    ledger = bytes(data[i : i + size])
                i += size
            elif wire == 1 or wire == 5:
                size = 8 if wire == 1 else 4
                if size > end - i:
                    raise _malformed("truncated field", i)
                i += size
            else:
                raise _malformed(f"unsupported wire type {wire}", pos)
            pos = i
    return sequence, ledger


def prefaulted_bytes() -> int:
    """Always 0: the pure twin leaves every page fault to the kernel (see ``_frame_c``)."""
    return 0
