"""``frame_object``, the decode the service runs: every real object gives the
frames of its ledgers' exact bytes, and it refuses what ``decode_object``
refuses, with the same errors, in both twins."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from stellar_live_source.core import decode
from stellar_live_source.core.frame import parse_raw_ledger
from stellar_live_source.errors import HashError, XdrError
from stellar_live_source.tools.pack import renumber

from .conftest import LEDGERS, TESTDATA, needs_testdata, outcome
from .conftest import batch as _batch

pytestmark = needs_testdata

L10 = (LEDGERS / "empty" / "StellarCN+py-stellar-base__10_v1_2cb7f4dd.xdr").read_bytes()
L11 = (LEDGERS / "empty" / "StellarCN+py-stellar-base__11_v1_ef704c4f.xdr").read_bytes()


def _frames(twin, data: bytes, verify: bool = True):
    start, end, spans = twin.walk.split_batch(data)
    return twin.index.frame_ledgers(data, spans, start, end, verify)


def test_every_real_object_frames_its_ledgers_exact_bytes(twin, index_rows):
    known = {(r["seq"], r["sha256"]) for r in index_rows}
    objects = sorted((TESTDATA / "lakes").rglob("*.xdr.zst")) + sorted(LEDGERS.rglob("*.xdr.zst"))
    checked = 0
    for path in objects:
        data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
        start, end, spans = twin.walk.split_batch(data)
        frames, first_prev, last_hash, nbytes, fallback = twin.index.frame_ledgers(data, spans, start, end)
        facts = twin.index.index_ledgers(data, spans)
        assert [parse_raw_ledger(f) for f in frames] == [
            (start + i, data[off : off + length]) for i, (off, length, _) in enumerate(spans)
        ], path
        assert (first_prev, last_hash, nbytes, fallback) == (facts[0][4], facts[-1][3], sum(map(len, frames)), 0)
        for f in frames:
            seq, xdr = parse_raw_ledger(f)
            assert (seq, hashlib.sha256(xdr).hexdigest()) in known, (path, seq)  # the exact bytes the index holds
            checked += 1
    assert checked >= 320 + 3


def _broken_chain() -> bytes:
    a10, _ = renumber([L10, L11], 10, 2)
    _, b11 = renumber([L10, L11], 10, 2, prev_hash=b"\1" * 32)  # hashes right, names another ledger 10
    return _batch([a10, b11], 10)


def _bad_hash() -> bytes:
    bad = bytearray(L11)
    bad[60] ^= 0xFF  # inside the header's txSetHash: the header no longer hashes to its hash
    return _batch([L10, bytes(bad)], 10)


@pytest.mark.parametrize(
    "body,error,words",
    [
        (_batch([L10], 10, 11), XdrError, "batch bounds 10-11 do not match its 1 ledgers"),
        (_batch([L10], 10, 9), XdrError, "batch bounds 10-9"),
        (_batch([L10], 9), XdrError, "ledger sequence 10 where the batch bounds 9-9 put 9"),
        (_batch([], 10, 9), XdrError, "batch bounds 10-9 do not match its 0 ledgers"),
        (_bad_hash(), HashError, "ledger 11: header hash does not match SHA-256 of the header"),
        (_broken_chain(), HashError, "ledger 11: previousLedgerHash"),
    ],
    ids=["bounds", "bounds-backwards", "sequence", "empty", "hash", "chain"],
)
def test_it_refuses_what_decode_refuses_with_the_same_error(twin, body, error, words):
    got = outcome(_frames, twin, body)
    assert got[0] is error and words in got[1], got
    assert got == outcome(lambda b: decode.decode_batch(b).ledgers, body)
    framed = outcome(lambda b: decode.frame_object(zstandard.ZstdCompressor().compress(b), max_size=1 << 20), body)
    assert framed == got


def test_without_verification_hashes_are_not_checked(twin):
    for body in (_bad_hash(), _broken_chain()):
        frames = _frames(twin, body, verify=False)[0]
        assert [parse_raw_ledger(f)[0] for f in frames] == [10, 11]


def test_the_index_walks_each_stellar_value_once(monkeypatch):
    """A header's StellarValue is walked for where it ends (ledgerSeq follows it),
    and the rest of the header from there, not the whole header again."""
    from stellar_live_source.core import _index_py, _walk_gen_py, _walk_py

    path = sorted((TESTDATA / "lakes").rglob("*.xdr.zst"))[0]
    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    start, end, spans = _walk_py.split_batch(data)
    walked = []
    real = _walk_gen_py.w_StellarValue

    def spy(*a):
        walked.append(a[1])
        return real(*a)

    monkeypatch.setattr(_walk_gen_py, "w_StellarValue", spy)
    _index_py.index_ledgers(data, spans)
    assert len(walked) == len(spans) == 64
    walked.clear()
    _index_py.frame_ledgers(data, spans, start, end)
    assert len(walked) == len(spans)
