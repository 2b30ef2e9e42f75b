"""Pure-Python twin of ``_index_c``: per-ledger facts read in place."""

from __future__ import annotations

import struct
from hashlib import sha256

from ..errors import HashError, XdrError
from . import _walk_gen_py as gen
from ._frame_py import _varint, raw_ledger_frame
from ._walk_py import _State
from .codes import WALK_ERRORS

_TRUNC = "input ends before the value does"
_u32 = struct.Struct(">I").unpack_from
_u64 = struct.Struct(">Q").unpack_from


def _locate(b, off: int, length: int, ledger):
    n = off + length
    if off < 0 or length < 0 or n > len(b):
        raise ValueError(f"span {off}+{length} outside a {len(b)}-byte buffer")
    if length < 8:
        raise XdrError(_TRUNC, off, "LedgerCloseMeta", ledger)
    v = _u32(b, off)[0]
    hash_at = off + 4
    if v != 0:  # v0 has no ext; later arms (known or not) keep v1's prefix
        try:
            hash_at = gen.w_LedgerCloseMetaExt(b, off + 4, n, _State(8))
        except gen.WalkFailure as f:
            raise XdrError(WALK_ERRORS[f.code], f.offset, "LedgerCloseMetaExt", ledger) from None
    h = hash_at + 32
    if n - h < 36:
        raise XdrError(_TRUNC, h, "LedgerHeader", ledger)
    # The StellarValue on its own (where it ends places ledgerSeq), then the rest of the header.
    try:
        sv_end = gen.w_StellarValue(b, h + 36, n, _State(8))
    except gen.WalkFailure as f:
        raise XdrError(WALK_ERRORS[f.code], f.offset, "StellarValue", ledger) from None
    try:
        he = gen.w_LedgerHeader_after_scpValue(b, sv_end, n, _State(8))
    except gen.WalkFailure as f:
        raise XdrError(WALK_ERRORS[f.code], f.offset, "LedgerHeader", ledger) from None
    return v, hash_at, h, he, sv_end + 64


def header_span(buf, offset: int, length: int):
    return _locate(memoryview(buf).cast("B"), offset, length, None)


def index_ledgers(buf, spans, first: int = 0):
    b = memoryview(buf).cast("B")
    out = []
    for i, span in enumerate(spans, first):
        v, hash_at, h, he, seq_at = _locate(b, span[0], span[1], i)
        own = bytes(b[hash_at : hash_at + 32])
        out.append(
            (_u32(b, seq_at)[0], v, _u32(b, h)[0], own, bytes(b[h + 4 : h + 36]), sha256(b[h:he]).digest() == own)
        )
    return out


def _net_field(network) -> bytes:
    """Field 3 of a stellar.v1 RawLedger (omitted when empty), checking ``network``."""
    if not isinstance(network, str):
        raise TypeError(f"network must be a str, got {network!r}")
    net = network.encode()
    return b"\x1a" + _varint(len(net)) + net if net else b""


def _close_field(b, h: int) -> bytes:
    """Field 4 of a stellar.v1 RawLedger (omitted when zero): scpValue's txSetHash (32), then closeTime."""
    close = _u64(b, h + 68)[0]
    return b"\x20" + _varint(close) if close else b""


def frame_ledgers(buf, spans, start: int, end: int, verify: bool = True, network=None):
    b = memoryview(buf).cast("B")
    net_field = None if network is None else _net_field(network)
    if end < start or end - start + 1 != len(spans):
        raise XdrError(f"batch bounds {start}-{end} do not match its {len(spans)} ledgers", 0, "LedgerCloseMetaBatch")
    frames, first_prev, prev_hash, nbytes, fallback = [], None, None, 0, 0
    for i, span in enumerate(spans):
        off = span[0]
        _, hash_at, h, he, seq_at = _locate(b, off, span[1], i)
        seq = _u32(b, seq_at)[0]
        if seq != start + i:
            raise XdrError(
                f"ledger sequence {seq} where the batch bounds {start}-{end} put {start + i}",
                off,
                "LedgerCloseMetaBatch",
                i,
            )
        own = bytes(b[hash_at : hash_at + 32])
        if i == 0:
            first_prev = bytes(b[h + 4 : h + 36])
        if verify:
            if sha256(b[h:he]).digest() != own:
                raise HashError(f"ledger {seq}: header hash does not match SHA-256 of the header (at byte {off})")
            if prev_hash is not None and b[h + 4 : h + 36] != prev_hash:
                raise HashError(
                    f"ledger {seq}: previousLedgerHash {bytes(b[h + 4 : h + 36]).hex()} is not the hash of "
                    f"ledger {seq - 1} ({prev_hash.hex()}) (at byte {off})"
                )
        prev_hash = own
        frame = raw_ledger_frame(seq, b, off, span[1])
        if net_field is not None:
            frame += net_field + _close_field(b, h)
        nbytes += len(frame)
        fallback += bool(span[2])
        frames.append(frame)
    return frames, first_prev, prev_hash, nbytes, fallback


def _varint_at(b, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` (at most 9 bytes) and the position after it; (0, -1): none."""
    value = shift = 0
    i = pos
    while i < len(b) and i - pos < 9:
        value |= (b[i] & 0x7F) << shift
        i += 1
        if b[i - 1] < 0x80:
            return value, i
        shift += 7
    return 0, -1


def _frame_view(frame) -> memoryview:
    """The bytes of one frame, refused as the compiled typed memoryview refuses them."""
    try:
        return memoryview(frame).cast("B")
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(frame).__name__}'") from None


def v1_frames(frames, network):
    net_field = _net_field(network)
    out, nbytes = [], 0
    for i, frame in enumerate(frames):
        b = _frame_view(frame)
        n, pos = len(b), 0
        if n and b[0] == 0x08:
            value, pos = _varint_at(b, 1)
            if pos < 0 or value > 0xFFFFFFFF:
                pos = -1
        if 0 <= pos < n and b[pos] == 0x12:
            value, pos = _varint_at(b, pos + 1)
            if pos >= 0 and value != n - pos:
                pos = -1
        else:
            pos = -1
        if pos < 0:
            raise ValueError(f"frame {i} is not a RawLedger frame (a sequence, then the ledger to its end)")
        h = _locate(b, pos, n - pos, i)[2]
        f = bytes(b) + net_field + _close_field(b, h)
        nbytes += len(f)
        out.append(f)
    return out, nbytes


def raw_frames(frames):
    out, nbytes = [], 0
    for i, frame in enumerate(frames):
        b = _frame_view(frame)
        n, pos, value = len(b), -1, 0
        if n and b[0] == 0x08:
            value, pos = _varint_at(b, 1)
            if pos >= 0 and value > 0xFFFFFFFF:
                pos = -1
        if 0 <= pos < n and b[pos] == 0x12:
            value, pos = _varint_at(b, pos + 1)
            if pos >= 0 and value > n - pos:
                pos = -1
        else:
            pos = -1
        if pos < 0:
            raise ValueError(
                f"frame {i} is not a stellar.v1 RawLedger frame (a sequence, then the ledger, then the rest)"
            )
        f = bytes(b[: pos + value])
        nbytes += len(f)
        out.append(f)
    return out, nbytes
