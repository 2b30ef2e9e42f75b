"""Random valid XDR values of any type, straight from the grammar.

Tests use these to compare the walkers with stellar-sdk's decoder on every
union arm. Values get small quickly with depth so recursion always ends.
"""

from __future__ import annotations

import random
import struct
from functools import cache

from stellar_live_source.xdrgen.grammar import PRIMITIVES, Decl, Enum, Grammar, Struct, Typedef, Union, load_stellar_sdk
from stellar_live_source.xdrgen.plan import Plan

DEEP = 5  # past this depth arrays are empty, optionals absent, unions take their smallest arm


@cache
def plan() -> Plan:
    return Plan(load_stellar_sdk())


def grammar() -> Grammar:
    return plan().g


def arms(t: Union) -> list[tuple[list[int], Decl]]:
    out = list(t.arms)
    if t.default is not None:
        out.append(([], t.default))
    return out


def value(name: str, rng: random.Random, depth: int = 0, arm: int | None = None) -> bytes:
    """One encoded value of type ``name``; ``arm`` forces a union's arm."""
    if name in PRIMITIVES:
        size, kind = PRIMITIVES[name]
        if kind == "bool":
            return struct.pack(">I", rng.randint(0, 1))
        return rng.randbytes(size)
    t = grammar().types[name]
    if isinstance(t, Enum):
        return struct.pack(">i", rng.choice(list(t.values.values())))
    if isinstance(t, Typedef):
        return decl(t.decl, rng, depth + 1)
    if isinstance(t, Struct):
        return b"".join(decl(f, rng, depth + 1) for f in t.fields)
    assert isinstance(t, Union)
    choices = arms(t)
    if arm is None:
        if depth > DEEP:  # prefer the arm that encodes smallest
            arm = min(range(len(choices)), key=lambda i: plan().decl_min(choices[i][1]))
        else:
            arm = rng.randrange(len(choices))
    cases, d = choices[arm]
    if cases:
        disc = rng.choice(cases)
    else:  # the default arm: any discriminant no case names
        taken = {c for cs, _ in t.arms for c in cs}
        disc = next(v for v in range(-5, 1000) if v not in taken)
    fmt = ">I" if t.disc_type == "unsigned int" else ">i"
    return struct.pack(fmt, disc) + decl(d, rng, depth + 1)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def decl(d: Decl, rng: random.Random, depth: int) -> bytes:
    if d.kind == "void":
        return b""
    if d.kind == "opaque":
        return _pad(rng.randbytes(d.bound or 0))
    if d.kind == "varopaque":
        n = 0 if depth > DEEP else rng.randint(0, min(d.bound if d.bound is not None else 40, 40))
        return struct.pack(">I", n) + _pad(rng.randbytes(n))
    if d.kind == "plain":
        return value(d.type_name, rng, depth)
    if d.kind == "fixed":
        return b"".join(value(d.type_name, rng, depth) for _ in range(d.bound or 0))
    if d.kind == "optional":
        if depth > DEEP or rng.random() < 0.3:
            return struct.pack(">I", 0)
        return struct.pack(">I", 1) + value(d.type_name, rng, depth)
    assert d.kind == "var"
    n = 0 if depth > DEEP else rng.randint(0, min(d.bound if d.bound is not None else 3, 3))
    return struct.pack(">I", n) + b"".join(value(d.type_name, rng, depth) for _ in range(n))


def union_arms() -> list[tuple[str, int]]:
    """(type, arm index) for every arm of every reachable union."""
    p = plan()
    unions = [(n, t) for n in p.names if isinstance(t := p.g.types[n], Union)]
    return [(n, i) for n, t in unions for i in range(len(arms(t)))]
