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


ARENAS = """
import ctypes, re, sys, tempfile, threading
from stellar_live_source.ops.runtime import tune_malloc
if sys.argv[1] == "on":
    assert tune_malloc()

def allocate():
    return [bytearray(1 << 20) for _ in range(8)]

threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile() as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(len(re.findall(r'<heap nr="[0-9]+">', open(f.name).read())))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and malloc_info")
def test_worker_threads_share_the_tuned_arena():
    """Decoding threads allocate from the one tuned heap; untuned, glibc gives
    each its own arena, whose heaps it unmaps whenever they fall empty."""
    arenas = {mode: int(subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True,
                                       text=True, check=True).stdout) for mode in ("on", "off")}
    assert arenas == {"on": 1, "off": arenas["off"]} and arenas["off"] > 1, arenas
