"""zstd decompression of one datalake object, pure-Python twin of ``_zstd_c``.

Same steps as the compiled module (see the note in ``ext/.../_zstd_c.pyx``): a walk
of the frame and block headers that mirrors libzstd's ZSTD_findFrameCompressedSize
(so structural errors read the same), then each frame streamed by python-zstandard's
libzstd into a buffer grown the same way, so libzstd takes the same paths and reports
the same errors. Messages match the compiled module exactly.
"""

from __future__ import annotations

import operator
import threading
from typing import TYPE_CHECKING

import zstandard

from ..errors import ZstdError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["ZSTD_VERSION", "content_size", "decompress", "prefaulted_bytes"]

ZSTD_VERSION = ".".join(map(str, zstandard.ZSTD_VERSION))

_GUESS_RATIO = 32  # first buffer for undeclared sizes: min(bound, max(32 x input, 64 KiB))
_MIN_GUESS = 64 * 1024
_BLOCK_MAX = 128 * 1024
_U64_MAX = 2**64 - 1
_MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # low 4 bits are free
_DID_SIZE = (0, 1, 2, 4)
_FCS_SIZE = (0, 2, 4, 8)
# libzstd's ZSTD_getErrorName() text for the errors the header walk can meet.
_UNSUPPORTED = "Unsupported frame parameter"
_WINDOW_TOO_LARGE = "Frame requires too much memory for decoding"
_CORRUPTION = "Data corruption detected"
_ZSTANDARD_PREFIX = "zstd decompress error: "

_local = threading.local()


class _Truncated(Exception):
    pass


class _Unknown(Exception):
    pass


def _header(mv: memoryview, pos: int, n: int) -> tuple[int, int | None, int, int]:
    """ZSTD_getFrameHeader for a zstd frame: (header size, content size, descriptor
    byte, largest block size).

    Raises _Truncated, _Unknown or ZstdError like libzstd's srcSize_wrong,
    prefix_unknown and other errors."""
    rem = n - pos
    if rem < 5:  # too short for any header: only a magic-number prefix is a truncation
        head = bytes(mv[pos:n])
        if _MAGIC.to_bytes(4, "little").startswith(head):
            raise _Truncated
        if int.from_bytes(head + _SKIPPABLE.to_bytes(4, "little")[len(head) :], "little") & ~0xF == _SKIPPABLE:
            raise _Truncated
        raise _Unknown
    magic = int.from_bytes(mv[pos : pos + 4], "little")
    if magic != _MAGIC:
        if magic & ~0xF == _SKIPPABLE:
            raise _Truncated  # a skippable frame with fewer than 8 bytes
        raise _Unknown
    fhd = mv[pos + 4]
    single = (fhd >> 5) & 1
    fcs_id = fhd >> 6
    size = 5 + (not single) + _DID_SIZE[fhd & 3] + _FCS_SIZE[fcs_id] + (single and not fcs_id)
    if rem < size:
        raise _Truncated
    if fhd & 0x08:
        raise ZstdError(f"invalid zstd frame at byte {pos}: {_UNSUPPORTED}")
    window = 0
    if not single:
        log = (mv[pos + 5] >> 3) + 10
        if log > 31:
            raise ZstdError(f"invalid zstd frame at byte {pos}: {_WINDOW_TOO_LARGE}")
        window = (1 << log) + ((1 << log) >> 3) * (mv[pos + 5] & 7)
    fcs: int | None = None
    if fcs_id or single:
        at = pos + size - max(_FCS_SIZE[fcs_id], 1)
        fcs = int.from_bytes(mv[at : pos + size], "little") + (256 if fcs_id == 1 else 0)
        if single:
            window = fcs
        if fcs == _U64_MAX:  # libzstd's ZSTD_CONTENTSIZE_UNKNOWN
            fcs = None
    return size, fcs, fhd, min(window, _BLOCK_MAX)


def _frame(mv: memoryview, pos: int, n: int) -> tuple[int, int | None, int]:
    """(compressed size, declared content size or None, output bound) of the frame at
    ``pos``; a skippable frame declares 0. Mirrors ZSTD_findFrameCompressedSize's checks
    and ZSTD_decompressBound."""
    try:
        rem = n - pos
        if rem >= 8 and int.from_bytes(mv[pos : pos + 4], "little") & ~0xF == _SKIPPABLE:
            skip = int.from_bytes(mv[pos + 4 : pos + 8], "little")
            if skip + 8 > 0xFFFFFFFF:
                raise ZstdError(f"invalid zstd frame at byte {pos}: {_UNSUPPORTED}")
            if skip + 8 > rem:
                raise _Truncated
            return skip + 8, 0, 0
        size, fcs, fhd, block_max = _header(mv, pos, n)
        p = pos + size
        blocks = 0
        while True:
            if n - p < 3:
                raise _Truncated
            block = int.from_bytes(mv[p : p + 3], "little")
            kind = (block >> 1) & 3
            if kind == 3:
                raise ZstdError(f"invalid zstd frame at byte {pos}: {_CORRUPTION}")
            csize = 1 if kind == 1 else block >> 3
            if 3 + csize > n - p:
                raise _Truncated
            p += 3 + csize
            blocks += 1
            if block & 1:
                break
        if fhd & 0x04:
            if n - p < 4:
                raise _Truncated
            p += 4
        return p - pos, fcs, blocks * block_max if fcs is None else fcs
    except _Truncated:
        raise ZstdError(f"truncated zstd frame at byte {pos} (input ends at byte {n})") from None
    except _Unknown:
        if pos == 0:
            raise ZstdError("not a zstd frame at byte 0") from None
        raise ZstdError(f"trailing {n - pos} bytes after the last zstd frame at byte {pos}") from None


def _scan(mv: memoryview) -> tuple[list[tuple[int, int, int | None]], int, bool, int]:
    """Frames as (offset, compressed size, declared size), the summed declared size,
    whether all declare one, and the summed output bound (sums saturate at 2**64 - 1
    like the compiled twin's)."""
    n = len(mv)
    if n == 0:
        raise ZstdError("empty input: no zstd frame at byte 0")
    frames = []
    total, complete, upper, pos = 0, True, 0, 0
    while pos < n:
        size, fcs, bound = _frame(mv, pos, n)
        frames.append((pos, size, fcs))
        if fcs is None:
            complete = False
        else:
            total = min(total + fcs, _U64_MAX)
        upper = min(upper + bound, _U64_MAX)
        pos += size
    return frames, total, complete, upper


def _view(data: Buffer) -> memoryview:
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise BufferError("zstd input must be a C-contiguous buffer")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def _dctx() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _grow(buf: bytearray, cap: int, need: int, limit: int) -> int:
    new = min(max(cap * 2, need), limit)
    buf.extend(bytes(new - cap))
    return new


def decompress(data: Buffer, max_size: int) -> bytes:
    """Decompress every zstd frame in ``data`` (any buffer) into one bytes of at most
    ``max_size`` bytes; raise ZstdError on invalid input or past the cap."""
    max_size = operator.index(max_size)
    if max_size < 0:
        raise ValueError("max_size must be >= 0")
    mv = _view(data)
    frames, declared, complete, bound = _scan(mv)
    if declared > max_size:
        raise ZstdError(f"declared content size {declared} exceeds the cap of {max_size} bytes")
    over = f"decompressed size exceeds the cap of {max_size} bytes"
    limit = max_size + 1  # holding limit bytes means over the cap
    cap = declared if complete else min(bound, max(min(len(mv), limit // _GUESS_RATIO) * _GUESS_RATIO, _MIN_GUESS))
    cap = max(min(cap, limit), 1)
    buf = bytearray(cap)
    opos = 0
    dctx = _dctx()
    for pos, size, fcs in frames:
        if opos == cap:  # the same growth points as _zstd_c: libzstd's path depends on the room
            cap = _grow(buf, cap, 0, limit)
        if fcs is not None and fcs > cap - opos:  # room for one in-place pass
            if fcs > max_size - opos:
                raise ZstdError(over)
            cap = _grow(buf, cap, opos + fcs, limit)
        with dctx.stream_reader(mv[pos : pos + size], read_across_frames=False) as reader:
            while True:
                if opos == cap:  # also: readinto() into no room would read as the end of the frame
                    if cap == limit:
                        raise ZstdError(over)
                    cap = _grow(buf, cap, 0, limit)
                with memoryview(buf) as whole, whole[opos:] as dst:
                    try:
                        got = reader.readinto(dst)
                    except zstandard.ZstdError as exc:
                        reason = str(exc).removeprefix(_ZSTANDARD_PREFIX)
                        raise ZstdError(f"invalid zstd frame at byte {pos}: {reason}") from None
                if got == 0:  # end of frame: _scan proved the input holds all of it
                    break
                opos += got
        if opos > max_size:
            raise ZstdError(over)
    del buf[opos:]
    return bytes(buf)


def content_size(data: Buffer) -> int | None:
    """Summed declared content size of the frames in ``data``, None if one does not declare it."""
    _, declared, complete, _ = _scan(_view(data))
    return declared if complete else None


def prefaulted_bytes() -> int:
    """Always 0: the pure twin leaves every page fault to the kernel (see ``_zstd_c``)."""
    return 0
