"""Whole-object decoding: decompress, split, index, verify.

This is the one entry point the service and the admin commands use. The heavy
steps run in the compiled modules; what is left here is per-ledger
bookkeeping, a few Python operations per ledger.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import NamedTuple

from ..errors import CoreError, HashError, XdrError
from . import index, walk, zstd

log = logging.getLogger("stellar_live_source.core")

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UNKNOWN_ARMS = ("error", "hash-chain")
FORMATS = ("batch", "xdr-stream", "raw")


class Ledger(NamedTuple):
    """One ledger inside a decompressed buffer."""

    seq: int
    lcm_v: int
    protocol: int
    offset: int
    length: int
    hash: bytes
    prev: bytes
    hash_ok: bool
    fallback: bool  # delimited by the hash chain, not by the grammar


class Decoded(NamedTuple):
    """A decoded object or file: the buffer, and where each ledger is in it."""

    data: bytes
    ledgers: list[Ledger]
    format: str
    start: int | None = None  # batch bounds, for batches
    end: int | None = None

    def xdr(self, i: int) -> memoryview:
        led = self.ledgers[i]
        return memoryview(self.data)[led.offset : led.offset + led.length]

    @property
    def size(self) -> int:
        return len(self.data)


class Stats:
    """Counters the metrics layer reads; the core itself never imports it."""

    fallback_ledgers = 0


def _fallback(seq: int, offset: int, length: int) -> None:
    Stats.fallback_ledgers += 1
    log.warning(
        "ledger %d (offset %d, %d bytes) delimited by the hash chain: its XDR has a union arm "
        "newer than this build's grammar",
        seq,
        offset,
        length,
    )


def _ledgers(data: bytes, spans: list, first: int = 0) -> list[Ledger]:
    facts = index.index_ledgers(data, spans, first)
    out = [Ledger(f[0], f[1], f[2], s[0], s[1], f[3], f[4], f[5], s[2]) for f, s in zip(facts, spans, strict=True)]
    for led in out:
        if led.fallback:
            _fallback(led.seq, led.offset, led.length)
    return out


def verify_chain(ledgers: list[Ledger], prev_hash: bytes | None = None) -> None:
    """Every header hash is right and each ledger names its predecessor's hash."""
    for led in ledgers:
        if not led.hash_ok:
            raise HashError(
                f"ledger {led.seq}: header hash does not match SHA-256 of the header (at byte {led.offset})"
            )
        if prev_hash is not None and led.prev != prev_hash:
            raise HashError(
                f"ledger {led.seq}: previousLedgerHash {led.prev.hex()} is not the hash of ledger {led.seq - 1} "
                f"({prev_hash.hex()}) (at byte {led.offset})"
            )
        prev_hash = led.hash


def _split_options(unknown_arms: str, max_depth: int) -> dict:
    if unknown_arms not in UNKNOWN_ARMS:
        raise ValueError(f"unknown_arms must be one of {UNKNOWN_ARMS}, not {unknown_arms!r}")
    return {"max_depth": max_depth, "fallback": unknown_arms == "hash-chain"}


def decode_batch(
    data: bytes, *, verify: bool = True, unknown_arms: str = "error", max_depth: int = walk.DEFAULT_MAX_DEPTH
) -> Decoded:
    """Split and index a decompressed LedgerCloseMetaBatch, checking its bounds."""
    start, end, spans = walk.split_batch(data, **_split_options(unknown_arms, max_depth))
    ledgers = _ledgers(data, spans)
    if end < start or end - start + 1 != len(ledgers):
        raise XdrError(f"batch bounds {start}-{end} do not match its {len(ledgers)} ledgers", 0, "LedgerCloseMetaBatch")
    for i, led in enumerate(ledgers):
        if led.seq != start + i:
            raise XdrError(
                f"ledger sequence {led.seq} where the batch bounds {start}-{end} put {start + i}",
                led.offset,
                "LedgerCloseMetaBatch",
                i,
            )
    if verify:
        verify_chain(ledgers)
    return Decoded(data, ledgers, "batch", start, end)


def decode_object(
    raw,
    *,
    max_size: int,
    verify: bool = True,
    unknown_arms: str = "error",
    max_depth: int = walk.DEFAULT_MAX_DEPTH,
) -> Decoded:
    """Decode one datalake object: zstd-compressed LedgerCloseMetaBatch of at
    most ``max_size`` bytes decompressed (the caller's cap: configuration's
    MAX_OBJECT_BYTES for the service)."""
    return decode_batch(zstd.decompress(raw, max_size), verify=verify, unknown_arms=unknown_arms, max_depth=max_depth)


class Framed(NamedTuple):
    """A decoded object as streams need it: one RawLedger frame per ledger
    (``stellar.v1`` RawLedger frames for ``network`` when it is not None)."""

    start: int  # batch bounds
    end: int
    frames: list[bytes]
    first_prev: bytes  # previousLedgerHash of the first ledger
    last_hash: bytes  # hash of the last ledger
    nbytes: int  # of all frames
    fallback: int  # ledgers delimited by the hash-chain fallback
    network: str | None = None  # the frames are stellar.v1 ones for this network


def frame_object(
    raw,
    *,
    max_size: int,
    verify: bool = True,
    unknown_arms: str = "error",
    max_depth: int = walk.DEFAULT_MAX_DEPTH,
    stages: list[float] | None = None,
    network: str | None = None,
) -> Framed:
    """``decode_object`` for serving: the same checks, ledger by ledger, and
    each ledger's RawLedger frame instead of a ``Ledger`` (no Python object
    per ledger but its frame). A batch without ledgers is an XdrError.
    ``stages``, if given, is appended the seconds of each stage: decompress,
    split, frame. ``network``: the ``stellar.v1`` RawLedger frames for that
    network instead, built straight from the decompressed buffer."""
    if stages is None:
        data = zstd.decompress(raw, max_size)
        start, end, spans = walk.split_batch(data, **_split_options(unknown_arms, max_depth))
        frames, first_prev, last_hash, nbytes, fallback = index.frame_ledgers(data, spans, start, end, verify, network)
    else:
        t0 = time.perf_counter()
        data = zstd.decompress(raw, max_size)
        t1 = time.perf_counter()
        start, end, spans = walk.split_batch(data, **_split_options(unknown_arms, max_depth))
        t2 = time.perf_counter()
        frames, first_prev, last_hash, nbytes, fallback = index.frame_ledgers(data, spans, start, end, verify, network)
        stages += (t1 - t0, t2 - t1, time.perf_counter() - t2)
    if fallback:
        for i, (offset, length, flagged) in enumerate(spans):
            if flagged:
                _fallback(start + i, offset, length)
    return Framed(start, end, frames, first_prev, last_hash, nbytes, fallback, network)


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record of an XDR record stream."""
    out, p = [], 0
    while p < len(data):
        if len(data) - p < 4:
            raise XdrError("input ends inside a record mark", p, "record mark")
        (mark,) = struct.unpack_from(">I", data, p)
        if not mark & 0x80000000:
            raise XdrError("record mark without the last-fragment bit", p, "record mark")
        length = mark & 0x7FFFFFFF
        if length > len(data) - p - 4:
            raise XdrError(f"record of {length} bytes runs past the end", p, "record mark")
        out.append((p + 4, length))
        p += 4 + length
    return out


def decode_file(
    raw: bytes,
    fmt: str | None = None,
    *,
    max_size: int,
    unknown_arms: str = "error",
    max_depth: int = walk.DEFAULT_MAX_DEPTH,
) -> Decoded:
    """Decode a file of ledgers in any framing the exporter or Stellar Core
    writes (``FORMATS``), zstd-compressed (to at most ``max_size`` bytes) or not.

    Without ``fmt`` each framing is tried and the first that walks exactly to
    the end of the bytes wins; if none does, the error of the most plausible
    one (the one that got furthest) is raised. Nothing is verified here: the
    caller reports ``hash_ok`` and decides.
    """
    data = zstd.decompress(raw, max_size) if raw[:4] == ZSTD_MAGIC else bytes(raw)
    opts = _split_options(unknown_arms, max_depth)
    errors: list[CoreError] = []
    for f in [fmt] if fmt else FORMATS:
        try:
            if f == "batch":
                decoded = decode_batch(data, verify=False, unknown_arms=unknown_arms, max_depth=max_depth)
                return decoded
            if f == "xdr-stream":
                spans = []
                for i, (off, length) in enumerate(_records(data)):
                    spans += walk.split_ledgers(data, off, off + length, 1, first=i, **opts)
                return Decoded(data, _ledgers(data, spans), f)
            if f == "raw":
                return Decoded(data, _ledgers(data, walk.split_ledgers(data, 0, len(data), 1, **opts)), f)
            raise ValueError(f"unknown format {f!r}; one of {FORMATS}")
        except CoreError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    best = max(errors, key=lambda e: getattr(e, "offset", -1))
    raise CoreError(
        f"no framing fits ({', '.join(FORMATS)}); the closest, {FORMATS[errors.index(best)]}: {best}"
    ) from best
