"""zstd decompression: every test runs on both twins, and the twins agree to the message."""

from __future__ import annotations

import array
import inspect
import os
import random
import resource
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stellar_live_source.core import _backend
from stellar_live_source.errors import ZstdError

TESTDATA = Path(__file__).parents[1].parent / "shared" / "testdata"
MiB = 1024 * 1024
CAP = 64 * MiB  # above every test object; the service's cap is its configuration's


def _objects() -> list[Path]:
    if not TESTDATA.is_dir():
        return []
    return sorted(
        [
            *TESTDATA.glob("ledgers/pubnet/FCD285FF--53312000.xdr.zstd"),
            *TESTDATA.glob("ledgers/testnet/datastore_testbucket_997-999/FFFFFFFF--0-63999/*.xdr.zst"),
            *TESTDATA.glob("lakes/testnet_1410048-1410367_lpf64_fpp10/**/*.xdr.zst"),
            *TESTDATA.glob("ledgers/synthetic/*.xdr.zstd"),
        ]
    )


OBJECTS = _objects()
NO_TESTDATA = pytest.mark.skipif(not OBJECTS, reason=f"shared test data not found at {TESTDATA}")


def outcome(mod, data, max_size=CAP):
    """The result, or the error as (type name, message), to compare the twins."""
    try:
        return mod.decompress(data, max_size)
    except (ZstdError, ValueError, BufferError, TypeError) as exc:
        return type(exc).__name__, str(exc)


def reference(data) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)


def compress(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


def sample(n: int, seed: int = 1) -> bytes:
    """Compressible but not trivial: several blocks, real sequences and literals."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randrange(1, 12)) for _ in range(300)]
    return b"".join(rnd.choice(words) for _ in range(n // 6))[:n]


def raises(mod, data, message: str, max_size: int = CAP) -> None:
    with pytest.raises(ZstdError) as info:
        mod.decompress(data, max_size)
    assert str(info.value) == message


def test_selector_loads_the_compiled_module_on_cpython():
    from stellar_live_source.core import zstd

    no_extensions = os.environ.get(_backend.ENV_NO_EXTENSIONS, "") not in ("", "0")
    expected = "_c" if sys.implementation.name == "cpython" and not no_extensions else "_py"
    assert zstd._impl.__name__.endswith(expected)
    assert zstd.decompress is zstd._impl.decompress


def test_the_cap_is_the_callers(twin):
    """The default size cap (MAX_OBJECT_BYTES) is the configuration's alone."""
    assert not hasattr(twin.zstd, "DEFAULT_MAX_SIZE")
    with pytest.raises(TypeError):
        twin.zstd.decompress(compress(b"x"))


def test_version(twin):
    if twin.name == "py":
        assert twin.zstd.ZSTD_VERSION == ".".join(map(str, zstandard.ZSTD_VERSION))
    else:
        assert twin.zstd.ZSTD_VERSION == "1.5.7"


@NO_TESTDATA
@pytest.mark.parametrize("path", OBJECTS or [None], ids=lambda p: p.name if p else "none")
def test_real_objects(twin, path):
    data = path.read_bytes()
    want = reference(data)
    got = twin.zstd.decompress(data, CAP)
    assert type(got) is bytes and got == want
    assert sys.getsizeof(got) == sys.getsizeof(b"") + len(got)  # shrunk to fit, no slack kept
    declared = twin.zstd.content_size(data)
    assert declared in (None, len(want))
    if "pubnet" in path.parts or "synthetic" in path.parts:
        assert declared is None  # these objects do not declare their size
    else:
        assert declared == len(want)
    if len(want) < 4 * MiB:  # the 35 MB one would only cost time
        assert twin.zstd.decompress(data, max_size=len(want)) == want
        with pytest.raises(ZstdError, match=f"exceeds the cap of {len(want) - 1} bytes$"):
            twin.zstd.decompress(data, max_size=len(want) - 1)


@NO_TESTDATA
def test_buffer_types(twin):
    data = OBJECTS[0].read_bytes()
    want = reference(data)
    for buf in (bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        assert twin.zstd.decompress(buf, CAP) == want
    assert twin.zstd.decompress(array.array("B", data), CAP) == want
    with pytest.raises(BufferError):
        twin.zstd.decompress(memoryview(data + data)[::2], CAP)
    with pytest.raises(TypeError):
        twin.zstd.decompress("not bytes", CAP)


@NO_TESTDATA
def test_threads_get_the_same_bytes(twin):
    datas = [p.read_bytes() for p in OBJECTS if p.stat().st_size < 200_000]
    wants = [reference(d) for d in datas]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(twin.zstd.decompress, datas * 4, [CAP] * len(datas) * 4)) == wants * 4


def test_frames_with_and_without_content_size(twin):
    small, big = sample(1000, 2), sample(300_000, 3)  # big spans several 128 KB blocks
    for payload in (b"", small, big):
        for kw in ({}, {"write_content_size": False}, {"write_checksum": True}, {"level": 19}):
            frame = compress(payload, **kw)
            assert twin.zstd.decompress(frame, CAP) == payload
            want_size = None if kw.get("write_content_size") is False else len(payload)
            assert twin.zstd.content_size(frame) == want_size


def test_concatenated_and_skippable_frames(twin):
    a, b, c = sample(5000, 4), sample(200_000, 5), b""
    skippable = (0x184D2A5A).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    fa, fb, fc = compress(a), compress(b, write_content_size=False), compress(c)
    data = fa + skippable + fb + fc + skippable
    assert twin.zstd.decompress(data, CAP) == reference(data) == a + b + c
    assert twin.zstd.content_size(data) is None
    assert twin.zstd.content_size(fa + skippable + fc + fa) == 2 * len(a)
    assert twin.zstd.decompress(skippable, CAP) == b""
    assert twin.zstd.content_size(skippable) == 0
    assert twin.zstd.decompress(fc, CAP) == b""
    # Many small frames, all undeclared: the output grows across frames.
    frames = [sample(3000, s) for s in range(40)]
    data = b"".join(compress(f, write_content_size=False) for f in frames)
    assert twin.zstd.decompress(data, CAP) == b"".join(frames)


def test_bad_input_messages(twin):
    frame = compress(sample(2000))
    raises(twin.zstd, b"", "empty input: no zstd frame at byte 0")
    raises(twin.zstd, b"\x00" * 20, "not a zstd frame at byte 0")
    raises(twin.zstd, b"\x28\xb5", "truncated zstd frame at byte 0 (input ends at byte 2)")
    raises(twin.zstd, b"x", "not a zstd frame at byte 0")
    n = len(frame)
    raises(twin.zstd, frame + b"garbage", f"trailing 7 bytes after the last zstd frame at byte {n}")
    raises(twin.zstd, frame + frame + b"\x00", f"trailing 1 bytes after the last zstd frame at byte {2 * n}")
    raises(twin.zstd, frame + b"\x28\xb5\x2f", f"truncated zstd frame at byte {n} (input ends at byte {n + 3})")
    # Header errors found while walking the frames.
    reserved = bytearray(frame)
    reserved[4] |= 0x08
    raises(twin.zstd, bytes(reserved), "invalid zstd frame at byte 0: Unsupported frame parameter")
    huge_window = b"\x28\xb5\x2f\xfd\x00\xff" + b"\x01\x00\x00"
    raises(
        twin.zstd, frame + huge_window, f"invalid zstd frame at byte {n}: Frame requires too much memory for decoding"
    )
    bad_block = b"\x28\xb5\x2f\xfd\x00\x48" + b"\x07\x00\x00"  # last block of the reserved type
    raises(twin.zstd, bad_block, "invalid zstd frame at byte 0: Data corruption detected")
    with pytest.raises(ZstdError, match="^empty input"):
        twin.zstd.content_size(b"")
    with pytest.raises(ZstdError, match="^trailing 1 bytes"):
        twin.zstd.content_size(frame + b"!")
    with pytest.raises(ValueError, match="max_size must be >= 0"):
        twin.zstd.decompress(frame, max_size=-1)


def test_truncation_at_every_offset(twin):
    f1 = compress(sample(3000, 6), write_checksum=True)
    f2 = compress(sample(300_000, 7), write_content_size=False, write_checksum=True)
    data = f1 + f2
    cuts = list(range(1, len(f1) + 40)) + random.Random(8).sample(range(len(f1) + 40, len(data)), 300)
    for cut in cuts:
        start = 0 if cut < len(f1) else len(f1)
        if cut == len(f1):
            assert twin.zstd.decompress(data[:cut], CAP) == sample(3000, 6)
            continue
        raises(twin.zstd, data[:cut], f"truncated zstd frame at byte {start} (input ends at byte {cut})")


def zeros_with_a_broken_checksum(mib: int) -> bytes:
    """``mib`` MiB of zeros compressed as a stream (no content size in the
    header), the frame's checksum flipped: decoding to the end of the frame
    fails on it, so a decoder that stops at the cap never reports it."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=False, write_checksum=True).compressobj()
    chunk = bytes(MiB)
    data = b"".join([*(compressor.compress(chunk) for _ in range(mib)), compressor.flush()])
    return data[:-4] + bytes(b ^ 0xFF for b in data[-4:])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zeros_with_a_broken_checksum(1024)


def test_decompression_bomb_stops_at_the_cap(twin, bomb):
    cap = 8 * MiB
    over = f"decompressed size exceeds the cap of {cap} bytes"
    small = zeros_with_a_broken_checksum(16)
    with pytest.raises(ZstdError, match="checksum"):  # what reading on to the end of the frame meets
        twin.zstd.decompress(small, 32 * MiB)
    raises(twin.zstd, small, over, max_size=cap)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        raises(twin.zstd, bomb, over, max_size=cap)  # not the checksum: it stopped at the cap
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * cap
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 64 * 1024
    assert twin.zstd.content_size(bomb) is None


def test_declared_size_above_the_cap_is_refused_up_front(twin):
    payload = bytes(MiB)
    frame = compress(payload)
    raises(twin.zstd, frame, f"declared content size {MiB} exceeds the cap of 1000 bytes", max_size=1000)
    raises(twin.zstd, frame + frame, f"declared content size {2 * MiB} exceeds the cap of {MiB} bytes", max_size=MiB)
    assert twin.zstd.decompress(frame, max_size=MiB) == payload
    # A header claiming 1 TiB in front of one empty block: refused without allocating.
    liar = b"\x28\xb5\x2f\xfd\xc0\x48" + (1 << 40).to_bytes(8, "little") + b"\x01\x00\x00"
    assert twin.zstd.content_size(liar) == 1 << 40
    raises(twin.zstd, liar, f"declared content size {1 << 40} exceeds the cap of {CAP} bytes")
    # Past the cap after undeclared frames, with a declared one still to come.
    undeclared = compress(payload, write_content_size=False)
    raises(twin.zstd, undeclared + frame, f"decompressed size exceeds the cap of {MiB + 10} bytes", max_size=MiB + 10)


LIES = [0, 1, 50, 99, 101, 200, 255]


def lying_frames(declared: int) -> list[tuple[int, bytes]]:
    """(offset, data): a one-block frame of 100 bytes declaring ``declared``, alone and after a good frame."""
    frame = bytearray(compress(bytes(range(100))))
    assert frame[4] == 0x20 and frame[5] == 100  # single segment, 1-byte content size
    frame[5] = declared
    first = compress(b"ok" * 100)
    return [(0, bytes(frame)), (len(first), first + frame)]


def lying_multi_block_frames() -> list[bytes]:
    payload = sample(400_000, 9)
    frame = bytearray(compress(payload))
    assert frame[4] == 0xA0  # single segment (no window byte), 4-byte content size
    out = []
    for declared in (len(payload) - 1, len(payload) + 1, len(payload) // 2, len(payload) * 2):
        frame[5:9] = declared.to_bytes(4, "little")
        out.append(bytes(frame))
    return out


@pytest.mark.parametrize("declared", LIES)
def test_a_frame_that_lies_about_its_size_is_an_error(twin, declared):
    for offset, data in lying_frames(declared):
        with pytest.raises(ZstdError, match=f"^invalid zstd frame at byte {offset}: "):
            twin.zstd.decompress(data, CAP)


def test_a_multi_block_frame_that_lies_about_its_size_is_an_error(twin):
    for data in lying_multi_block_frames():
        with pytest.raises(ZstdError, match="^invalid zstd frame at byte 0: "):
            twin.zstd.decompress(data, CAP)


def test_twins_agree_on_frames_that_lie_about_their_size(twins):
    c, py = (t.zstd for t in twins)
    for data in [d for lie in LIES for _, d in lying_frames(lie)] + lying_multi_block_frames():
        assert outcome(c, data) == outcome(py, data)


def test_exact_cap_boundaries(twin):
    payload = sample(70_000, 10)
    n = len(payload)
    for frame, declared in ((compress(payload), n), (compress(payload, write_content_size=False), None)):
        assert twin.zstd.decompress(frame, max_size=n) == payload
        over = f"declared content size {n}" if declared else "decompressed size"
        raises(twin.zstd, frame, f"{over} exceeds the cap of {n - 1} bytes", max_size=n - 1)
    assert twin.zstd.decompress(compress(b""), max_size=0) == b""
    assert twin.zstd.decompress(compress(b"", write_content_size=False), max_size=0) == b""
    raises(
        twin.zstd, compress(b"a", write_content_size=False), "decompressed size exceeds the cap of 0 bytes", max_size=0
    )


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAGIC = b"\x28\xb5\x2f\xfd"
VALID = compress(sample(20_000, 11), write_checksum=True) + compress(sample(3000, 12), write_content_size=False)


@FUZZ
@given(data=st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: MAGIC + b))
def test_random_garbage_never_crashes_and_twins_agree(twins, data):
    c, py = (outcome(t.zstd, data, max_size=MiB) for t in twins)
    assert isinstance(c, (bytes, tuple))
    assert c == py


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_objects_never_crash_and_twins_agree(twins, edits):
    data = bytearray(VALID)
    for at, value in edits:
        data[at] = value
    c, py = (outcome(t.zstd, bytes(data), max_size=MiB) for t in twins)
    if isinstance(c, bytes):
        assert len(c) <= MiB
    assert c == py


def test_agreement_is_checked_between_the_twins_not_per_twin():
    """A twins-agree test parametrized over ``twin`` compared the pure twin with
    itself under its pure param; each takes both twins, in one body."""
    agreeing = {name: fn for name, fn in globals().items() if name.startswith("test_") and "twins_agree" in name}
    assert len(agreeing) == 3
    for name, fn in agreeing.items():
        assert "twins" in inspect.signature(fn).parameters and "twin" not in inspect.signature(fn).parameters, name
