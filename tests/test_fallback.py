"""Union arms newer than the grammar: an error in strict mode; with the
hash-chain fallback on, the ledger is still delimited exactly, and flagged."""

from __future__ import annotations

import logging
import struct

import pytest
import zstandard

from stellar_live_source.core import decode, index
from stellar_live_source.errors import XdrError

from .conftest import LEDGERS, batch, needs_testdata

pytestmark = needs_testdata

LAKE_997 = LEDGERS / "testnet" / "datastore_testbucket_997-999" / "FFFFFFFF--0-63999"


def _ledgers_997_999() -> list[bytes]:
    """Three consecutive, hash-chained v1 ledgers, as the exporter wrote them."""
    out = []
    for name in ("FFFFFC1A--997.xdr.zst", "FFFFFC19--998.xdr.zst", "FFFFFC18--999.xdr.zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress((LAKE_997 / name).read_bytes())
        out.append(data[12:])  # one ledger per batch: drop start, end and count
    return out


def _with_unknown_arm(index, xdr: bytes, where: str) -> bytes:
    """The ledger with one union discriminant set to an arm no grammar knows;
    its header (and so its hash) untouched."""
    buf = bytearray(xdr)
    _, _, _, header_end, _ = index.header_span(xdr, 0, len(xdr))
    if where == "lcm":  # the LedgerCloseMeta arm itself
        struct.pack_into(">I", buf, 0, 7)
    else:  # the GeneralizedTransactionSet after the LedgerHeaderHistoryEntry (ext: 4 bytes)
        assert struct.unpack_from(">I", buf, header_end + 4)[0] == 1
        struct.pack_into(">I", buf, header_end + 4, 9)
    return bytes(buf)


def _batch(ledgers: list[bytes]) -> bytes:
    return batch(ledgers, 997)


@pytest.mark.parametrize("where", ["lcm", "txset"])
def test_a_flipped_discriminant_is_an_error_in_strict_mode(twin, where):
    ledgers = _ledgers_997_999()
    ledgers[1] = _with_unknown_arm(twin.index, ledgers[1], where)
    with pytest.raises(XdrError) as exc:
        twin.walk.split_batch(_batch(ledgers))
    assert exc.value.ledger == 1
    assert exc.value.reason == "unknown union arm or enum value"
    assert exc.value.type_name == ("LedgerCloseMeta" if where == "lcm" else "GeneralizedTransactionSet")
    header_end = twin.index.header_span(ledgers[1], 0, len(ledgers[1]))[3]  # the header is intact
    assert exc.value.offset == 12 + len(ledgers[0]) + (0 if where == "lcm" else header_end + 4)


@pytest.mark.parametrize("where", ["lcm", "txset"])
def test_the_fallback_delimits_middle_and_last_ledgers_exactly(twin, where):
    original = _ledgers_997_999()
    ledgers = list(original)
    ledgers[1] = _with_unknown_arm(twin.index, ledgers[1], where)
    ledgers[2] = _with_unknown_arm(twin.index, ledgers[2], where)
    start, end, spans = twin.walk.split_batch(_batch(ledgers), fallback=True)
    assert (start, end) == (997, 999)
    offsets = [12, 12 + len(ledgers[0]), 12 + len(ledgers[0]) + len(ledgers[1])]
    assert spans == [
        (offsets[0], len(ledgers[0]), False),
        (offsets[1], len(ledgers[1]), True),
        (offsets[2], len(ledgers[2]), True),
    ]


def test_the_fallback_is_reported_and_verified(caplog):
    ledgers = _ledgers_997_999()
    ledgers[1] = _with_unknown_arm(index, ledgers[1], "txset")
    before = decode.Stats.fallback_ledgers
    with caplog.at_level(logging.WARNING, "stellar_live_source.core"):
        decoded = decode.decode_batch(_batch(ledgers), unknown_arms="hash-chain")
    assert [led.fallback for led in decoded.ledgers] == [False, True, False]
    assert [led.seq for led in decoded.ledgers] == [997, 998, 999]
    assert decode.Stats.fallback_ledgers == before + 1
    assert "ledger 998" in caplog.text and "hash chain" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "stellar_live_source.core"):
        framed = decode.frame_object(
            zstandard.ZstdCompressor().compress(_batch(ledgers)), max_size=1 << 20, unknown_arms="hash-chain"
        )
    assert framed.fallback == 1 and len(framed.frames) == 3
    assert decode.Stats.fallback_ledgers == before + 2
    assert "ledger 998" in caplog.text and "hash chain" in caplog.text
    with pytest.raises(XdrError):
        decode.decode_batch(_batch(ledgers))  # strict by default


def test_the_fallback_refuses_a_ledger_whose_header_does_not_hash(twin):
    ledgers = _ledgers_997_999()
    bad = bytearray(_with_unknown_arm(twin.index, ledgers[1], "txset"))
    bad[100] ^= 1  # inside the header
    ledgers[1] = bytes(bad)
    with pytest.raises(XdrError) as exc:
        twin.walk.split_batch(_batch(ledgers), fallback=True)
    assert exc.value.ledger == 1


def test_the_fallback_is_never_used_on_the_test_data(twin, index_rows):
    from .test_ledgers import _containers

    for file, rows in _containers(index_rows).items():
        raw = (LEDGERS / file).read_bytes()
        data = zstandard.ZstdDecompressor().decompressobj().decompress(raw) if raw[:4] == decode.ZSTD_MAGIC else raw
        kind = rows[0]["container"]
        if kind == "batch":
            spans = twin.walk.split_batch(data, fallback=True)[2]
        elif kind == "raw":
            spans = twin.walk.split_ledgers(data, fallback=True)
        else:
            spans = [
                s
                for off, n in decode._records(data)
                for s in twin.walk.split_ledgers(data, off, off + n, fallback=True)
            ]
        assert len(spans) == len(rows)
        assert not any(fb for _, _, fb in spans), file
