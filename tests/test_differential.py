"""The walkers against stellar-sdk's decoder, an independent implementation
of the same grammar: same verdict, same length, on valid and mutated values."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sx = pytest.importorskip("stellar_sdk.xdr", reason="the [test] extra brings stellar-sdk")

from stellar_live_source.errors import XdrError  # noqa: E402 - after the importorskip

from .xdr_values import plan, union_arms, value  # noqa: E402 - after the importorskip

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sdk_accepts(name: str, data: bytes) -> bool:
    """stellar-sdk decodes all of ``data`` and encodes it back unchanged
    (a lenient read of a non-canonical encoding does not count)."""
    cls = getattr(sx, plan().class_name(name))
    try:
        return cls.from_xdr_bytes(data).to_xdr_bytes() == data
    except Exception:
        return False


def walker_accepts(twin, name: str, data: bytes) -> bool:
    try:
        return twin.walk.walk_type(name, data) == len(data)
    except XdrError:
        return False


@pytest.mark.parametrize("name,arm", union_arms(), ids=lambda x: str(x))
def test_every_union_arm(twin, name, arm):
    rng = random.Random(f"{name}/{arm}")
    for _ in range(3):
        data = value(name, rng, 0, arm)
        assert sdk_accepts(name, data)
        assert twin.walk.walk_type(name, data) == len(data)


@SETTINGS
@given(
    seed=st.integers(0, 2**64),
    root=st.sampled_from(["LedgerCloseMeta", "LedgerCloseMetaBatch", "TransactionMeta", "SCVal"]),
)
def test_generated_ledgers_agree_with_stellar_sdk(twin, seed, root):
    data = value(root, random.Random(seed))
    assert sdk_accepts(root, data)
    assert twin.walk.walk_type(root, data) == len(data)


@SETTINGS
@given(seed=st.integers(0, 2**64), type_index=st.integers(0, 10**6), data=st.data())
def test_mutated_values_get_the_same_verdict(twin, seed, type_index, data):
    names = plan().names
    name = names[type_index % len(names)]
    good = value(name, random.Random(seed))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "word"]))
    buf = bytearray(good)
    if mutation == "truncate" and buf:
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif mutation == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=8))
    elif mutation == "flip" and buf:
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "word" and len(buf) >= 4:
        i = data.draw(st.integers(0, len(buf) // 4 - 1)) * 4
        buf[i : i + 4] = data.draw(
            st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x07", b"\x80\x00\x00\x00", b"\x00\x00\x00\x02"])
        )
    body = bytes(buf)
    assert walker_accepts(twin, name, body) == sdk_accepts(name, body), (name, mutation)
