"""Core speed on real ledgers, as ratios to bare zstd decompression measured
in the same run: python-zstandard's ``ZstdDecompressor().decompress(obj,
max_output_size=N)`` with N the exact decompressed size, on the same objects."""

from __future__ import annotations

import pytest
import zstandard

from stellar_live_source.core import _walk_c, _walk_py, decode
from tests.conftest import needs_testdata
from tests.service_support import MAX_OBJECT_BYTES

from .conftest import RESULTS, record
from .objects import large_object, small_object

stellar_sdk_xdr = pytest.importorskip("stellar_sdk.xdr")
pytestmark = needs_testdata


@pytest.fixture(params=["core-large", "core-small"])
def obj(request):
    raw, size, count = (large_object if request.param == "core-large" else small_object)()
    RESULTS.setdefault(request.param, {})["size"] = size
    return request.param, raw, size


def test_bare_zstd(benchmark, obj):
    group, raw, size = obj
    dctx = zstandard.ZstdDecompressor()
    out = benchmark(dctx.decompress, raw, max_output_size=size)
    assert len(out) == size
    record(benchmark, group, "bare_zstd")


def test_walk_c(benchmark, obj):
    group, raw, size = obj
    data = zstandard.ZstdDecompressor().decompress(raw, max_output_size=size)
    start, end, spans = benchmark(_walk_c.split_batch, data)
    assert spans[-1][0] + spans[-1][1] == size
    record(benchmark, group, "walk_c")


def test_walk_py(benchmark, obj):
    group, raw, size = obj
    data = zstandard.ZstdDecompressor().decompress(raw, max_output_size=size)
    benchmark.pedantic(_walk_py.split_batch, (data,), rounds=3, iterations=1)
    record(benchmark, group, "walk_py")


def test_decode_c(benchmark, obj):
    group, raw, size = obj
    decoded = benchmark(decode.decode_object, raw, max_size=MAX_OBJECT_BYTES)
    assert decoded.size == size and all(led.hash_ok for led in decoded.ledgers)
    record(benchmark, group, "decode_c")


def test_frame_c(benchmark, obj):
    """The decode the service runs: the same checks, a RawLedger frame per ledger."""
    group, raw, size = obj
    framed = benchmark(decode.frame_object, raw, max_size=MAX_OBJECT_BYTES)
    assert framed.nbytes > size - 12 and framed.fallback == 0
    record(benchmark, group, "frame_c")


def test_zstd_plus_sdk(benchmark, obj):
    group, raw, size = obj
    dctx = zstandard.ZstdDecompressor()

    def sdk_decode():
        return stellar_sdk_xdr.LedgerCloseMetaBatch.from_xdr_bytes(dctx.decompress(raw, max_output_size=size))

    benchmark.pedantic(sdk_decode, rounds=2, iterations=1)
    record(benchmark, group, "zstd_plus_sdk")
