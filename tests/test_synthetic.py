"""The synthetic ledger generator: valid XDR, a real hash chain, determinism, and the coverage it promises."""

from __future__ import annotations

import hashlib
import sys

import pytest

pytest.importorskip("stellar_sdk")
from stellar_sdk import Keypair, TransactionBuilder, xdr  # noqa: E402 - after the importorskip

from stellar_live_source.tools.synthetic import ledger_header_hash, synthetic_ledgers  # noqa: E402 - after the importorskip

START, SEED = 100, 7
PASSPHRASE = "Standalone Network ; February 2017"


@pytest.fixture(scope="module")
def mix() -> list[bytes]:
    return list(synthetic_ledgers(12, START, seed=SEED))


@pytest.fixture(scope="module")
def decoded(mix: list[bytes]) -> list:
    return [xdr.LedgerCloseMeta.from_xdr_bytes(b) for b in mix]


@pytest.fixture(scope="module")
def small() -> list[bytes]:
    return list(synthetic_ledgers(12, START, seed=SEED, sizes="small"))


def body(lcm):
    return {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}[lcm.v]


def envelopes(lcm) -> list:
    ts = body(lcm).tx_set
    if lcm.v == 0:
        return ts.txs
    out = []
    for phase in ts.v1_tx_set.phases:
        if phase.v == 0:
            out += [e for c in phase.v0_components for e in c.txs_maybe_discounted_fee.txs]
        else:
            for stage in phase.parallel_txs_component.execution_stages:
                out += [e for cluster in stage.parallel_tx_execution_stage for e in cluster.dependent_tx_cluster]
    return out


def tx_metas(lcms) -> list:
    return [m.tx_apply_processing for lcm in lcms for m in body(lcm).tx_processing]


def changes_of(meta) -> list:
    inner = {1: meta.v1, 2: meta.v2, 3: meta.v3, 4: meta.v4}[meta.v]
    out = [c for op in inner.operations for c in op.changes.ledger_entry_changes]
    return out + inner.tx_changes_before.ledger_entry_changes


def scvals(v):
    """``v`` and every SCVal nested in it."""
    yield v
    if v.type == xdr.SCValType.SCV_VEC and v.vec:
        for item in v.vec.sc_vec:
            yield from scvals(item)
    if v.type == xdr.SCValType.SCV_MAP and v.map:
        for e in v.map.sc_map:
            yield from scvals(e.key)
            yield from scvals(e.val)


def test_round_trip(mix, decoded):
    for raw, lcm in zip(mix, decoded, strict=True):
        assert lcm.to_xdr_bytes() == raw


def test_versions_and_protocols(decoded):
    assert {lcm.v for lcm in decoded} == {0, 1, 2}
    for lcm in decoded:
        proto = body(lcm).ledger_header.header.ledger_version.uint32
        assert {0: proto <= 19, 1: 20 <= proto <= 22, 2: proto >= 23}[lcm.v], (lcm.v, proto)
        if lcm.v == 1:
            assert body(lcm).unused == []


def test_hash_chain_and_sequences(decoded):
    prev = None
    for i, lcm in enumerate(decoded):
        entry = body(lcm).ledger_header
        header_xdr = entry.header.to_xdr_bytes()
        assert entry.hash.hash == hashlib.sha256(header_xdr).digest() == ledger_header_hash(header_xdr)
        assert entry.header.ledger_seq.uint32 == START + i
        if prev is not None:
            assert entry.header.previous_ledger_hash.hash == prev
        prev = entry.hash.hash


def test_set_and_result_hashes(decoded):
    for lcm in decoded:
        b = body(lcm)
        header = b.ledger_header.header
        results = xdr.TransactionResultSet([m.result for m in b.tx_processing])
        assert header.tx_set_result_hash.hash == hashlib.sha256(results.to_xdr_bytes()).digest()
        if lcm.v == 0:
            prev_hash, legacy = b.tx_set.previous_ledger_hash.hash, hashlib.sha256(b.tx_set.previous_ledger_hash.hash)
            for e in b.tx_set.txs:
                legacy.update(e.to_xdr_bytes())
            assert header.scp_value.tx_set_hash.hash == legacy.digest()
        else:
            prev_hash = b.tx_set.v1_tx_set.previous_ledger_hash.hash
            assert header.scp_value.tx_set_hash.hash == hashlib.sha256(b.tx_set.to_xdr_bytes()).digest()
        assert prev_hash == header.previous_ledger_hash.hash


def test_tx_hashes_and_signatures(decoded):
    """Result pairs carry the envelopes' real hashes, signed by their sources (checked by the SDK's own code)."""
    for lcm in decoded[:5] + decoded[7:9]:  # the non-large ones: every envelope type, quick enough
        hashes = set()
        for env in envelopes(lcm):
            te = TransactionBuilder.from_xdr(env.to_xdr(), PASSPHRASE)
            tx = te.transaction
            signer = tx.fee_source if hasattr(tx, "fee_source") else tx.source
            Keypair.from_public_key(signer.account_id).verify(te.hash(), te.signatures[0].signature)
            hashes.add(te.hash())
        assert hashes == {m.result.transaction_hash.hash for m in body(lcm).tx_processing}


def test_deterministic(mix, small):
    assert list(synthetic_ledgers(12, START, seed=SEED, sizes="small")) == small
    assert list(synthetic_ledgers(4, START, seed=SEED)) == mix[:4]  # and a shorter run is a prefix
    other = list(synthetic_ledgers(12, START, seed=SEED + 1, sizes="small"))
    assert all(a != b for a, b in zip(other, small, strict=True))


def test_sizes(mix, decoded, small):
    assert max(len(b) for b in mix) > 1_500_000
    assert min(len(body(lcm).tx_processing) for lcm in decoded) == 0
    assert all(len(b) < 64_000 for b in small)
    assert all(len(body(xdr.LedgerCloseMeta.from_xdr_bytes(b)).tx_processing) > 0 for b in small)


def test_large():
    (raw,) = synthetic_ledgers(1, START, seed=SEED, sizes="large")  # classic-only v0: the costliest to build
    assert 1_500_000 < len(raw) < 2_600_000


def test_classic_coverage(decoded):
    v0 = [lcm for lcm in decoded if lcm.v == 0]
    assert all(isinstance(body(lcm).tx_set, xdr.TransactionSet) for lcm in v0)
    assert {m.v for m in tx_metas(v0)} == {1, 2}
    kinds = xdr.EnvelopeType
    env_types = {e.type for lcm in decoded for e in envelopes(lcm)}
    assert env_types == {kinds.ENVELOPE_TYPE_TX_V0, kinds.ENVELOPE_TYPE_TX, kinds.ENVELOPE_TYPE_TX_FEE_BUMP}
    txs = [(e.v0 or e.v1 or e.fee_bump.tx.inner_tx.v1).tx for lcm in v0 for e in envelopes(lcm)]
    op_types = {op.body.type for tx in txs for op in tx.operations}
    assert {xdr.OperationType.PAYMENT, xdr.OperationType.CREATE_ACCOUNT, xdr.OperationType.MANAGE_DATA} <= op_types
    results = {m.result.result.result.code for lcm in decoded for m in body(lcm).tx_processing}
    assert {xdr.TransactionResultCode.txSUCCESS, xdr.TransactionResultCode.txFEE_BUMP_INNER_SUCCESS} <= results


def test_soroban_v1_coverage(decoded):
    v1 = [lcm for lcm in decoded if lcm.v == 1]
    metas = tx_metas(v1)
    assert {m.v for m in metas} == {3}
    soroban = [m.v3.soroban_meta for m in metas if m.v3.soroban_meta]
    assert any(s.events for s in soroban) and any(s.diagnostic_events for s in soroban)
    assert {e.type for s in soroban for e in s.events} == {xdr.ContractEventType.CONTRACT}
    assert any(s.ext.v == 1 for s in soroban)
    assert any(body(lcm).evicted_keys for lcm in v1)
    assert any(body(lcm).ext.v == 1 for lcm in v1)
    for lcm in v1:  # generalized set: a classic and a Soroban phase, both v0
        assert [p.v for p in body(lcm).tx_set.v1_tx_set.phases] == [0, 0]


def test_soroban_v2_coverage(decoded):
    v2 = [lcm for lcm in decoded if lcm.v == 2]
    metas = tx_metas(v2)
    assert {m.v for m in metas} == {4}
    assert any(op.events for m in metas for op in m.v4.operations)
    assert any(m.v4.events for m in metas) and any(m.v4.diagnostic_events for m in metas)
    assert any(m.v4.soroban_meta and m.v4.soroban_meta.return_value for m in metas)
    assert any(body(lcm).evicted_keys for lcm in v2)
    assert any(m.post_tx_apply_fee_processing.ledger_entry_changes for lcm in v2 for m in body(lcm).tx_processing)
    change_types = {c.type for m in metas for c in changes_of(m)}
    assert xdr.LedgerEntryChangeType.LEDGER_ENTRY_RESTORED in change_types
    # contract data whose value nests maps in vecs in maps
    nested = False
    for m in metas:
        for c in changes_of(m):
            entry = c.updated or c.created
            if entry and entry.data.type == xdr.LedgerEntryType.CONTRACT_DATA:
                types = [v.type for v in scvals(entry.data.contract_data.val)]
                nested |= types.count(xdr.SCValType.SCV_MAP) > 1 and xdr.SCValType.SCV_VEC in types
    assert nested
    stages = 0
    for lcm in v2:  # the Soroban phase is the parallel one
        phases = body(lcm).tx_set.v1_tx_set.phases
        assert [p.v for p in phases] == [0, 1]
        stages += len(phases[1].parallel_txs_component.execution_stages)
    assert stages > 0


def test_header_coverage(decoded):
    headers = [body(lcm).ledger_header.header for lcm in decoded]
    assert {h.ext.v for h in headers} == {0, 1}
    upgraded = False
    for lcm, h in zip(decoded, headers, strict=True):
        ups = [xdr.LedgerUpgrade.from_xdr_bytes(u.upgrade_type) for u in h.scp_value.upgrades]
        assert [m.upgrade for m in body(lcm).upgrades_processing] == ups
        for u in ups:
            if u.type == xdr.LedgerUpgradeType.LEDGER_UPGRADE_VERSION:
                assert u.new_ledger_version == h.ledger_version
                upgraded = True
    assert upgraded
    value_types = {h.scp_value.ext.v for h in headers}
    assert value_types == {xdr.StellarValueType.STELLAR_VALUE_BASIC, xdr.StellarValueType.STELLAR_VALUE_SIGNED}
    assert any(body(lcm).scp_info for lcm in decoded)


def test_arguments(monkeypatch):
    with pytest.raises(ValueError):
        synthetic_ledgers(1, sizes="huge")  # raised at the call, before any ledger is made
    with pytest.raises(ValueError):
        synthetic_ledgers(2, start_seq=0xFFFFFFFF)
    assert list(synthetic_ledgers(0)) == []
    monkeypatch.setitem(sys.modules, "stellar_sdk", None)  # makes `import stellar_sdk` fail
    with pytest.raises(RuntimeError, match=r"\[sdk\] extra"):
        synthetic_ledgers(1)
