"""The embedded sample lake: the default the run command serves."""

from __future__ import annotations

import json

import pytest

from stellar_live_source.core import decode
from stellar_live_source.core.keys import Layout
from stellar_live_source.ops.config import defaults
from stellar_live_source.parts import SAMPLE_LAKE

MAX = defaults().storage.max_object_bytes  # the configuration's cap on an object's size


def _objects(root):
    return sorted((p for p in root.rglob("*.xdr.zst")), key=lambda p: int(p.name.split("--")[1].split("-")[0]))


def test_the_sample_lake_is_valid_and_covers_every_version():
    manifest = json.loads((SAMPLE_LAKE / ".config.json").read_text())
    layout = Layout(manifest["ledgersPerBatch"], manifest["batchesPerPartition"])
    total = sum(p.stat().st_size for p in SAMPLE_LAKE.rglob("*") if p.is_file())
    assert total < 4 << 20, "the sample lake must stay a few MB"
    prev, seqs, versions = None, [], set()
    for path in _objects(SAMPLE_LAKE):
        decoded = decode.decode_object(path.read_bytes(), max_size=MAX)
        assert decoded.start is not None  # a batch
        assert str(path.relative_to(SAMPLE_LAKE)) == layout.object_key(decoded.start)
        decode.verify_chain(decoded.ledgers, prev)
        prev = decoded.ledgers[-1].hash
        seqs += [led.seq for led in decoded.ledgers]
        versions |= {led.lcm_v for led in decoded.ledgers}
    assert seqs == list(range(2, 2 + len(seqs))) and len(seqs) >= 12
    assert versions == {0, 1, 2}


def test_the_sample_lake_is_what_make_sample_lake_writes(tmp_path):
    pytest.importorskip("stellar_sdk")
    from stellar_live_source import cli

    manifest = json.loads((SAMPLE_LAKE / ".config.json").read_text())
    n = len([1 for p in _objects(SAMPLE_LAKE) for _ in decode.decode_object(p.read_bytes(), max_size=MAX).ledgers])
    assert (
        cli.main(
            [
                "pack",
                str(tmp_path),
                "--synthetic",
                str(n),
                "--seed",
                "1",
                "--ledgers-per-file",
                str(manifest["ledgersPerBatch"]),
                "--files-per-partition",
                str(manifest["batchesPerPartition"]),
            ]
        )
        == 0
    )
    ours, committed = _objects(tmp_path), _objects(SAMPLE_LAKE)
    assert [p.relative_to(tmp_path) for p in ours] == [p.relative_to(SAMPLE_LAKE) for p in committed]
    for a, b in zip(ours, committed, strict=True):  # compare content: compressed bytes may differ across zstd releases
        assert (
            decode.decode_object(a.read_bytes(), max_size=MAX).data
            == decode.decode_object(b.read_bytes(), max_size=MAX).data
        )
