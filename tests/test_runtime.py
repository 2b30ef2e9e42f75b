"""serve raises glibc's malloc thresholds and keeps one arena (see ops/runtime.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import LEDGERS, needs_testdata

LARGE = sorted((LEDGERS / "synthetic").glob("stellar-rpc__load-test-ledgers-v25_*.xdr.zstd"))

CODE = """
import resource, sys, zstandard
from stellar_live_source.core.decode import decode_file, decode_object
from stellar_live_source.ops.runtime import tune_malloc
from stellar_live_source.tools.pack import batch_xdr
if sys.argv[1] == "on":
    assert tune_malloc()
d = decode_file(open(sys.argv[2], "rb").read(), max_size=1 << 30)
obj = zstandard.ZstdCompressor().compress(batch_xdr(d.ledgers[0].seq, d.ledgers[7].seq,
                                                    [bytes(d.xdr(i)) for i in range(8)]))
del d
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    decode_object(obj, max_size=1 << 30)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@needs_testdata
@pytest.mark.skipif(not sys.platform.startswith("linux") or not LARGE, reason="glibc's mallopt; the large ledgers")
def test_decoding_reuses_warm_pages_once_tuned():
    """Decoding an object of 8 large ledgers (about 9 MB) ten times: untuned,
    every decompressed buffer is fresh pages from the kernel."""
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", CODE, mode, str(LARGE[0])], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("on", "off")
    }
    assert faults["on"] * 3 < faults["off"], faults


ARENAS = """
import ctypes, ctypes.util, sys, threading
from stellar_live_source.ops.runtime import tune_malloc
if sys.argv[1] == "on":
    assert tune_malloc()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
together = threading.Barrier(3)
def work():  # decode workers, all alive at once: each allocates an object's buffers
    p = libc.malloc(1 << 20)
    together.wait()
    libc.free(p)
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_threads_share_one_arena_once_tuned():
    """Buffers a decode thread allocates and the event loop frees go back to
    the arena every thread allocates from."""
    arenas = {
        mode: subprocess.run(
            [sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True
        ).stderr.count("Arena ")
        for mode in ("on", "off")
    }
    assert arenas["on"] == 1 and arenas["off"] > 1, arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuning_says_it_tuned_and_may_be_repeated():
    """In a process of its own (this one stays as it is): True both times on glibc."""
    code = "from stellar_live_source.ops.runtime import tune_malloc; print(tune_malloc(), tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
