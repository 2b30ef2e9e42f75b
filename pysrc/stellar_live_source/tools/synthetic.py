"""Deterministic synthetic ``LedgerCloseMeta`` ledgers, built with stellar-sdk's XDR types.

Real ledgers cannot ship with the project, so ``stellar-live-source pack
--synthetic N`` makes sample datalakes from these. The ledgers are valid XDR
with the shapes real ones have: all three ``LedgerCloseMeta`` versions at
protocols that fit them, classic and Soroban transactions, events, ledger entry
changes, legacy / generalized / parallel tx sets, upgrades, SCP messages, and a
real hash chain. Nothing is executed: values are random but well-formed (valid
union arms; real tx hashes, tx set and result set hashes under
``network_passphrase``; real ed25519 signatures on envelopes, StellarValues and
SCP messages), and all of it comes from one seeded RNG, so a seed reproduces it.

A run cycles through ``_CYCLE`` (12 ledgers), so any 12 consecutive ledgers
cover every version and size class, and a shorter run is a prefix of a longer
one with the same arguments.

Speed: the SDK's XDR classes are pure Python and cost per object, not per byte,
so big ledgers get their bytes from blobs (SCBytes, wasm) inside a modest number
of objects.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ledger_header_hash", "synthetic_ledgers"]

_SDK_MISSING = "pack --synthetic needs the [sdk] extra: pip install 'stellar-live-source-datalake[sdk]'"

# (LedgerCloseMeta version, protocol, size class for sizes="mix"). Protocols only
# rise inside a cycle, each rise carried by a LEDGER_UPGRADE_VERSION; the next
# cycle drops back to v0 (fine for sample data). Below protocol 13 tx meta is v1.
_CYCLE = (
    (0, 12, "small"),
    (0, 12, "empty"),
    (0, 13, "medium"),
    (0, 19, "small"),
    (1, 20, "small"),
    (1, 21, "medium"),
    (1, 22, "large"),
    (1, 22, "empty"),
    (2, 23, "small"),
    (2, 23, "medium"),
    (2, 24, "large"),
    (2, 25, "small"),
)
# Approximate bytes of transactions per size class ("small" is a fixed handful).
_BUDGET = {"medium": 200_000, "large": 1_950_000}
_SIZES = ("mix", "small", "large")
_TOTAL_COINS = 10**18  # 100 billion XLM in stroops
_FN_NAMES = ("transfer", "swap", "deposit", "withdraw", "set_data", "submit", "mint", "vote")
_ENTRY_ARMS = {
    "ACCOUNT": "account",
    "TRUSTLINE": "trust_line",
    "DATA": "data",
    "CONTRACT_DATA": "contract_data",
    "CONTRACT_CODE": "contract_code",
    "TTL": "ttl",
}


def _sdk() -> Any:
    try:
        import stellar_sdk
    except ImportError as e:
        raise RuntimeError(_SDK_MISSING) from e
    return stellar_sdk


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ledger_header_hash(header_xdr: bytes) -> bytes:
    """SHA-256 of a ``LedgerHeader``'s XDR: the ledger's hash, which the next header chains to."""
    return _sha(header_xdr)


def synthetic_ledgers(
    count: int,
    start_seq: int = 2,
    *,
    seed: int = 0,
    network_passphrase: str = "Standalone Network ; February 2017",
    sizes: str = "mix",
) -> Iterator[bytes]:
    """Yield ``count`` hash-chained ``LedgerCloseMeta`` XDR blobs for sequences ``start_seq``...

    ``sizes``: "mix" cycles empty/small/medium/~2 MB ledgers, "small" keeps
    every ledger to a few KB, "large" makes every ledger about 2 MB. Bad
    arguments and a missing stellar-sdk raise here, before any ledger is made.
    """
    if sizes not in _SIZES:
        raise ValueError(f"sizes must be one of {_SIZES}, not {sizes!r}")
    if count < 0 or start_seq < 1 or start_seq + count - 1 > 0xFFFFFFFF:
        raise ValueError(f"bad range: count={count} start_seq={start_seq}")
    gen = _Gen(_sdk(), seed, network_passphrase, sizes, start_seq)
    return (gen.ledger(start_seq + i, i % len(_CYCLE)) for i in range(count))


@dataclass
class _Account:
    raw: bytes  # ed25519 public key
    kp: Any  # stellar_sdk.Keypair, signs envelopes
    balance: int
    seq: int
    last: int = 1  # lastModifiedLedgerSeq of its entries
    subentries: int = 0
    credit: int = 10**12  # trustline balance in the one credit asset


@dataclass
class _Tx:
    """One applied transaction, independent of the meta version it is written as."""

    env: Any
    hash: bytes
    fee_charged: int
    result: Any  # TransactionResultResult
    fee_changes: list
    before: list  # tx-level changes before the ops (sequence bump)
    ops: list  # per operation: (changes, contract events)
    refund: list = field(default_factory=list)  # Soroban fee refund
    tx_events: list = field(default_factory=list)  # TransactionEvent, protocol 23+
    soroban: Any = None  # (return value, diagnostic events, (nonrefundable, refundable, rent))
    weight: int = 0  # approximate XDR bytes, to fill size budgets


class _Gen:
    def __init__(self, sdk: Any, seed: int, passphrase: str, sizes: str, start_seq: int) -> None:
        self.x = x = sdk.xdr
        self.rng = rng = random.Random(seed)
        self.sizes = sizes
        self.network_id = _sha(passphrase.encode())
        self.prev_hash = rng.randbytes(32)  # the chain's anchor, from the seed
        keys = [sdk.Keypair.from_raw_ed25519_seed(rng.randbytes(32)) for _ in range(24)]
        self.accounts = [
            _Account(
                kp.raw_public_key(),
                kp,
                rng.randrange(10**14, 10**16),
                rng.randrange(1, start_seq + 1) << 32,
                max(1, start_seq - 1),
            )
            for kp in keys
        ]
        self.validators = [sdk.Keypair.from_raw_ed25519_seed(rng.randbytes(32)) for _ in range(3)]
        self.contracts = [rng.randbytes(32) for _ in range(6)]
        self.wasm_hashes = [rng.randbytes(32) for _ in range(3)]
        issuer = self.accounts[0].raw
        self.credit = x.Asset(
            x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4,
            alpha_num4=x.AlphaNum4(x.AssetCode4(b"USDC"), self._account_id(issuer)),
        )
        self.credit_name = "USDC:" + sdk.StrKey.encode_ed25519_public_key(issuer)
        self.native_sac = self._sac_id(x.Asset(x.AssetType.ASSET_TYPE_NATIVE))
        self.credit_sac = self._sac_id(self.credit)
        self.close_time = 1_600_000_000 + rng.randrange(10**8)
        self.skip_list = [rng.randbytes(32) for _ in range(4)]
        self.fee_pool, self.id_pool, self.live_soroban = 0, rng.randrange(10**6), 0
        self.base_fee, self.base_reserve, self.max_tx_set_size, self.flags = 100, 5_000_000, 1000, 0
        self.protocol: int | None = None

    # ---- small XDR builders ------------------------------------------------------

    def _account_id(self, raw: bytes) -> Any:
        x = self.x
        return x.AccountID(x.PublicKey(x.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, x.Uint256(raw)))

    def _node_id(self, kp: Any) -> Any:
        return self.x.NodeID(self._account_id(kp.raw_public_key()).account_id)

    def _muxed(self, raw: bytes, protocol: int) -> Any:
        x = self.x
        if protocol >= 13 and self.rng.random() < 0.2:  # muxed accounts exist since protocol 13
            med = x.MuxedAccountMed25519(x.Uint64(self.rng.randrange(2**64)), x.Uint256(raw))
            return x.MuxedAccount(x.CryptoKeyType.KEY_TYPE_MUXED_ED25519, med25519=med)
        return x.MuxedAccount(x.CryptoKeyType.KEY_TYPE_ED25519, ed25519=x.Uint256(raw))

    def _sac_id(self, asset: Any) -> bytes:
        """Contract id of an asset's Stellar Asset Contract, as core derives it."""
        x = self.x
        preimage = x.ContractIDPreimage(x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET, from_asset=asset)
        hip = x.HashIDPreimage(
            x.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
            contract_id=x.HashIDPreimageContractID(x.Hash(self.network_id), preimage),
        )
        return _sha(hip.to_xdr_bytes())

    def _sv(self, kind: str, **arm: Any) -> Any:
        return self.x.SCVal(getattr(self.x.SCValType, "SCV_" + kind), **arm)

    def _sym(self, s: str) -> Any:
        return self._sv("SYMBOL", sym=self.x.SCSymbol(s.encode()))

    def _str(self, s: str) -> Any:
        return self._sv("STRING", str=self.x.SCString(s.encode()))

    def _bytes(self, b: bytes) -> Any:
        return self._sv("BYTES", bytes=self.x.SCBytes(b))

    def _i128(self, n: int) -> Any:
        return self._sv("I128", i128=self.x.Int128Parts(self.x.Int64(n >> 64), self.x.Uint64(n & (2**64 - 1))))

    def _u64(self, n: int) -> Any:
        return self._sv("U64", u64=self.x.Uint64(n))

    def _vec(self, items: list) -> Any:
        return self._sv("VEC", vec=self.x.SCVec(items))

    def _map(self, pairs: list) -> Any:
        # Soroban requires map keys in order; all keys here are symbols.
        x = self.x
        entries = [x.SCMapEntry(self._sym(k), v) for k, v in sorted(pairs, key=lambda p: p[0])]
        return self._sv("MAP", map=x.SCMap(entries))

    def _sc_address(self, raw: bytes, contract: bool = False) -> Any:
        x = self.x
        if contract:
            return x.SCAddress(x.SCAddressType.SC_ADDRESS_TYPE_CONTRACT, contract_id=x.ContractID(x.Hash(raw)))
        return x.SCAddress(x.SCAddressType.SC_ADDRESS_TYPE_ACCOUNT, account_id=self._account_id(raw))

    def _addr(self, raw: bytes, contract: bool = False) -> Any:
        return self._sv("ADDRESS", address=self._sc_address(raw, contract))

    def _scalar(self) -> Any:
        """A random non-container SCVal, to vary the arms in payloads."""
        x, rng = self.x, self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return self._sv("BOOL", b=rng.random() < 0.5)
        if kind == 1:
            return self._sv("U32", u32=x.Uint32(rng.randrange(2**32)))
        if kind == 2:
            return self._sv("I64", i64=x.Int64(rng.randrange(-(2**63), 2**63)))
        if kind == 3:
            return self._sv("TIMEPOINT", timepoint=x.TimePoint(x.Uint64(self.close_time)))
        if kind == 4:
            return self._sv("U128", u128=x.UInt128Parts(x.Uint64(rng.randrange(2**64)), x.Uint64(rng.randrange(2**64))))
        if kind == 5:
            return self._sv("U256", u256=x.UInt256Parts(*(x.Uint64(rng.randrange(2**64)) for _ in range(4))))
        if kind == 6:
            return self._str(f"memo-{rng.randrange(2**32):x}")
        if kind == 7:
            return self._addr(rng.choice(self.contracts), contract=True)
        return self._i128(rng.randrange(-(2**100), 2**100))

    def _payload(self, size: int, depth: int = 1) -> Any:
        """Contract-state-like SCVal of about ``size`` bytes: a map with a blob, a vec of maps, scalars."""
        rng = self.rng
        if depth == 0:
            return self._map([("data", self._bytes(rng.randbytes(size))), ("n", self._scalar())])
        k = rng.randint(2, 3)
        tags = self._vec([self._sym(rng.choice(_FN_NAMES))])
        return self._map(
            [
                ("blob", self._bytes(rng.randbytes(size // 2))),
                ("items", self._vec([self._payload(size // (2 * k), depth - 1) for _ in range(k)])),
                ("meta", self._map([("a", self._scalar()), ("b", self._scalar()), ("tags", tags)])),
            ]
        )

    def _replace_blob(self, val: Any) -> Any:
        """A ``_payload`` map with a fresh "blob": an entry's prior state, whose other fields stay."""
        x = self.x
        first, *rest = val.map.sc_map
        fresh = x.SCMapEntry(first.key, self._bytes(self.rng.randbytes(len(first.val.bytes.sc_bytes))))
        return self._sv("MAP", map=x.SCMap([fresh, *rest]))

    def _event(self, contract: bytes | None, topics: list, data: Any, kind: str = "CONTRACT") -> Any:
        x = self.x
        return x.ContractEvent(
            x.ExtensionPoint(0),
            x.ContractID(x.Hash(contract)) if contract else None,
            getattr(x.ContractEventType, kind),
            x.ContractEventBody(0, v0=x.ContractEventV0(topics, data)),
        )

    def _transfer(self, sac: bytes, asset: str, src: bytes, dst: bytes, amount: int) -> Any:
        """The SEP-41 transfer event that protocol 23+ emits for classic payments."""
        topics = [self._sym("transfer"), self._addr(src), self._addr(dst), self._str(asset)]
        return self._event(sac, topics, self._i128(amount))

    # ---- ledger entries and changes ------------------------------------------------

    def _entry(self, seq: int, kind: str, body: Any) -> Any:
        x = self.x
        ext = x.LedgerEntryExt(0)
        if kind in ("ACCOUNT", "DATA") and self.rng.random() < 0.1:  # sponsored entries carry ext v1
            sponsor = x.SponsorshipDescriptor(self._account_id(self.rng.choice(self.accounts).raw))
            ext = x.LedgerEntryExt(1, v1=x.LedgerEntryExtensionV1(sponsor, x.LedgerEntryExtensionV1Ext(0)))
        data = x.LedgerEntryData(getattr(x.LedgerEntryType, kind), **{_ENTRY_ARMS[kind]: body})
        return x.LedgerEntry(x.Uint32(seq), data, ext)

    def _account_entry(self, a: _Account, seq: int) -> Any:
        x = self.x
        body = x.AccountEntry(
            self._account_id(a.raw),
            x.Int64(a.balance),
            x.SequenceNumber(x.Int64(a.seq)),
            x.Uint32(a.subentries),
            None,
            x.Uint32(0),
            x.String32(b""),
            x.Thresholds(b"\x01\x00\x00\x00"),
            [],
            x.AccountEntryExt(0),
        )
        return self._entry(seq, "ACCOUNT", body)

    def _trustline_entry(self, a: _Account, seq: int) -> Any:
        x = self.x
        asset = x.TrustLineAsset(x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4, alpha_num4=self.credit.alpha_num4)
        body = x.TrustLineEntry(
            self._account_id(a.raw), asset, x.Int64(a.credit), x.Int64(2**62), x.Uint32(1), x.TrustLineEntryExt(0)
        )
        return self._entry(seq, "TRUSTLINE", body)

    def _change(self, kind: str, entry: Any) -> Any:
        # the arm is named like the change type: LEDGER_ENTRY_STATE -> state, ...
        x = self.x
        return x.LedgerEntryChange(getattr(x.LedgerEntryChangeType, "LEDGER_ENTRY_" + kind), **{kind.lower(): entry})

    def _touch(self, a: _Account, seq: int, balance: int = 0, seqnum: int = 0, sub: int = 0, credit: int = 0) -> list:
        """STATE/UPDATED pair for an account (or its trustline when ``credit``) around a mutation."""
        build = self._trustline_entry if credit else self._account_entry
        before = build(a, a.last)
        a.last = seq
        a.balance += balance
        a.seq += seqnum
        a.subentries += sub
        a.credit += credit
        return [self._change("STATE", before), self._change("UPDATED", build(a, seq))]

    def _data_key(self, contract: bytes, temporary: bool) -> Any:
        """LedgerKey of a contract data entry keyed like ``[Balance, <account>]``."""
        x, rng = self.x, self.rng
        tag = self._sym(rng.choice(("Balance", "State", "Order", "Vote")))
        key = self._vec([tag, self._addr(rng.choice(self.accounts).raw)])
        durability = x.ContractDataDurability.TEMPORARY if temporary else x.ContractDataDurability.PERSISTENT
        lkcd = x.LedgerKeyContractData(self._sc_address(contract, contract=True), key, durability)
        return x.LedgerKey(x.LedgerEntryType.CONTRACT_DATA, contract_data=lkcd)

    def _instance_key(self, contract: bytes) -> Any:
        x = self.x
        lkcd = x.LedgerKeyContractData(
            self._sc_address(contract, contract=True),
            self._sv("LEDGER_KEY_CONTRACT_INSTANCE"),
            x.ContractDataDurability.PERSISTENT,
        )
        return x.LedgerKey(x.LedgerEntryType.CONTRACT_DATA, contract_data=lkcd)

    def _code_key(self, wasm_hash: bytes) -> Any:
        x = self.x
        return x.LedgerKey(x.LedgerEntryType.CONTRACT_CODE, contract_code=x.LedgerKeyContractCode(x.Hash(wasm_hash)))

    def _data_entry(self, seq: int, lk: Any, val: Any) -> Any:
        cd = lk.contract_data
        body = self.x.ContractDataEntry(self.x.ExtensionPoint(0), cd.contract, cd.key, cd.durability, val)
        return self._entry(seq, "CONTRACT_DATA", body)

    def _ttl(self, seq: int, lk: Any, live_until: int) -> Any:
        x = self.x
        return self._entry(seq, "TTL", x.TTLEntry(x.Hash(_sha(lk.to_xdr_bytes())), x.Uint32(live_until)))

    def _older(self, seq: int) -> int:
        """A lastModifiedLedgerSeq for an entry's prior state."""
        return max(1, seq - self.rng.randrange(1, 20_000))

    # ---- transactions: common parts ----------------------------------------------

    def _op(self, kind: str, **arm: Any) -> Any:
        x = self.x
        return x.Operation(None, x.OperationBody(getattr(x.OperationType, kind), **arm))

    def _op_result(self, kind: str, arm: str, result: Any) -> Any:
        x = self.x
        tr = x.OperationResultTr(getattr(x.OperationType, kind), **{arm: result})
        return x.OperationResult(x.OperationResultCode.opINNER, tr=tr)

    def _fee_payer(self, protocol: int, src: _Account) -> _Account:
        """``src`` itself, or (fee bumps exist since protocol 13) another account bumping its fee."""
        if protocol >= 13 and self.rng.random() < 0.15:
            return self.rng.choice([a for a in self.accounts if a is not src])
        return src

    def _charge(self, seq: int, src: _Account, payer: _Account, fee: int) -> tuple[list, list]:
        """Fee processing and the sequence bump, which core applies before any operation."""
        return self._touch(payer, seq, balance=-fee), self._touch(src, seq, seqnum=1)

    def _memo(self) -> Any:
        x, rng = self.x, self.rng
        kind = rng.randrange(5)
        if kind == 0:
            return x.Memo(x.MemoType.MEMO_NONE)
        if kind == 1:
            return x.Memo(x.MemoType.MEMO_TEXT, text=b"order %d" % rng.randrange(10**9))
        if kind == 2:
            return x.Memo(x.MemoType.MEMO_ID, id=x.Uint64(rng.randrange(2**64)))
        if kind == 3:
            return x.Memo(x.MemoType.MEMO_HASH, hash=x.Hash(rng.randbytes(32)))
        return x.Memo(x.MemoType.MEMO_RETURN, ret_hash=x.Hash(rng.randbytes(32)))

    def _cond(self, seq: int, protocol: int, bounds: Any) -> Any:
        x = self.x
        if protocol >= 19 and self.rng.random() < 0.25:  # PRECOND_V2 came with protocol 19
            ledgers = x.LedgerBounds(x.Uint32(max(0, seq - 10)), x.Uint32(seq + 100))
            v2 = x.PreconditionsV2(bounds, ledgers, None, x.Duration(x.Uint64(0)), x.Uint32(0), [])
            return x.Preconditions(x.PreconditionType.PRECOND_V2, v2=v2)
        if bounds is not None:
            return x.Preconditions(x.PreconditionType.PRECOND_TIME, time_bounds=bounds)
        return x.Preconditions(x.PreconditionType.PRECOND_NONE)

    def _tx_hash(self, tx: Any = None, fee_bump: Any = None) -> bytes:
        """The real transaction hash: sha256 of the TransactionSignaturePayload under this network."""
        x = self.x
        if tx is not None:
            tagged = x.TransactionSignaturePayloadTaggedTransaction(x.EnvelopeType.ENVELOPE_TYPE_TX, tx=tx)
        else:
            tagged = x.TransactionSignaturePayloadTaggedTransaction(
                x.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP, fee_bump=fee_bump
            )
        return _sha(x.TransactionSignaturePayload(x.Hash(self.network_id), tagged).to_xdr_bytes())

    def _sign(self, kp: Any, tx_hash: bytes) -> Any:
        x = self.x
        return x.DecoratedSignature(x.SignatureHint(kp.signature_hint()), x.Signature(kp.sign(tx_hash)))

    def _envelope(
        self,
        seq: int,
        protocol: int,
        src: _Account,
        payer: _Account,
        fee: int,
        ops: list,
        ext: Any,
        allow_v0: bool = False,
    ) -> tuple[Any, bytes, bytes | None]:
        """Signed envelope, a fee bump when ``payer`` is not ``src``.

        Returns (envelope, hash its result pair carries, inner tx hash of a fee bump or None).
        """
        x, rng = self.x, self.rng
        env_type = x.EnvelopeType
        v0 = allow_v0 and payer is src and rng.random() < 0.3  # pre-protocol-13 style envelope
        bounds = None
        if rng.random() < 0.6:
            bounds = x.TimeBounds(x.TimePoint(x.Uint64(0)), x.TimePoint(x.Uint64(self.close_time + 300)))
        memo = self._memo()
        if v0:  # its hash is that of the equivalent v1 Transaction, as core computes it
            source = x.MuxedAccount(x.CryptoKeyType.KEY_TYPE_ED25519, ed25519=x.Uint256(src.raw))
            cond = self._cond(seq, 0, bounds)
        else:
            source, cond = self._muxed(src.raw, protocol), self._cond(seq, protocol, bounds)
        seqnum = x.SequenceNumber(x.Int64(src.seq))
        tx = x.Transaction(source, x.Uint32(fee), seqnum, cond, memo, ops, ext)
        tx_hash = self._tx_hash(tx=tx)
        sigs = [self._sign(src.kp, tx_hash)]
        if v0:
            tv0 = x.TransactionV0(x.Uint256(src.raw), x.Uint32(fee), seqnum, bounds, memo, ops, x.TransactionV0Ext(0))
            env = x.TransactionEnvelope(env_type.ENVELOPE_TYPE_TX_V0, v0=x.TransactionV0Envelope(tv0, sigs))
            return env, tx_hash, None
        inner = x.TransactionV1Envelope(tx, sigs)
        if payer is src:
            return x.TransactionEnvelope(env_type.ENVELOPE_TYPE_TX, v1=inner), tx_hash, None
        fb = x.FeeBumpTransaction(
            self._muxed(payer.raw, protocol),
            x.Int64(fee + 2 * self.base_fee),
            x.FeeBumpTransactionInnerTx(env_type.ENVELOPE_TYPE_TX, v1=inner),
            x.FeeBumpTransactionExt(0),
        )
        fb_hash = self._tx_hash(fee_bump=fb)
        fb_env = x.FeeBumpTransactionEnvelope(fb, [self._sign(payer.kp, fb_hash)])
        return x.TransactionEnvelope(env_type.ENVELOPE_TYPE_TX_FEE_BUMP, fee_bump=fb_env), fb_hash, tx_hash

    def _tx_result(self, ok: bool, op_results: list, inner_hash: bytes | None, inner_fee: int) -> Any:
        x = self.x
        codes = x.TransactionResultCode
        code = codes.txSUCCESS if ok else codes.txFAILED
        if inner_hash is None:
            return x.TransactionResultResult(code, results=op_results)
        inner = x.InnerTransactionResult(
            x.Int64(inner_fee), x.InnerTransactionResultResult(code, results=op_results), x.InnerTransactionResultExt(0)
        )
        outer = codes.txFEE_BUMP_INNER_SUCCESS if ok else codes.txFEE_BUMP_INNER_FAILED
        pair = x.InnerTransactionResultPair(x.Hash(inner_hash), inner)
        return x.TransactionResultResult(outer, inner_result_pair=pair)

    def _fee_events(self, protocol: int, payer: _Account, charged: int, refund: int) -> list:
        """Protocol 23+ reports fees as events of the native asset contract: the charge, then any refund."""
        if protocol < 23:
            return []
        x = self.x
        stage = x.TransactionEventStage
        topics = [self._sym("fee"), self._addr(payer.raw)]
        events = [
            x.TransactionEvent(
                stage.TRANSACTION_EVENT_STAGE_BEFORE_ALL_TXS, self._event(self.native_sac, topics, self._i128(charged))
            )
        ]
        if refund:
            events.append(
                x.TransactionEvent(
                    stage.TRANSACTION_EVENT_STAGE_AFTER_ALL_TXS,
                    self._event(self.native_sac, topics, self._i128(-refund)),
                )
            )
        return events

    # ---- classic transactions -------------------------------------------------------

    def _classic_op(
        self, seq: int, protocol: int, src: _Account, kind: str, failed: bool
    ) -> tuple[Any, list, list, Any, int]:
        """One classic operation: (Operation, changes, events, OperationResult, approximate bytes)."""
        x, rng = self.x, self.rng
        dst = rng.choice([a for a in self.accounts if a is not src])
        sac_events = protocol >= 23  # classic ops emit SAC events since protocol 23
        if kind in ("pay", "credit"):
            native = kind == "pay"
            amount = rng.randrange(1, 10**9 if native else 10**7)
            asset = x.Asset(x.AssetType.ASSET_TYPE_NATIVE) if native else self.credit
            op = self._op("PAYMENT", payment_op=x.PaymentOp(self._muxed(dst.raw, protocol), asset, x.Int64(amount)))
            if failed:
                result = x.PaymentResult(x.PaymentResultCode.PAYMENT_UNDERFUNDED)
                return op, [], [], self._op_result("PAYMENT", "payment_result", result), 100
            if native:
                changes = self._touch(src, seq, balance=-amount) + self._touch(dst, seq, balance=amount)
            else:
                changes = self._touch(src, seq, credit=-amount) + self._touch(dst, seq, credit=amount)
            sac, name = (self.native_sac, "native") if native else (self.credit_sac, self.credit_name)
            events = [self._transfer(sac, name, src.raw, dst.raw, amount)] if sac_events else []
            result = x.PaymentResult(x.PaymentResultCode.PAYMENT_SUCCESS)
            return op, changes, events, self._op_result("PAYMENT", "payment_result", result), 550 if native else 650
        if kind == "create":
            new = _Account(rng.randbytes(32), None, rng.randrange(10**7, 10**9), seq << 32, seq)
            op = self._op(
                "CREATE_ACCOUNT", create_account_op=x.CreateAccountOp(self._account_id(new.raw), x.Int64(new.balance))
            )
            changes = self._touch(src, seq, balance=-new.balance)
            changes.append(self._change("CREATED", self._account_entry(new, seq)))
            events = [self._transfer(self.native_sac, "native", src.raw, new.raw, new.balance)] if sac_events else []
            result = x.CreateAccountResult(x.CreateAccountResultCode.CREATE_ACCOUNT_SUCCESS)
            return op, changes, events, self._op_result("CREATE_ACCOUNT", "create_account_result", result), 500
        # Manage data, also the filler of big classic ledgers, where "data-" skips the
        # account's subentry change to halve the objects per op (still valid meta).
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_.") for _ in range(rng.randint(8, 64))).encode()
        value = rng.randbytes(rng.randint(1, 64))
        op = self._op("MANAGE_DATA", manage_data_op=x.ManageDataOp(x.String64(name), x.DataValue(value)))
        data = x.DataEntry(self._account_id(src.raw), x.String64(name), x.DataValue(value), x.DataEntryExt(0))
        changes = self._touch(src, seq, sub=1) if kind == "data" else []
        changes.append(self._change("CREATED", self._entry(seq, "DATA", data)))
        result = x.ManageDataResult(x.ManageDataResultCode.MANAGE_DATA_SUCCESS)
        weight = 115 + 2 * len(name) + 2 * len(value)
        return op, changes, [], self._op_result("MANAGE_DATA", "manage_data_result", result), weight

    def _classic(self, seq: int, protocol: int, bulk: bool = False) -> _Tx:
        """A classic transaction; ``bulk`` packs 100 manage-data ops (the filler of big classic ledgers)."""
        rng = self.rng
        src = rng.choice(self.accounts)
        payer = self._fee_payer(protocol, src)
        n = 100 if bulk else rng.choice((1, 1, 1, 2, 3))
        failed = not bulk and n == 1 and rng.random() < 0.1
        if bulk:
            kinds = ["data"] + ["data-"] * (n - 1)
        else:
            kinds = ["pay" if failed else rng.choice(("pay", "pay", "credit", "create", "data")) for _ in range(n)]
        charged = self.base_fee * (n + (payer is not src))
        fee_changes, before = self._charge(seq, src, payer, charged)
        built = [self._classic_op(seq, protocol, src, k, failed) for k in kinds]
        fee_bid = self.base_fee * n + rng.randrange(1000)
        env, tx_hash, inner_hash = self._envelope(
            seq, protocol, src, payer, fee_bid, [b[0] for b in built], self.x.TransactionExt(0), allow_v0=protocol < 20
        )
        return _Tx(
            env,
            tx_hash,
            charged,
            self._tx_result(not failed, [b[3] for b in built], inner_hash, 0),
            fee_changes,
            before,
            ops=[] if failed else [(b[1], b[2]) for b in built],
            tx_events=self._fee_events(protocol, payer, charged, 0),
            weight=700 + sum(b[4] for b in built),
        )

    # ---- Soroban transactions --------------------------------------------------------
    # Each kind returns a dict: op, footprint (ro, rw), changes, events, ret, diag,
    # result (the OperationResult), weight, archived (auto-restored rw indexes).

    def _auth(self, seq: int, fn: Any) -> Any:
        x, rng = self.x, self.rng
        if rng.random() < 0.5:
            creds = x.SorobanCredentials(x.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT)
        else:  # signed by another account; the signature is the usual vec of {public_key, signature}
            signer = rng.choice(self.accounts)
            sig = self._vec(
                [self._map([("public_key", self._bytes(signer.raw)), ("signature", self._bytes(rng.randbytes(64)))])]
            )
            addr = x.SorobanAddressCredentials(
                self._sc_address(signer.raw), x.Int64(rng.randrange(2**63)), x.Uint32(seq + 100), sig
            )
            creds = x.SorobanCredentials(x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS, address=addr)
        func = x.SorobanAuthorizedFunction(
            x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN, contract_fn=fn
        )
        return x.SorobanAuthorizationEntry(creds, x.SorobanAuthorizedInvocation(func, []))

    def _host_fn_op(self, kind: str, auth: list, **arm: Any) -> Any:
        x = self.x
        fn = x.HostFunction(getattr(x.HostFunctionType, "HOST_FUNCTION_TYPE_" + kind), **arm)
        return self._op("INVOKE_HOST_FUNCTION", invoke_host_function_op=x.InvokeHostFunctionOp(fn, auth))

    def _host_fn_result(self, ret: Any, events: list, code: str = "SUCCESS") -> Any:
        """Success carries sha256(InvokeHostFunctionSuccessPreImage), as core computes it."""
        x = self.x
        if code == "SUCCESS":
            success = x.Hash(_sha(x.InvokeHostFunctionSuccessPreImage(ret, events).to_xdr_bytes()))
            result = x.InvokeHostFunctionResult(
                x.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_SUCCESS, success=success
            )
        else:
            result = x.InvokeHostFunctionResult(getattr(x.InvokeHostFunctionResultCode, "INVOKE_HOST_FUNCTION_" + code))
        return self._op_result("INVOKE_HOST_FUNCTION", "invoke_host_function_result", result)

    def _invoke(self, seq: int, protocol: int, src: _Account, blob: int, failed: bool) -> dict:
        """A contract call carrying a ``blob``-sized argument and rewriting a ``blob``-sized entry."""
        x, rng = self.x, self.rng
        contract, fn = rng.choice(self.contracts), rng.choice(_FN_NAMES)
        amount = rng.randrange(1, 10**15)
        head = [self._addr(src.raw), self._addr(rng.choice(self.accounts).raw), self._i128(amount)]
        caddr, fsym = self._sc_address(contract, contract=True), x.SCSymbol(fn.encode())
        auth = [self._auth(seq, x.InvokeContractArgs(caddr, fsym, head))]
        op = self._host_fn_op(
            "INVOKE_CONTRACT", auth, invoke_contract=x.InvokeContractArgs(caddr, fsym, [*head, self._payload(blob)])
        )
        keys = [self._data_key(contract, temporary=rng.random() < 0.3) for _ in range(rng.randint(1, 2))]
        instance_key = self._instance_key(contract)
        out = dict(op=op, ro=[instance_key, self._code_key(rng.choice(self.wasm_hashes))], rw=keys, weight=blob + 2500)
        calls = [
            self._event(
                None, [self._sym("fn_call"), self._bytes(contract), self._sym(fn)], self._vec(head), "DIAGNOSTIC"
            )
        ]
        if failed:
            error = x.SCError(x.SCErrorType.SCE_CONTRACT, contract_code=x.Uint32(rng.randrange(1, 100)))
            calls.append(
                self._event(
                    contract,
                    [self._sym("error"), self._sv("ERROR", error=error)],
                    self._str("contract call failed"),
                    "DIAGNOSTIC",
                )
            )
            return out | dict(
                diag=[x.DiagnosticEvent(False, e) for e in calls], result=self._host_fn_result(None, [], "TRAPPED")
            )
        changes, archived = [], []
        for i, lk in enumerate(keys):
            big = i == 0  # the first key holds the bulk
            new = self._payload(blob) if big else self._i128(rng.randrange(2**100))
            temporary = lk.contract_data.durability == x.ContractDataDurability.TEMPORARY
            if temporary and rng.random() < 0.5:
                changes += [
                    self._change("CREATED", self._data_entry(seq, lk, new)),
                    self._change("CREATED", self._ttl(seq, lk, seq + 17_280)),
                ]
                continue
            old = self._replace_blob(new) if big else self._i128(rng.randrange(2**100))
            if protocol >= 23 and not temporary and rng.random() < 0.15:  # auto-restored from the archive first
                archived.append(i)
                changes += [
                    self._change("RESTORED", self._data_entry(self._older(seq), lk, old)),
                    self._change("RESTORED", self._ttl(seq, lk, seq + 4096)),
                ]
            else:
                changes.append(self._change("STATE", self._data_entry(self._older(seq), lk, old)))
            changes.append(self._change("UPDATED", self._data_entry(seq, lk, new)))
            out["weight"] += 2 * blob if big else 300
        if rng.random() < 0.2:  # an instance storage write
            wasm = x.ContractExecutable(
                x.ContractExecutableType.CONTRACT_EXECUTABLE_WASM, wasm_hash=x.Hash(rng.choice(self.wasm_hashes))
            )
            inst = [
                self._sv(
                    "CONTRACT_INSTANCE",
                    instance=x.SCContractInstance(
                        wasm,
                        x.SCMap(
                            [
                                x.SCMapEntry(self._sym("Admin"), self._addr(src.raw)),
                                x.SCMapEntry(self._sym("Counter"), self._u64(rng.randrange(2**40))),
                            ]
                        ),
                    ),
                )
                for _ in range(2)
            ]
            changes += [
                self._change("STATE", self._data_entry(self._older(seq), instance_key, inst[0])),
                self._change("UPDATED", self._data_entry(seq, instance_key, inst[1])),
            ]
        note = self._map([("amount", self._i128(amount)), ("memo", self._bytes(rng.randbytes(rng.randint(16, 256))))])
        events = [
            self._event(contract, [self._sym(fn), head[0], head[1]], note if rng.random() < 0.5 else self._i128(amount))
        ]
        events += [
            self._event(contract, [self._sym("update"), self._scalar()], self._scalar())
            for _ in range(rng.randint(0, 2))
        ]
        ret = rng.choice(
            (
                self._sv("VOID"),
                self._i128(amount),
                self._sv("BOOL", b=True),
                self._vec([self._sym(fn), self._scalar()]),
                self._map([("out", self._i128(amount)), ("seq", self._u64(seq))]),
            )
        )
        calls.append(self._event(contract, [self._sym("fn_return"), self._sym(fn)], ret, "DIAGNOSTIC"))
        if rng.random() < 0.3:
            calls.append(
                self._event(
                    None,
                    [self._sym("core_metrics"), self._sym("read_entry")],
                    self._u64(rng.randrange(1, 40)),
                    "DIAGNOSTIC",
                )
            )
        return out | dict(
            changes=changes,
            events=events,
            ret=ret,
            diag=[x.DiagnosticEvent(True, e) for e in calls],
            result=self._host_fn_result(ret, events),
            archived=archived,
        )

    def _upload(self, seq: int, protocol: int, src: _Account, blob: int, failed: bool) -> dict:
        """A wasm upload: the code rides in the envelope and again in the created entry."""
        x, rng = self.x, self.rng
        wasm = b"\0asm\x01\0\0\0" + rng.randbytes(4 * blob)
        wasm_hash = _sha(wasm)
        lk = self._code_key(wasm_hash)
        ext = x.ContractCodeEntryExt(0)
        if protocol >= 21:  # cost inputs came with protocol 21
            counts = (x.Uint32(rng.randrange(1, 5000)) for _ in range(10))
            inputs = x.ContractCodeCostInputs(x.ExtensionPoint(0), *counts)
            ext = x.ContractCodeEntryExt(1, v1=x.ContractCodeEntryV1(x.ExtensionPoint(0), inputs))
        code = self._entry(seq, "CONTRACT_CODE", x.ContractCodeEntry(ext, x.Hash(wasm_hash), wasm))
        ret = self._bytes(wasm_hash)
        changes = [self._change("CREATED", code), self._change("CREATED", self._ttl(seq, lk, seq + 500_000))]
        return dict(
            op=self._host_fn_op("UPLOAD_CONTRACT_WASM", [], wasm=wasm),
            ro=[],
            rw=[lk],
            changes=changes,
            ret=ret,
            result=self._host_fn_result(ret, []),
            weight=2 * len(wasm) + 1500,
        )

    def _extend(self, seq: int, protocol: int, src: _Account, blob: int, failed: bool) -> dict:
        x, rng = self.x, self.rng
        keys = [self._data_key(rng.choice(self.contracts), False) for _ in range(rng.randint(1, 3))]
        keys.append(self._code_key(rng.choice(self.wasm_hashes)))
        extend_to = rng.randrange(10_000, 500_000)
        changes = []
        for lk in keys:
            changes += [
                self._change("STATE", self._ttl(self._older(seq), lk, seq + rng.randrange(1, 1000))),
                self._change("UPDATED", self._ttl(seq, lk, seq + extend_to)),
            ]
        op = self._op(
            "EXTEND_FOOTPRINT_TTL",
            extend_footprint_ttl_op=x.ExtendFootprintTTLOp(x.ExtensionPoint(0), x.Uint32(extend_to)),
        )
        ok = x.ExtendFootprintTTLResult(x.ExtendFootprintTTLResultCode.EXTEND_FOOTPRINT_TTL_SUCCESS)
        return dict(
            op=op,
            ro=keys,
            rw=[],
            changes=changes,
            weight=1500,
            result=self._op_result("EXTEND_FOOTPRINT_TTL", "extend_footprint_ttl_result", ok),
        )

    def _restore(self, seq: int, protocol: int, src: _Account, blob: int, failed: bool) -> dict:
        x, rng = self.x, self.rng
        keys = [self._data_key(rng.choice(self.contracts), False) for _ in range(rng.randint(1, 2))]
        changes = []
        for lk in keys:
            if protocol >= 23:  # LEDGER_ENTRY_RESTORED exists since protocol 23
                val = self._payload(min(blob, 512))
                changes += [
                    self._change("RESTORED", self._data_entry(self._older(seq), lk, val)),
                    self._change("RESTORED", self._ttl(seq, lk, seq + 4096)),
                ]
            else:
                changes += [
                    self._change("STATE", self._ttl(self._older(seq), lk, self._older(seq))),
                    self._change("UPDATED", self._ttl(seq, lk, seq + 4096)),
                ]
        op = self._op("RESTORE_FOOTPRINT", restore_footprint_op=x.RestoreFootprintOp(x.ExtensionPoint(0)))
        ok = x.RestoreFootprintResult(x.RestoreFootprintResultCode.RESTORE_FOOTPRINT_SUCCESS)
        return dict(
            op=op,
            ro=[],
            rw=keys,
            changes=changes,
            weight=2000,
            result=self._op_result("RESTORE_FOOTPRINT", "restore_footprint_result", ok),
        )

    def _soroban(self, seq: int, protocol: int, blob: int) -> _Tx:
        """A Soroban transaction (one host-function, extend or restore op) with ``blob``-sized payloads."""
        x, rng = self.x, self.rng
        src = rng.choice(self.accounts)
        payer = self._fee_payer(protocol, src)
        kind = rng.choices(("invoke", "upload", "extend", "restore"), weights=(82, 6, 6, 6))[0]
        failed = kind == "invoke" and rng.random() < 0.06
        # Core charges the whole declared resource fee up front and refunds the unused refundable part after.
        resource_fee = rng.randrange(100_000, 5_000_000)
        nonrefundable = resource_fee * rng.randint(20, 50) // 100
        refundable = 0 if failed else resource_fee * rng.randint(10, 40) // 100
        rent = refundable * rng.randint(0, 100) // 100
        refund = resource_fee - nonrefundable - refundable
        inclusion = self.base_fee * (1 + (payer is not src))
        fee_changes, before = self._charge(seq, src, payer, inclusion + resource_fee)
        b = getattr(self, "_" + kind)(seq, protocol, src, blob, failed)
        refund_changes = self._touch(payer, seq, balance=refund)
        data_ext = x.SorobanTransactionDataExt(0)
        if b.get("archived"):
            data_ext = x.SorobanTransactionDataExt(
                1, resource_ext=x.SorobanResourcesExtV0([x.Uint32(i) for i in b["archived"]])
            )
        resources = x.SorobanResources(
            x.LedgerFootprint(b["ro"], b["rw"]),
            x.Uint32(rng.randrange(10**6, 10**8)),
            x.Uint32(rng.randrange(blob, 4 * blob + 10_000)),
            x.Uint32(rng.randrange(blob, 2 * blob + 10_000)),
        )
        ext = x.TransactionExt(1, soroban_data=x.SorobanTransactionData(data_ext, resources, x.Int64(resource_fee)))
        fee_bid = inclusion + resource_fee + rng.randrange(1000)
        env, tx_hash, inner_hash = self._envelope(seq, protocol, src, payer, fee_bid, [b["op"]], ext)
        charged = inclusion + resource_fee - refund
        self.live_soroban += len(b.get("changes", ())) * 64 + blob
        return _Tx(
            env,
            tx_hash,
            charged,
            self._tx_result(not failed, [b["result"]], inner_hash, charged - inclusion),
            fee_changes,
            before,
            ops=[] if failed else [(b["changes"], b.get("events", []))],
            refund=refund_changes,
            tx_events=self._fee_events(protocol, payer, inclusion + resource_fee, refund),
            soroban=(b.get("ret"), b.get("diag", []), (nonrefundable, refundable, rent)),
            weight=1700 + b["weight"],
        )

    # ---- ledgers -------------------------------------------------------------------

    def _txs(self, seq: int, protocol: int, size: str) -> list[_Tx]:
        """Classic transactions, then Soroban ones (from protocol 20) up to the size's byte budget."""
        rng = self.rng
        if size == "empty":
            return []
        soroban = protocol >= 20
        if size == "small":
            txs = [self._classic(seq, protocol) for _ in range(rng.randint(2, 4))]
            n_soroban = rng.randint(1, 2) if soroban else 0
            return txs + [self._soroban(seq, protocol, rng.randint(64, 512)) for _ in range(n_soroban)]
        txs = [self._classic(seq, protocol) for _ in range(rng.randint(10, 30))]
        used = sum(t.weight for t in txs)
        while used < _BUDGET[size]:
            if soroban:
                txs.append(self._soroban(seq, protocol, rng.randint(1024, 6144)))
            else:
                txs.append(self._classic(seq, protocol, bulk=True))
            used += txs[-1].weight
        return txs

    def _tx_set(self, version: int, txs: list[_Tx]) -> tuple[Any, bytes, list[_Tx]]:
        """(tx set, its hash, txs in apply order). Sets list txs in hash order, as core does."""
        x, rng = self.x, self.rng
        prev = x.Hash(self.prev_hash)

        def by_hash(ts: list[_Tx]) -> list[_Tx]:
            return sorted(ts, key=lambda t: t.hash)

        if version == 0:  # legacy set: its hash covers the previous ledger hash and each envelope
            h = hashlib.sha256(self.prev_hash)
            for t in by_hash(txs):
                h.update(t.env.to_xdr_bytes())
            return x.TransactionSet(prev, [t.env for t in by_hash(txs)]), h.digest(), txs

        def base_fee() -> Any:
            return x.Int64(self.base_fee) if rng.random() < 0.7 else None

        def components(ts: list[_Tx]) -> list:  # an empty phase has no components
            if not ts:
                return []
            txs_ = x.TxSetComponentTxsMaybeDiscountedFee(base_fee(), [t.env for t in by_hash(ts)])
            return [
                x.TxSetComponent(
                    x.TxSetComponentType.TXSET_COMP_TXS_MAYBE_DISCOUNTED_FEE, txs_maybe_discounted_fee=txs_
                )
            ]

        classic = [t for t in txs if t.soroban is None]
        soroban = [t for t in txs if t.soroban is not None]
        phases = [x.TransactionPhase(0, v0_components=components(classic))]
        if version == 1:
            phases.append(x.TransactionPhase(0, v0_components=components(soroban)))
        else:  # protocol 23+: Soroban txs run in stages of independent clusters, and apply in that order
            n_stages = min(len(soroban), rng.randint(1, 2))
            stages, soroban_order = [], []
            for s in range(n_stages):
                members = soroban[s::n_stages]
                n_clusters = min(len(members), rng.randint(1, 4))
                clusters = [by_hash(members[c::n_clusters]) for c in range(n_clusters)]
                stages.append(x.ParallelTxExecutionStage([x.DependentTxCluster([t.env for t in c]) for c in clusters]))
                soroban_order += [t for c in clusters for t in c]
            soroban = soroban_order
            phases.append(x.TransactionPhase(1, parallel_txs_component=x.ParallelTxsComponent(base_fee(), stages)))
        gts = x.GeneralizedTransactionSet(1, v1_tx_set=x.TransactionSetV1(prev, phases))
        return gts, _sha(gts.to_xdr_bytes()), classic + soroban

    def _smeta_ext(self, protocol: int, fees: tuple[int, int, int]) -> Any:
        x = self.x
        if protocol < 21:  # the fee breakdown came with protocol 21
            return x.SorobanTransactionMetaExt(0)
        return x.SorobanTransactionMetaExt(
            1, v1=x.SorobanTransactionMetaExtV1(x.ExtensionPoint(0), *(x.Int64(f) for f in fees))
        )

    def _result_meta(self, t: _Tx, pair: Any, version: int, protocol: int) -> Any:
        x = self.x
        ch = x.LedgerEntryChanges
        if protocol < 23:
            op_metas = [x.OperationMeta(ch(c)) for c, _ in t.ops]
        if protocol < 13:
            meta = x.TransactionMeta(1, v1=x.TransactionMetaV1(ch(t.before), op_metas))
        elif protocol < 20:
            meta = x.TransactionMeta(2, v2=x.TransactionMetaV2(ch(t.before), op_metas, ch([])))
        elif protocol < 23:  # events live in the Soroban meta; refunds land in txChangesAfter
            smeta = None
            if t.soroban:
                ret, diag, fees = t.soroban
                events = [e for _, evs in t.ops for e in evs]
                smeta = x.SorobanTransactionMeta(
                    self._smeta_ext(protocol, fees), events, self._sv("VOID") if ret is None else ret, diag
                )
            meta = x.TransactionMeta(
                3, v3=x.TransactionMetaV3(x.ExtensionPoint(0), ch(t.before), op_metas, ch(t.refund), smeta)
            )
        else:  # events per operation and per tx; refunds move to postTxApplyFeeProcessing
            ops = [x.OperationMetaV2(x.ExtensionPoint(0), ch(c), evs) for c, evs in t.ops]
            smeta, diag = None, []
            if t.soroban:
                ret, diag, fees = t.soroban
                smeta = x.SorobanTransactionMetaV2(self._smeta_ext(protocol, fees), ret)
            meta = x.TransactionMeta(
                4, v4=x.TransactionMetaV4(x.ExtensionPoint(0), ch(t.before), ops, ch([]), smeta, t.tx_events, diag)
            )
        if version < 2:
            return x.TransactionResultMeta(pair, ch(t.fee_changes), meta)
        return x.TransactionResultMetaV1(x.ExtensionPoint(0), pair, ch(t.fee_changes), meta, ch(t.refund))

    def _upgrades(self, pos: int, protocol: int) -> list:
        """Ledger upgrades voted into this ledger, applied to the header state they change."""
        x, rng = self.x, self.rng
        t = x.LedgerUpgradeType
        ups = []
        if self.protocol is not None and protocol > self.protocol:
            ups.append(x.LedgerUpgrade(t.LEDGER_UPGRADE_VERSION, new_ledger_version=x.Uint32(protocol)))
        self.protocol = protocol
        if pos == 1:
            self.base_reserve = rng.choice((5_000_000, 10_000_000))
            ups.append(x.LedgerUpgrade(t.LEDGER_UPGRADE_BASE_RESERVE, new_base_reserve=x.Uint32(self.base_reserve)))
        elif pos == 3:  # the header carries flags in ext v1 from here on
            self.flags = rng.choice((0, 1, 2, 4, 7))
            ups.append(x.LedgerUpgrade(t.LEDGER_UPGRADE_FLAGS, new_flags=x.Uint32(self.flags)))
        elif pos == 5:
            ups.append(
                x.LedgerUpgrade(
                    t.LEDGER_UPGRADE_MAX_SOROBAN_TX_SET_SIZE,
                    new_max_soroban_tx_set_size=x.Uint32(rng.randrange(50, 500)),
                )
            )
        elif pos == 7:
            self.max_tx_set_size = rng.choice((500, 1000, 2000))
            ups.append(
                x.LedgerUpgrade(t.LEDGER_UPGRADE_MAX_TX_SET_SIZE, new_max_tx_set_size=x.Uint32(self.max_tx_set_size))
            )
        elif pos == 9:
            key = x.ConfigUpgradeSetKey(x.ContractID(x.Hash(rng.choice(self.contracts))), x.Hash(rng.randbytes(32)))
            ups.append(x.LedgerUpgrade(t.LEDGER_UPGRADE_CONFIG, new_config=key))
        return ups

    def _value_ext(self, protocol: int, tx_set_hash: bytes) -> Any:
        x = self.x
        if protocol < 13:
            return x.StellarValueExt(x.StellarValueType.STELLAR_VALUE_BASIC)
        # a validator's signature over (networkID, ENVELOPE_TYPE_SCPVALUE, txSetHash, closeTime), as core signs it
        v = self.rng.choice(self.validators)
        sig = v.sign(
            self.network_id
            + struct.pack(">i", x.EnvelopeType.ENVELOPE_TYPE_SCPVALUE.value)
            + tx_set_hash
            + struct.pack(">Q", self.close_time)
        )
        return x.StellarValueExt(
            x.StellarValueType.STELLAR_VALUE_SIGNED,
            lc_value_signature=x.LedgerCloseValueSignature(self._node_id(v), x.Signature(sig)),
        )

    def _scp(self, seq: int, value: Any) -> list:
        """EXTERNALIZE messages from the validators, signed as core signs SCP envelopes."""
        x = self.x
        qset = x.SCPQuorumSet(x.Uint32(2), [self._node_id(v) for v in self.validators], [])
        qset_hash, value_xdr = _sha(qset.to_xdr_bytes()), value.to_xdr_bytes()
        messages = []
        for v in self.validators:
            externalize = x.SCPStatementExternalize(
                x.SCPBallot(x.Uint32(1), x.Value(value_xdr)), x.Uint32(1), x.Hash(qset_hash)
            )
            pledges = x.SCPStatementPledges(x.SCPStatementType.SCP_ST_EXTERNALIZE, externalize=externalize)
            st = x.SCPStatement(self._node_id(v), x.Uint64(seq), pledges)
            sig = v.sign(
                self.network_id + struct.pack(">i", x.EnvelopeType.ENVELOPE_TYPE_SCP.value) + st.to_xdr_bytes()
            )
            messages.append(x.SCPEnvelope(st, x.Signature(sig)))
        return [x.SCPHistoryEntry(0, v0=x.SCPHistoryEntryV0([qset], x.LedgerSCPMessages(x.Uint32(seq), messages)))]

    def _evicted(self, pos: int, protocol: int) -> list:
        """Keys evicted from live state: temporary data and TTLs; persistent data and code too from protocol 23."""
        x, rng = self.x, self.rng
        if pos % 2 and rng.random() < 0.7:  # even cycle positions always evict, so every run has some
            return []
        keys = [
            self._data_key(rng.choice(self.contracts), temporary=protocol < 23 or rng.random() < 0.5)
            for _ in range(rng.randint(1, 4))
        ]
        if protocol >= 23 and rng.random() < 0.5:
            keys.append(self._code_key(rng.randbytes(32)))
        return keys + [
            x.LedgerKey(x.LedgerEntryType.TTL, ttl=x.LedgerKeyTtl(x.Hash(_sha(k.to_xdr_bytes())))) for k in keys
        ]

    def ledger(self, seq: int, pos: int) -> bytes:
        x, rng = self.x, self.rng
        version, protocol, size = _CYCLE[pos]
        if self.sizes != "mix":
            size = self.sizes
        upgrades = self._upgrades(pos, protocol)
        self.close_time += rng.randint(4, 7)
        tx_set, tx_set_hash, txs = self._tx_set(version, self._txs(seq, protocol, size))
        pairs = [
            x.TransactionResultPair(
                x.Hash(t.hash), x.TransactionResult(x.Int64(t.fee_charged), t.result, x.TransactionResultExt(0))
            )
            for t in txs
        ]
        self.fee_pool += sum(t.fee_charged for t in txs)
        self.id_pool += len(txs)
        bucket_list_hash = rng.randbytes(32)
        if seq % 50 == 0:  # shape only: core's skip list rules are more involved
            self.skip_list = [bucket_list_hash, *self.skip_list[:3]]
        value = x.StellarValue(
            x.Hash(tx_set_hash),
            x.TimePoint(x.Uint64(self.close_time)),
            [x.UpgradeType(u.to_xdr_bytes()) for u in upgrades],
            self._value_ext(protocol, tx_set_hash),
        )
        header_ext = x.LedgerHeaderExt(0)
        if pos >= 3:
            header_ext = x.LedgerHeaderExt(
                1, v1=x.LedgerHeaderExtensionV1(x.Uint32(self.flags), x.LedgerHeaderExtensionV1Ext(0))
            )
        header = x.LedgerHeader(
            x.Uint32(protocol),
            x.Hash(self.prev_hash),
            value,
            x.Hash(_sha(x.TransactionResultSet(pairs).to_xdr_bytes())),
            x.Hash(bucket_list_hash),
            x.Uint32(seq),
            x.Int64(_TOTAL_COINS),
            x.Int64(self.fee_pool),
            x.Uint32(0),
            x.Uint64(self.id_pool),
            x.Uint32(self.base_fee),
            x.Uint32(self.base_reserve),
            x.Uint32(self.max_tx_set_size),
            [x.Hash(h) for h in self.skip_list],
            header_ext,
        )
        ledger_hash = ledger_header_hash(header.to_xdr_bytes())
        entry = x.LedgerHeaderHistoryEntry(x.Hash(ledger_hash), header, x.LedgerHeaderHistoryEntryExt(0))
        processing = [self._result_meta(t, p, version, protocol) for t, p in zip(txs, pairs, strict=True)]
        upgrade_metas = [x.UpgradeEntryMeta(u, x.LedgerEntryChanges([])) for u in upgrades]
        scp = self._scp(seq, value) if rng.random() < 0.75 else []
        if version == 0:
            lcm = x.LedgerCloseMeta(0, v0=x.LedgerCloseMetaV0(entry, tx_set, processing, upgrade_metas, scp))
        else:
            ext = x.LedgerCloseMetaExt(0)
            if protocol >= 21:  # sorobanFeeWrite1KB came with protocol 21
                ext = x.LedgerCloseMetaExt(
                    1, v1=x.LedgerCloseMetaExtV1(x.ExtensionPoint(0), x.Int64(rng.randrange(1000, 20_000)))
                )
            common = (
                ext,
                entry,
                tx_set,
                processing,
                upgrade_metas,
                scp,
                x.Uint64(self.live_soroban),
                self._evicted(pos, protocol),
            )
            if version == 1:
                lcm = x.LedgerCloseMeta(1, v1=x.LedgerCloseMetaV1(*common, []))
            else:
                lcm = x.LedgerCloseMeta(2, v2=x.LedgerCloseMetaV2(*common))
        self.prev_hash = ledger_hash
        return lcm.to_xdr_bytes()
