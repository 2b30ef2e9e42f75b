"""Datalake key arithmetic: README examples, the real lakes in shared testdata,
edge cases at 0xFFFFFFFF, strict parse_key, and (hypothesis) round-trips plus
exact agreement of the compiled and pure twins, errors included."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellar_live_source.core import _backend

from .conftest import outcome

TESTDATA = Path(__file__).parents[1].parent / "shared" / "testdata"
MAX = 0xFFFFFFFF


def test_backend_selected():
    from stellar_live_source.core import keys

    assert keys._impl.__name__.endswith("_c" if _backend.COMPILED_EXPECTED else "_py")
    assert keys.Layout is keys._impl.Layout and keys.EXTENSIONS == (".xdr.zst", ".xdr.zstd")


@pytest.mark.parametrize(
    "lpf, fpp, seq, key",
    [
        (64, 10, 2, "FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst"),
        (64, 10, 5000000, "FFB3B5FF--4999680-5000319/FFB3B4BF--5000000-5000063.xdr.zst"),
        (1, 64000, 5000000, "FFB3D3FF--4992000-5055999/FFB3B4BF--5000000.xdr.zst"),
        (1, 64000, 997, "FFFFFFFF--0-63999/FFFFFC1A--997.xdr.zst"),
        (64, 1, 5000000, "FFB3B4BF--5000000-5000063.xdr.zst"),
        (1, 1, 0, "FFFFFFFF--0.xdr.zst"),
    ],
)
def test_readme_examples(twin, lpf, fpp, seq, key):
    layout = twin.keys.Layout(lpf, fpp)
    assert layout.object_key(seq) == key
    folder, _, name = key.rpartition("/")
    assert layout.partition_dir(seq) == folder
    assert layout.file_name(seq) == name
    start, end, ext = layout.parse_key(key)
    assert (start, end, ext) == (layout.file_start(seq), layout.file_end(seq), ".xdr.zst")
    assert layout.object_key(seq, ".xdr.zstd") == key[: -len(".xdr.zst")] + ".xdr.zstd"


def test_arithmetic(twin):
    layout = twin.keys.Layout(64, 10)
    assert (layout.ledgers_per_file, layout.files_per_partition, layout.ledgers_per_partition) == (64, 10, 640)
    assert layout.extension == ".xdr.zst"
    assert [layout.file_start(s) for s in (0, 63, 64, 5000063)] == [0, 0, 64, 5000000]
    assert [layout.file_end(s) for s in (0, 63, 64)] == [63, 63, 127]
    assert [layout.partition_start(s) for s in (639, 640)] == [0, 640]
    assert [layout.partition_end(s) for s in (639, 640)] == [639, 1279]


def test_value_semantics(twin):
    layout = twin.keys.Layout(64, 10, ".xdr.zstd")
    assert repr(layout) == "Layout(ledgers_per_file=64, files_per_partition=10, extension='.xdr.zstd')"
    assert layout == twin.keys.Layout(64, 10, ".xdr.zstd") and hash(layout) == hash(
        twin.keys.Layout(64, 10, ".xdr.zstd")
    )
    assert layout != twin.keys.Layout(64, 10) and layout != twin.keys.Layout(64, 1, ".xdr.zstd") and layout != "x"
    assert pickle.loads(pickle.dumps(layout)) == layout
    with pytest.raises(AttributeError):
        layout.ledgers_per_file = 1


def test_near_max(twin):
    layout = twin.keys.Layout(64, 10)
    assert layout.file_start(MAX) == 0xFFFFFFC0 and layout.file_end(MAX) == MAX
    assert layout.partition_start(MAX) == MAX - MAX % 640 and layout.partition_end(MAX) == MAX
    key = "000000FF--4294967040-4294967295/0000003F--4294967232-4294967295.xdr.zst"
    assert layout.object_key(MAX) == key
    assert layout.parse_key(key) == (0xFFFFFFC0, MAX, ".xdr.zst")
    assert twin.keys.Layout(1, 1).object_key(MAX) == "00000000--4294967295.xdr.zst"
    assert twin.keys.Layout(1, MAX).object_key(MAX) == "00000000--4294967295-4294967295/00000000--4294967295.xdr.zst"
    widest = twin.keys.Layout(MAX, 1)
    assert widest.object_key(MAX - 1) == "FFFFFFFF--0-4294967294.xdr.zst"
    assert widest.object_key(MAX) == "00000000--4294967295-4294967295.xdr.zst"


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 1), "ledgers_per_file must be an int >= 1, got 0"),
        ((1, -3), "files_per_partition must be an int >= 1, got -3"),
        ((1.0, 1), "ledgers_per_file must be an int >= 1, got 1.0"),
        ((1, "2"), "files_per_partition must be an int >= 1, got '2'"),
        ((2**16, 2**16), "ledgers_per_file * files_per_partition must fit in uint32, got 4294967296"),
        ((2**40, 1), "ledgers_per_file * files_per_partition must fit in uint32"),
        ((1, 1, ".xdr"), "extension must be one of ('.xdr.zst', '.xdr.zstd'), got '.xdr'"),
        ((1, 1, None), "extension must be one of"),
    ],
)
def test_layout_validation(twin, args, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        twin.keys.Layout(*args)


@pytest.mark.parametrize("bad", [-1, MAX + 1, 2**64, 2**100, -(2**70), 1.0, "5", None])
@pytest.mark.parametrize(
    "method", ["file_start", "file_end", "partition_start", "partition_end", "partition_dir", "file_name", "object_key"]
)
def test_seq_validation(twin, method, bad):
    # fpp 1 too: partition_dir must still reject the seq before answering "".
    for layout in (twin.keys.Layout(64, 10), twin.keys.Layout(64, 1)):
        with pytest.raises(ValueError) as info:
            getattr(layout, method)(bad)
        assert str(info.value) == f"ledger sequence must be an int in 0..4294967295, got {bad!r}"


def test_extension_argument(twin):
    layout = twin.keys.Layout(1, 1)
    assert layout.file_name(7, ".xdr.zstd") == "FFFFFFF8--7.xdr.zstd"
    assert layout.object_key(7, None) == "FFFFFFF8--7.xdr.zst"
    with pytest.raises(ValueError, match="extension must be one of"):
        layout.object_key(7, "zst")


def test_partition_dir_absent(twin):
    layout = twin.keys.Layout(64, 1)
    assert layout.partition_dir(100) == ""
    assert layout.object_key(100) == layout.file_name(100) == "FFFFFFBF--64-127.xdr.zst"


@pytest.mark.parametrize(
    "key",
    [
        "FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst",
        "FFFFFFFF--0-63.xdr.zst",
        "some/prefix/FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst",
        "bucket/FFFFFFFF--0-63.xdr.zst",
        "/FFFFFFFF--0-63.xdr.zst",
        "ünïcode/FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst",
    ],
)
def test_parse_key_accepts_prefixes(twin, key):
    assert twin.keys.Layout(64, 10).parse_key(key) == (0, 63, ".xdr.zst")


@pytest.mark.parametrize(
    "lpf, fpp, key, reason",
    [
        (64, 10, "FFFFFFFF--0-639/FFFFFFFF--0-63.xdr", "no extension of ('.xdr.zst', '.xdr.zstd')"),
        (64, 10, "FFFFFFFF--0-63.XDR.ZST", "no extension"),
        (64, 10, ".xdr.zst", "malformed file name"),
        (64, 10, "FFFFFFFF-0-63.xdr.zst", "malformed file name"),
        (64, 10, "FFFFFFFF---1-62.xdr.zst", "malformed file name"),
        (64, 10, "FFFFFFFF--4294967296-4294967359.xdr.zst", "malformed file name"),
        (64, 10, "FFFFFFFF--00000000000-63.xdr.zst", "malformed file name"),
        (64, 10, "FFFFFFFF--٠-63.xdr.zst", "malformed file name"),  # Arabic-Indic zero is not a digit here
        (64, 10, "FFFFFFFE--0-63.xdr.zst", "file name should be 'FFFFFFFF--0-63.xdr.zst'"),
        (64, 10, "ffffffff--0-63.xdr.zst", "file name should be 'FFFFFFFF--0-63.xdr.zst'"),
        (64, 10, "FFFFFFFF--00-63.xdr.zst", "file name should be 'FFFFFFFF--0-63.xdr.zst'"),
        (64, 10, "FFFFFFFF--0-64.xdr.zst", "file name should be 'FFFFFFFF--0-63.xdr.zst'"),
        (64, 10, "FFFFFFFF--0.xdr.zst", "file name should be 'FFFFFFFF--0-63.xdr.zst'"),
        (64, 10, "FFFFFFBE--65-128.xdr.zst", "file name should be 'FFFFFFBF--64-127.xdr.zst'"),
        (64, 10, "FFFFFFFF--0-63.xdr.zst.xdr.zst", "file name should be"),
        (1, 1, "FFFFFFFF--0-0.xdr.zst", "file name should be 'FFFFFFFF--0.xdr.zst'"),
        (64, 10, "FFFFFFFE--0-639/FFFFFFFF--0-63.xdr.zst", "partition folder should be 'FFFFFFFF--0-639'"),
        (64, 10, "FFFFFFFF--0-640/FFFFFFFF--0-63.xdr.zst", "partition folder should be 'FFFFFFFF--0-639'"),
        (64, 10, "ffffffff--0-639/FFFFFFFF--0-63.xdr.zst", "partition folder should be 'FFFFFFFF--0-639'"),
        (64, 10, "FFFFFD7F--640-1279/FFFFFFFF--0-63.xdr.zst", "partition folder should be 'FFFFFFFF--0-639'"),
        (64, 1, "FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst", "layout has no partition folders"),
        (1, 64000, "FFFFFFFF--0-639/FFFFFC1A--997.xdr.zst", "partition folder should be 'FFFFFFFF--0-63999'"),
    ],
)
def test_parse_key_rejects(twin, lpf, fpp, key, reason):
    layout = twin.keys.Layout(lpf, fpp)
    with pytest.raises(ValueError) as info:
        layout.parse_key(key)
    assert str(info.value).startswith(f"bad datalake key {key!r} for {layout!r}: {reason}")


def test_parse_key_type(twin):
    with pytest.raises(TypeError, match="key must be str, got bytes"):
        twin.keys.Layout(1, 1).parse_key(b"FFFFFFFF--0.xdr.zst")


def lake_objects(root: Path) -> list[str]:
    if not root.is_dir():
        pytest.skip(f"shared test data not found at {root} (a checkout without ../shared/testdata)")
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != ".config.json")
    assert keys, f"no objects under {root}"
    return keys


@pytest.mark.parametrize(
    "lake, lpf, fpp, count",
    [
        ("lakes/testnet_1410048-1410367_lpf64_fpp10", 64, 10, 5),
        ("ledgers/testnet/datastore_testbucket_997-999", 1, 64000, 3),
    ],
)
def test_real_lakes(twin, lake, lpf, fpp, count):
    root = TESTDATA / lake
    keys = lake_objects(root)
    config = json.loads((root / ".config.json").read_text())
    assert (config["ledgersPerBatch"], config["batchesPerPartition"]) == (lpf, fpp)
    layout = twin.keys.Layout(lpf, fpp)
    assert len(keys) == count
    for key in keys:
        start, end, ext = layout.parse_key(key)
        assert end - start + 1 == lpf
        for seq in (start, end, (start + end) // 2):
            assert layout.object_key(seq, ext) == key
        assert layout.parse_key(f"prefix/{key}") == (start, end, ext)


def test_real_pubnet_object_name(twin):
    path = TESTDATA / "ledgers" / "pubnet" / "FCD285FF--53312000.xdr.zstd"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    layout = twin.keys.Layout(1, 64000, ".xdr.zstd")
    assert layout.parse_key(path.name) == (53312000, 53312000, ".xdr.zstd")
    assert layout.file_name(53312000) == path.name


SEQS = st.one_of(st.integers(0, MAX), st.sampled_from([0, 1, MAX - 1, MAX]))
SIZES = st.one_of(st.sampled_from([1, 2, 64, 1000, 64000]), st.integers(1, MAX))
LAYOUT_ARGS = SIZES.flatmap(
    lambda lpf: st.tuples(
        st.just(lpf),
        st.one_of(st.sampled_from([1, min(10, MAX // lpf), MAX // lpf]), st.integers(1, MAX // lpf)),
        st.sampled_from([".xdr.zst", ".xdr.zstd"]),
    )
)


@given(args=LAYOUT_ARGS, seq=SEQS, prefix=st.sampled_from(["", "p/", "a/b/"]))
def test_round_trip_property(twin, args, seq, prefix):
    layout = twin.keys.Layout(*args)
    key = layout.object_key(seq)
    assert layout.parse_key(prefix + key) == (layout.file_start(seq), layout.file_end(seq), args[2])
    assert layout.file_start(seq) <= seq <= layout.file_end(seq)
    assert layout.partition_start(seq) <= layout.file_start(seq)
    assert layout.file_end(seq) <= layout.partition_end(seq)


KEY_CHARS = "0123456789ABCDEFabcdef-/.xdrzst٠"


@given(
    args=st.one_of(LAYOUT_ARGS, st.tuples(st.integers(-2, 2**33), st.integers(-2, 2**33))),
    seq=st.one_of(SEQS, st.integers(-(2**65), 2**65), st.sampled_from([None, 1.0, "3", True])),
    edits=st.lists(
        st.tuples(st.integers(0, 80), st.sampled_from(["set", "insert", "delete"]), st.sampled_from(KEY_CHARS)),
        max_size=3,
    ),
    ext=st.sampled_from([None, ".xdr.zst", ".xdr.zstd", ".zst"]),
)
def test_twins_agree(twins, args, seq, edits, ext):
    c, py = (outcome(t.keys.Layout, *args) for t in twins)
    assert c[0] == py[0] and (repr(c[1]) == repr(py[1]) if c[0] == "ok" else c == py)
    if c[0] != "ok":
        return
    lc, lp = c[1], py[1]
    assert (lc.ledgers_per_file, lc.files_per_partition, lc.ledgers_per_partition, lc.extension) == (
        lp.ledgers_per_file,
        lp.files_per_partition,
        lp.ledgers_per_partition,
        lp.extension,
    )
    for name in ("file_start", "file_end", "partition_start", "partition_end", "partition_dir"):
        assert outcome(getattr(lc, name), seq) == outcome(getattr(lp, name), seq), name
    for name in ("file_name", "object_key"):
        assert outcome(getattr(lc, name), seq, ext) == outcome(getattr(lp, name), seq, ext), name
    # Parse near-miss keys: the right key with a few characters changed.
    chars = list(outcome(lp.object_key, seq % (MAX + 1) if isinstance(seq, int) else 0)[1])
    for pos, op, ch in edits:
        pos = min(pos, len(chars))
        if op == "insert":
            chars.insert(pos, ch)
        elif pos < len(chars):
            chars[pos : pos + 1] = [ch] if op == "set" else []
    key = "".join(chars)
    parsed = outcome(lc.parse_key, key)
    assert parsed == outcome(lp.parse_key, key)
    if parsed[0] == "ok":  # whatever is accepted ends in exactly the layout's own file name
        start, end, found_ext = parsed[1]
        assert key.rpartition("/")[2] == lp.file_name(start, found_ext)
        assert end == lp.file_end(start)
