"""The datalake objects the core benchmarks decode, made from real ledgers."""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path

import zstandard

from stellar_live_source.core.decode import decode_file
from stellar_live_source.tools.pack import batch_xdr, renumber

LARGE = "ledgers/synthetic/stellar-rpc__load-test-ledgers-v25_*.xdr.zstd"
SMALL = "lakes/testnet_1410048-1410367_lpf64_fpp10"


@cache
def large_object(testdata: Path, per_object: int = 8) -> tuple[bytes, int, int]:
    """(compressed object, decompressed size, ledgers): real large v2 ledgers
    (about 1.2 MB, 248 Soroban transactions each) as one exporter object."""
    path = next(testdata.glob(LARGE))
    decoded = decode_file(path.read_bytes())
    ledgers = [bytes(decoded.xdr(i)) for i in range(per_object)]
    first = decoded.ledgers[0].seq
    raw = batch_xdr(first, first + per_object - 1, ledgers)
    return zstandard.ZstdCompressor(level=3).compress(raw), len(raw), per_object


@cache
def small_object(testdata: Path) -> tuple[bytes, int, int]:
    """A real object of the testnet lake: 64 small v0 ledgers."""
    path = sorted((testdata / SMALL).rglob("*.xdr.zst"))[1]
    raw = path.read_bytes()
    size = len(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    count = struct.unpack_from(">I", zstandard.ZstdDecompressor().decompressobj().decompress(raw), 8)[0]
    return raw, size, count


def renumbered(testdata: Path, start: int, count: int) -> list[bytes]:
    path = next(testdata.glob(LARGE))
    decoded = decode_file(path.read_bytes())
    return list(renumber((bytes(decoded.xdr(i)) for i in range(len(decoded.ledgers))), start, count))


TESTNET = "ledgers/testnet/lighthorizon_1410048-1410367"


def cycled_lake(
    root: Path, testdata: Path, kind: str, start: int, count: int, per_file: int, per_partition: int = 10
) -> list[str]:
    """A datalake folder of ``count`` consecutive hash-chained ledgers from
    ``start``, real ledgers (``large`` v2 or ``small`` testnet) cycled by
    ``renumber``, so every check of the service stays on; returns its keys."""
    from stellar_live_source.tools.pack import ledgers_of, write_lake

    paths = sorted(testdata.glob(LARGE)) if kind == "large" else sorted((testdata / TESTNET).glob("*.xdr"))
    return write_lake(
        root, renumber(ledgers_of(paths), start, count), ledgers_per_file=per_file, files_per_partition=per_partition
    )
