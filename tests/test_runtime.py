"""serve raises glibc's malloc thresholds (see ops/runtime.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stellar_live_source.ops import runtime

from .conftest import LEDGERS, needs_testdata

LARGE = sorted((LEDGERS / "synthetic").glob("stellar-rpc__load-test-ledgers-v25_*.xdr.zstd"))

CODE = """
import resource, sys, zstandard
from stellar_live_source.core.decode import decode_file, decode_object
from stellar_live_source.ops.runtime import tune_malloc
from stellar_live_source.tools.pack import batch_xdr
if sys.argv[1] == "on":
    assert tune_malloc()
d = decode_file(open(sys.argv[2], "rb").read())
obj = zstandard.ZstdCompressor().compress(batch_xdr(d.ledgers[0].seq, d.ledgers[7].seq,
                                                    [bytes(d.xdr(i)) for i in range(8)]))
del d
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    decode_object(obj)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@needs_testdata
@pytest.mark.skipif(not sys.platform.startswith("linux") or not LARGE, reason="glibc's mallopt; the large ledgers")
def test_decoding_reuses_warm_pages_once_tuned():
    """Decoding an object of 8 large ledgers (about 9 MB) ten times: untuned,
    every decompressed buffer is fresh pages from the kernel."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", CODE, mode, str(LARGE[0])], capture_output=True,
                                       text=True, check=True).stdout) for mode in ("on", "off")}
    assert faults["on"] * 3 < faults["off"], faults


def test_tuning_is_harmless_to_call_twice():
    assert runtime.tune_malloc() == runtime.tune_malloc()
