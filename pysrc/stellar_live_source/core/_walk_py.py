"""Pure-Python twin of ``_walk_c``: the same driver over the generated
pure-Python walkers (``_walk_gen_py``). For portability and as a reference,
not for speed."""

from __future__ import annotations

import struct
from hashlib import sha256

from ..errors import XdrError
from . import _walk_gen_py as gen
from .codes import E_UNKNOWN_ARM, WALK_ERRORS

DEFAULT_MAX_DEPTH = 512
DEBUG = False  # no debug-only invariant checks here
TYPE_NAMES = gen.TYPE_NAMES
SDK_CLASSES = gen.SDK_CLASSES
RECURSIVE = gen.RECURSIVE
SHA256 = "hashlib"  # what hashes headers
_TYPE_IDS = {name: i for i, name in enumerate(TYPE_NAMES)}
_u32 = struct.Struct(">I").unpack_from
_MAX_EXT = 64  # the largest LedgerCloseMetaExt the fallback looks for


class _State:
    __slots__ = ("depth", "max_depth")

    def __init__(self, max_depth: int):
        self.depth = 0
        self.max_depth = max_depth


def _error(f: gen.WalkFailure, ledger: int | None) -> XdrError:
    return XdrError(WALK_ERRORS[f.code], f.offset, TYPE_NAMES[f.tid], ledger)


def _hashed_header(b, p: int, n: int) -> int:
    """With a v1/v2 prefix at ``p``: where its hash starts, if the header
    that follows hashes to it; else -1."""
    try:
        h = gen.w_LedgerCloseMetaExt(b, p + 4, n, _State(8))
        if n - h < 32:
            return -1
        end = gen.w_LedgerHeader(b, h + 32, n, _State(8))
    except gen.WalkFailure:
        return -1
    return h if sha256(b[h + 32 : end]).digest() == b[h : h + 32] else -1


def _delimit_by_hash(b, p: int, n: int, last: bool) -> int:
    if n - p < 8:
        return -1
    h = _hashed_header(b, p, n)
    if h < 0:
        return -1
    if last:
        return n
    own = bytes(b[h : h + 32])
    base = h + 32 + 36
    rest = bytes(b[base:n])
    found = rest.find(own)
    while found >= 0:
        q = base + found  # a candidate previousLedgerHash of the next ledger
        for k in range(4, _MAX_EXT + 4, 4):  # its ext's size is not known yet
            s = q - 4 - 32 - k - 4
            if s > h and _hashed_header(b, s, n) == s + 4 + k:
                return s
        found = rest.find(own, found + 1)
    return -1


def _split(b, p: int, n: int, count: int, max_depth: int, fallback: bool, first: int) -> list:
    spans = []
    for i in range(count):
        flagged = False
        try:
            q = gen.w_LedgerCloseMeta(b, p, n, _State(max_depth))
        except gen.WalkFailure as f:
            if not (fallback and f.code == E_UNKNOWN_ARM):
                raise _error(f, first + i) from None
            q = _delimit_by_hash(b, p, n, i == count - 1)
            if q < 0:
                raise _error(f, first + i) from None
            flagged = True
        spans.append((p, q - p, flagged))
        p = q
    if p != n:
        raise XdrError(f"{n - p} bytes after the last ledger", p, "LedgerCloseMeta", None)
    return spans


def split_batch(buf, max_depth: int = DEFAULT_MAX_DEPTH, fallback: bool = False):
    b = memoryview(buf).cast("B")
    if len(b) < 12:
        raise XdrError("input ends before the value does", 0, "LedgerCloseMetaBatch", None)
    start, end, count = struct.unpack_from(">III", b, 0)
    if count * 4 > len(b) - 12:
        raise XdrError("input ends before the value does", 8, "LedgerCloseMetaBatch", None)
    return start, end, _split(b, 12, len(b), count, max_depth, fallback, 0)


def split_ledgers(
    buf,
    offset: int = 0,
    end: int = -1,
    count: int = 1,
    max_depth: int = DEFAULT_MAX_DEPTH,
    fallback: bool = False,
    first: int = 0,
):
    b = memoryview(buf).cast("B")
    if end < 0:
        end = len(b)
    if not 0 <= offset <= end <= len(b):
        raise ValueError(f"bad range {offset}..{end} of a {len(b)}-byte buffer")
    return _split(b, offset, end, count, max_depth, fallback, first)


def walk_type(name: str, buf, max_depth: int = DEFAULT_MAX_DEPTH) -> int:
    tid = _TYPE_IDS[name]
    b = memoryview(buf).cast("B")
    try:
        return gen.WALKERS[tid](b, 0, len(b), _State(max_depth))
    except gen.WalkFailure as f:
        raise _error(f, None) from None
