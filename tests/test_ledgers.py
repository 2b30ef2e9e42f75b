"""Every real ledger of the shared test data is split to exactly its bytes and
indexed to the facts an independent decoder (stellar-sdk) recorded."""

from __future__ import annotations

import hashlib
import json
import struct
from collections import defaultdict

import pytest
import zstandard

from stellar_live_source import cli
from stellar_live_source.core import walk

from .conftest import LEDGERS, compiled_expected, needs_testdata

pytestmark = needs_testdata


def _containers(rows):
    by_file = defaultdict(list)
    for r in rows:
        by_file[r["file"]].append(r)
    return by_file


def _split(twin, container: str, raw: bytes):
    """Spans via the twin's own entry points, the framing known from INDEX."""
    if container == "raw":
        return raw, twin.walk.split_ledgers(raw)
    data = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if container == "batch":
        start, end, spans = twin.walk.split_batch(data)
        return data, spans
    spans, p = [], 0
    while p < len(data):
        (mark,) = struct.unpack_from(">I", data, p)
        length = mark & 0x7FFFFFFF
        spans += twin.walk.split_ledgers(data, p + 4, p + 4 + length, 1)
        p += 4 + length
    return data, spans


def test_selector_loads_the_compiled_walker():
    if compiled_expected():
        assert walk._impl.__name__.endswith("._walk_c")
    else:
        assert walk._impl.__name__.endswith("._walk_py")


def test_every_indexed_ledger_splits_to_its_exact_bytes(twin, index_rows):
    checked = 0
    for file, rows in _containers(index_rows).items():
        data, spans = _split(twin, rows[0]["container"], (LEDGERS / file).read_bytes())
        assert len(spans) == len(rows), file
        facts = twin.index.index_ledgers(data, spans)
        for r in rows:
            off, length, fallback = spans[r["index"]]
            assert not fallback, f"{file}#{r['index']}: the hash-chain fallback was used on real data"
            assert length == r["xdr_len"]
            assert hashlib.sha256(data[off : off + length]).hexdigest() == r["sha256"], f"{file}#{r['index']}"
            seq, lcm_v, protocol, h, prev, hash_ok = facts[r["index"]]
            assert (seq, lcm_v, protocol, h.hex(), prev.hex(), hash_ok) == (
                r["seq"],
                r["lcm_v"],
                r["protocol"],
                r["hash"],
                r["prev"],
                r["hash_ok"],
            ), f"{file}#{r['index']}"
            checked += 1
    assert checked == len(index_rows) >= 380


def test_inspect_json_agrees_with_the_index(index_rows, capsys, monkeypatch):
    monkeypatch.chdir(LEDGERS)
    files = list(_containers(index_rows))
    assert cli.main(["inspect", "--json", *files]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(index_rows)
    keys = {"file", "index", "seq", "lcm_v", "protocol", "xdr_len", "sha256", "hash", "prev", "hash_ok", "fallback"}
    got = {(x["file"], x["index"]): x for x in lines}
    for r in index_rows:
        x = got[(r["file"], r["index"])]
        assert set(x) == keys
        assert x["fallback"] is False
        for k in keys & set(r):
            assert x[k] == r[k], (r["file"], r["index"], k)


@pytest.mark.parametrize("fmt", ["batch", "xdr-stream", "raw"])
def test_inspect_format_forced_wrongly_fails_with_file_and_offset(fmt, capsys):
    sample = {
        "batch": "testnet/lighthorizon_1410048-1410367/1410048.xdr",
        "xdr-stream": "pubnet/FCD285FF--53312000.xdr.zstd",
        "raw": "synthetic/stellar-go__load-test-ledgers-v22_29378afc.xdr.zstd",
    }[fmt]
    path = str(LEDGERS / sample)
    assert cli.main(["inspect", "--format", fmt, path]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert path in err and "byte" in err
