"""pack writes lakes the way the exporter does; renumber makes long runs of
real ledgers that verify like real ones."""

from __future__ import annotations

import json
import struct

import pytest

from stellar_live_source import cli
from stellar_live_source.core import decode
from stellar_live_source.core.keys import Layout
from stellar_live_source.ops.config import defaults
from stellar_live_source.tools import pack

from .conftest import LEDGERS, TESTDATA, needs_testdata

pytestmark = needs_testdata

TESTNET = LEDGERS / "testnet" / "lighthorizon_1410048-1410367"
LARGE = next(iter(sorted((LEDGERS / "synthetic").glob("stellar-rpc__load-test-ledgers-v25_*.xdr.zstd"))), None)


MAX = defaults().storage.max_object_bytes  # the configuration's cap on an object's size


def _objects(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith((".xdr.zst", ".xdr.zstd")))


@pytest.mark.parametrize("lpf,fpp,ext", [(64, 10, ".xdr.zst"), (1, 64000, ".xdr.zstd"), (10, 3, ".xdr.zst")])
def test_pack_real_ledgers_into_a_lake(tmp_path, lpf, fpp, ext):
    files = sorted(TESTNET.glob("*.xdr"))[:130]
    keys = pack.write_lake(
        tmp_path,
        pack.ledgers_of(files, MAX),
        ledgers_per_file=lpf,
        files_per_partition=fpp,
        extension=ext,
        network_passphrase="Test SDF Network ; September 2015",
    )
    layout = Layout(lpf, fpp, ext)
    manifest = json.loads((tmp_path / ".config.json").read_text())
    assert manifest == {
        "networkPassphrase": "Test SDF Network ; September 2015",
        "version": "1.0",
        "compression": "zstd",
        "ledgersPerBatch": lpf,
        "batchesPerPartition": fpp,
    }
    seqs, payloads = [], []
    for key in keys:
        decoded = decode.decode_object((tmp_path / key).read_bytes(), max_size=MAX)
        assert decoded.start is not None  # a batch
        assert layout.object_key(decoded.start) == key
        seqs += [led.seq for led in decoded.ledgers]
        payloads += [bytes(decoded.xdr(i)) for i in range(len(decoded.ledgers))]
    assert seqs == list(range(1410048, 1410048 + 130))
    assert payloads == [f.read_bytes() for f in files]


def test_the_first_object_of_a_lake_holds_2_to_63(tmp_path):
    ledgers = list(pack.renumber(pack.ledgers_of(sorted(TESTNET.glob("*.xdr"))[:3], MAX), 2, 70))
    keys = pack.write_lake(tmp_path, ledgers)
    assert keys == ["FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst", "FFFFFFFF--0-639/FFFFFFBF--64-127.xdr.zst"]
    first = decode.decode_object((tmp_path / keys[0]).read_bytes(), max_size=MAX)
    assert (first.start, first.end, len(first.ledgers)) == (2, 63, 62)


@pytest.mark.skipif(LARGE is None, reason="the large v25 ledgers are not in the test data")
def test_renumbered_large_ledgers_chain_and_verify(tmp_path):
    assert LARGE is not None  # (skipped otherwise)
    keys = pack.write_lake(tmp_path, pack.renumber(pack.ledgers_of([LARGE], MAX), 5000, 40), ledgers_per_file=8)
    prev = None
    for key in keys:
        decoded = decode.decode_object(
            (tmp_path / key).read_bytes(), max_size=MAX
        )  # verifies hashes and the chain inside
        decode.verify_chain(decoded.ledgers, prev)
        prev = decoded.ledgers[-1].hash
    assert decoded.ledgers[-1].seq == 5039


def test_renumber_rewrites_only_sequence_prev_and_hash():
    original = next(pack.ledgers_of([TESTNET / "1410100.xdr"], MAX))
    (new,) = pack.renumber([original], 77, 1, prev_hash=b"\x07" * 32)
    assert len(new) == len(original)
    diff = [i for i in range(len(new)) if new[i] != original[i]]
    d = decode.decode_file(new, max_size=MAX)
    led = d.ledgers[0]
    assert (led.seq, led.prev, led.hash_ok) == (77, b"\x07" * 32, True)
    # the hash (32), prev (32) and ledgerSeq (4) are all that changed
    assert 0 < len(diff) <= 68


def test_pack_refuses_a_gap(tmp_path):
    files = [TESTNET / "1410100.xdr", TESTNET / "1410102.xdr"]
    with pytest.raises(ValueError, match="ledger 1410102 follows ledger 1410100"):
        pack.write_lake(tmp_path, pack.ledgers_of(files, MAX))


def test_pack_cli_with_renumber_then_inspect(tmp_path, capsys):
    out = tmp_path / "lake"
    assert (
        cli.main(
            [
                "pack",
                str(out),
                str(TESTNET / "1410100.xdr"),
                str(TESTNET / "1410101.xdr"),
                "--renumber",
                "1000",
                "--count",
                "100",
                "--ledgers-per-file",
                "16",
                "--files-per-partition",
                "4",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["inspect", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1000, 1100))
    assert all(r["hash_ok"] for r in rows)
    assert all(rows[i]["prev"] == rows[i - 1]["hash"] for i in range(1, len(rows)))


def test_pack_cli_errors_exit_with_the_error_models_codes(tmp_path, capsys):
    one = str(TESTNET / "1410100.xdr")
    assert cli.main(["pack", str(tmp_path), "--renumber", "5"]) == 2  # usage: no inputs
    assert cli.main(["pack", str(tmp_path), one, "--renumber", "5"]) == 2  # usage: --renumber needs --count
    assert cli.main(["pack", str(tmp_path), one, "--ledgers-per-file", "0"]) == 2
    assert cli.main(["pack", str(tmp_path), str(tmp_path / "nope.xdr")]) == 1  # a bad input file
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("stellar-live-source pack: ") for line in err), err
    assert "--count" in err[1] and "ledgers_per_file" in err[2] and "nope.xdr: no such file" in err[3]


def test_batch_xdr_layout():
    assert pack.batch_xdr(5, 6, [b"ab", b"cd"]) == struct.pack(">III", 5, 6, 2) + b"abcd"


def test_the_shared_lake_is_what_pack_writes(tmp_path):
    """The lake in shared/testdata was made from the raw testnet ledgers; pack
    of the same ledgers gives objects that decode to the same ledgers."""
    lake = TESTDATA / "lakes" / "testnet_1410048-1410367_lpf64_fpp10"
    keys = pack.write_lake(tmp_path, pack.ledgers_of(sorted(TESTNET.glob("*.xdr")), MAX))
    assert sorted(keys) == sorted(str(p.relative_to(lake)) for p in _objects(lake))
    for key in keys:
        ours = decode.decode_object((tmp_path / key).read_bytes(), max_size=MAX)
        theirs = decode.decode_object((lake / key).read_bytes(), max_size=MAX)
        assert ours.data == theirs.data
