"""Corrupt input always ends in a clear error naming where, never a crash, a
hang or a read out of bounds (the compiled walker also runs under the fuzz
harness in tests/fuzz)."""

from __future__ import annotations

import inspect
import random
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from stellar_live_source.core import decode
from stellar_live_source.errors import CoreError, HashError, XdrError, ZstdError

from .conftest import LEDGERS, Twin, needs_testdata
from .conftest import batch as _batch
from .fuzz.agree import assert_twins_agree

pytestmark = needs_testdata

SMALL = LEDGERS / "empty" / "StellarCN+py-stellar-base__10_v1_2cb7f4dd.xdr"
CAP = 64 << 20  # above every test object; the service's cap is its configuration's
BATCH_997 = LEDGERS / "testnet" / "datastore_testbucket_997-999" / "FFFFFFFF--0-63999" / "FFFFFC1A--997.xdr.zst"


def test_every_truncation_of_a_small_ledger_is_a_clear_error(twin):
    data = SMALL.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(XdrError) as exc:
            twin.walk.split_ledgers(data[:cut])
        msg = str(exc.value)
        assert msg.startswith("ledger #0: ") and " at byte " in msg and " reading " in msg
        assert 0 <= exc.value.offset <= cut


def test_every_truncation_of_a_batch_is_a_clear_error(twin):
    data = zstandard.ZstdDecompressor().decompressobj().decompress(BATCH_997.read_bytes())
    twin.walk.split_batch(data)
    for cut in range(len(data)):
        with pytest.raises(XdrError):
            twin.walk.split_batch(data[:cut])


def test_flipped_bytes_never_crash(twin):
    data = SMALL.read_bytes()
    rng = random.Random(7)
    outcomes = set()
    for i in range(len(data)):
        buf = bytearray(data)
        buf[i] ^= 1 << rng.randrange(8)
        try:
            ((off, length, _),) = twin.walk.split_ledgers(bytes(buf))
            outcomes.add("ok")
            assert (off, length) == (0, len(data))
        except XdrError as exc:
            outcomes.add(exc.reason)
    # Flips land in hashes (accepted), counts, arms and enums (refused).
    assert "ok" in outcomes and len(outcomes) >= 3, outcomes


def test_huge_count_is_refused_before_looping(twin):
    data = bytearray(SMALL.read_bytes())
    # The last word of an empty v1 ledger's body is a count (evicted keys);
    # set it to 2**32-1 elements.
    data[-4:] = b"\xff\xff\xff\xff"
    with pytest.raises(XdrError, match="input ends|above the declared maximum"):
        twin.walk.split_ledgers(bytes(data))


def test_non_zero_padding_is_an_error(twin):
    # SCVal of arm SCV_BYTES with one byte of content and three of padding.
    good = struct.pack(">II", 13, 1) + b"\x41\0\0\0"
    assert twin.walk.walk_type("SCVal", good) == 12
    with pytest.raises(XdrError, match="non-zero padding at byte 9 reading SCBytes"):
        twin.walk.walk_type("SCVal", good[:-3] + b"\x01\0\0")


def test_length_over_the_declared_maximum(twin):
    # SCSymbol is string<32>.
    with pytest.raises(XdrError, match="above the declared maximum at byte 4 reading SCSymbol"):
        twin.walk.walk_type("SCVal", struct.pack(">II", 15, 33) + b"a" * 36)


def test_nesting_is_bounded(twin):
    # SCVal -> vec -> SCVal ... deeper than the limit, then a void.
    level = struct.pack(">III", 16, 1, 1)
    nested = level * 300 + struct.pack(">I", 1)
    with pytest.raises(XdrError, match="nesting deeper than the depth limit"):
        twin.walk.walk_type("SCVal", nested)
    assert twin.walk.walk_type("SCVal", level * 40 + struct.pack(">I", 1), 512) == 40 * 12 + 4


def test_bad_optional_flag(twin):
    with pytest.raises(XdrError, match="bool or optional flag not 0 or 1 at byte 4 reading SCVal"):
        twin.walk.walk_type("SCVal", struct.pack(">II", 16, 2))


def test_wrong_batch_bounds():
    led = SMALL.read_bytes()  # ledger 10
    assert [x.seq for x in decode.decode_batch(_batch([led], 10), verify=False).ledgers] == [10]
    with pytest.raises(XdrError, match="batch bounds 10-11 do not match its 1 ledgers"):
        decode.decode_batch(_batch([led], 10, 11), verify=False)
    with pytest.raises(XdrError, match="ledger sequence 10 where the batch bounds 9-9 put 9"):
        decode.decode_batch(_batch([led], 9), verify=False)
    with pytest.raises(XdrError, match="batch bounds 10-9"):
        decode.decode_batch(_batch([led], 10, 9), verify=False)


def test_trailing_bytes_after_the_last_ledger(twin):
    with pytest.raises(XdrError, match="4 bytes after the last ledger at byte 556"):
        twin.walk.split_ledgers(SMALL.read_bytes() + b"\0\0\0\0")


def test_broken_chain_and_wrong_hash():
    l10 = SMALL.read_bytes()
    l11 = (LEDGERS / "empty" / "StellarCN+py-stellar-base__11_v1_ef704c4f.xdr").read_bytes()
    assert len(decode.decode_batch(_batch([l10, l11], 10)).ledgers) == 2
    # ledger 11 rewritten as 12 with the hash fixed: a gap in the chain of hashes
    bad = bytearray(l10)
    bad[-50] ^= 1  # inside the ledger body: hash untouched, header untouched
    ok = decode.decode_batch(_batch([bytes(bad)], 10))
    assert ok.ledgers[0].hash_ok
    hdr = bytearray(l11)
    hdr[60] ^= 0xFF  # inside the header's txSetHash: the header no longer hashes to its hash
    with pytest.raises(HashError, match="ledger 11: header hash does not match"):
        decode.decode_batch(_batch([l10, bytes(hdr)], 10))
    with pytest.raises(HashError, match="ledger 11: previousLedgerHash"):
        decode.verify_chain(decode.decode_batch(_batch([l11], 11)).ledgers, prev_hash=b"\1" * 32)


def test_zstd_garbage_and_bomb_through_decode_object():
    with pytest.raises(ZstdError):
        decode.decode_object(b"\x28\xb5\x2f\xfd" + b"garbage" * 10, max_size=CAP)
    with pytest.raises(ZstdError):
        decode.decode_object(b"not zstd at all", max_size=CAP)
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (64 << 20))
    with pytest.raises(ZstdError, match="cap"):
        decode.decode_object(bomb, max_size=1 << 20)


def test_the_size_cap_is_the_callers():
    """Its default (MAX_OBJECT_BYTES) is the configuration's alone, never the core's."""
    for fn in (decode.decode_object, decode.frame_object, decode.decode_file):
        assert inspect.signature(fn).parameters["max_size"].default is inspect.Parameter.empty, fn.__name__
    with pytest.raises(TypeError, match="max_size"):
        decode.frame_object(BATCH_997.read_bytes())  # type: ignore[call-arg]  # the point: no max_size


def test_inspect_reports_garbage_with_file_and_offset(tmp_path, capsys):
    from stellar_live_source import cli

    bad = tmp_path / "bad.xdr"
    bad.write_bytes(SMALL.read_bytes()[:300])
    assert cli.main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "at byte" in err and len(err.splitlines()) == 1


def test_every_error_is_a_core_error():
    assert issubclass(XdrError, CoreError) and issubclass(ZstdError, CoreError) and issubclass(HashError, CoreError)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=600), mode=st.integers(0, 2), fallback=st.booleans())
def test_random_bytes_never_crash_and_the_twins_agree(twins: tuple[Twin, Twin], body, mode, fallback):
    """The fuzz harness's check (tests/fuzz/fuzz_walk.py), run briefly on every test run."""
    assert_twins_agree(*twins, mode, fallback, body)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_real_ledgers_get_the_same_verdict_from_both_twins(twins: tuple[Twin, Twin], data):
    body = bytearray(SMALL.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    assert_twins_agree(*twins, 1, data.draw(st.booleans()), bytes(body))


def test_every_truncation_of_a_header_fails_where_its_walk_does(twin):
    """The index walks a header in parts (StellarValue, then the rest); its
    errors stop at the offset a walk of the whole LedgerHeader stops at."""
    data = SMALL.read_bytes()
    _, _, h, he, seq_at = twin.index.header_span(data, 0, len(data))
    for cut in range(h, he):
        with pytest.raises(XdrError) as located:
            twin.index.header_span(data[:cut], 0, cut)
        with pytest.raises(XdrError) as walked:
            twin.walk.walk_type("LedgerHeader", data[h:cut])
        assert located.value.offset == h + walked.value.offset, cut
        assert located.value.type_name == ("StellarValue" if h + 36 <= cut < seq_at - 64 else "LedgerHeader"), cut
