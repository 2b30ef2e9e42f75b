"""Writes ledgers into a datalake folder laid out as Stellar's exporter does.

Tests and benchmarks make their lakes with this. ``renumber`` rewrites real
ledgers into long consecutive, hash-chained runs, so a lake of any length
verifies like a real one with every check on.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterable, Iterator
from hashlib import sha256
from pathlib import Path

import zstandard

from ..core.decode import decode_file
from ..core.index import header_span
from ..core.keys import Layout

MANIFEST = ".config.json"
DEFAULT_PASSPHRASE = "Standalone Network ; February 2017"


def ledgers_of(paths: Iterable[str | Path], max_size: int) -> Iterator[bytes]:
    """The LedgerCloseMeta XDR of every ledger in these files, in order; a
    compressed file may decompress to ``max_size`` bytes."""
    for path in paths:
        decoded = decode_file(Path(path).read_bytes(), max_size=max_size)
        for i in range(len(decoded.ledgers)):
            yield bytes(decoded.xdr(i))


def renumber(ledgers: Iterable[bytes], start: int, count: int, prev_hash: bytes = b"\0" * 32) -> Iterator[bytes]:
    """Cycle ``ledgers`` into ``count`` consecutive ledgers from ``start``.

    Each header gets its new ledgerSeq and previousLedgerHash, then its hash is
    recomputed, so the run chains exactly like real ledgers.
    """
    source = list(ledgers)
    if not source:
        raise ValueError("renumber needs at least one input ledger")
    for seq, xdr in zip(range(start, start + count), itertools.cycle(source)):
        buf = bytearray(xdr)
        _, hash_at, h, he, seq_at = header_span(buf, 0, len(buf))
        struct.pack_into(">I", buf, seq_at, seq)
        buf[h + 4 : h + 36] = prev_hash
        prev_hash = sha256(buf[h:he]).digest()
        buf[hash_at : hash_at + 32] = prev_hash
        yield bytes(buf)


def sequence_of(xdr: bytes) -> int:
    _, _, _, _, seq_at = header_span(xdr, 0, len(xdr))
    return struct.unpack_from(">I", xdr, seq_at)[0]


def batch_xdr(start: int, end: int, ledgers: list[bytes]) -> bytes:
    return struct.pack(">III", start, end, len(ledgers)) + b"".join(ledgers)


def write_lake(
    root: str | Path,
    ledgers: Iterable[bytes],
    *,
    ledgers_per_file: int = 64,
    files_per_partition: int = 10,
    extension: str = ".xdr.zst",
    network_passphrase: str = DEFAULT_PASSPHRASE,
    level: int = 3,
    content_size: bool = True,
) -> list[str]:
    """Write consecutive ledgers as zstd LedgerCloseMetaBatch objects plus the
    manifest; returns the keys written. Gaps between inputs are refused."""
    layout = Layout(ledgers_per_file, files_per_partition, extension)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=content_size)
    keys: list[str] = []
    batch: list[bytes] = []
    first = 0  # the batch's first ledger, while it holds any
    expect: int | None = None

    def flush() -> None:
        key = layout.object_key(first)
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cctx.compress(batch_xdr(first, first + len(batch) - 1, batch)))
        keys.append(key)

    for xdr in ledgers:
        seq = sequence_of(xdr)
        if expect is not None and seq != expect:
            raise ValueError(f"ledger {seq} follows ledger {expect - 1}: a lake holds consecutive ledgers")
        if batch and layout.file_start(seq) != layout.file_start(first):
            flush()
            batch = []
        if not batch:
            first = seq
        batch.append(xdr)
        expect = seq + 1
    if batch:
        flush()
    manifest = {
        "networkPassphrase": network_passphrase,
        "version": "1.0",
        "compression": "zstd",
        "ledgersPerBatch": ledgers_per_file,
        "batchesPerPartition": files_per_partition,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return keys
