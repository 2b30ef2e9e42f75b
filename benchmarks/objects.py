"""The datalake objects the benchmarks decode and the lakes they serve, made
from the tests' real ledgers (``tests.service_storage_support.run_ledgers``)."""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path

import zstandard

from stellar_live_source.tools.pack import batch_xdr, renumber, sequence_of, write_lake
from tests.service_storage_support import run_ledgers
from tests.service_support import SHARED_LAKE

#: which real run each kind of ledger is: large v2 (about 1.2 MB, 248 Soroban
#: transactions each) or small v0 testnet (about 4.6 KB)
RUNS = {"large": "v2", "small": "v0"}


@cache
def large_object(per_object: int = 8) -> tuple[bytes, int, int]:
    """(compressed object, decompressed size, ledgers): real large v2 ledgers
    as one exporter object."""
    ledgers = list(run_ledgers(RUNS["large"])[:per_object])
    first = sequence_of(ledgers[0])
    raw = batch_xdr(first, first + per_object - 1, ledgers)
    return zstandard.ZstdCompressor(level=3).compress(raw), len(raw), per_object


@cache
def small_object() -> tuple[bytes, int, int]:
    """A real object of the testnet lake: 64 small v0 ledgers."""
    raw = sorted(SHARED_LAKE.rglob("*.xdr.zst"))[1].read_bytes()
    data = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw, len(data), struct.unpack_from(">I", data, 8)[0]


def cycled_lake(root: Path, kind: str, start: int, count: int, per_file: int, per_partition: int = 10) -> list[str]:
    """A datalake folder of ``count`` consecutive hash-chained ledgers from
    ``start``, real ledgers (``large`` or ``small``) cycled by ``renumber``,
    so every check of the service stays on; returns its keys."""
    return write_lake(
        root,
        renumber(run_ledgers(RUNS[kind]), start, count),
        ledgers_per_file=per_file,
        files_per_partition=per_partition,
    )
