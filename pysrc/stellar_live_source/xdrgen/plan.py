"""Sizes and checks of every type a walker must visit, shared by both emitters.

A type is *static* when its encoded size never varies (``Hash``, ``Price``,
``PublicKey``): a walker skips it in one step after one bounds check, and only
reads the few words that need checking inside it (enum values, union
discriminants, bools, padding). Consecutive static fields of a struct collapse
into one such block; this is what makes the compiled walk cost about as much
as reading the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grammar import PRIMITIVES, Decl, Enum, Grammar, Struct, Typedef, Union

ROOT = "LedgerCloseMetaBatch"
MAX_U32 = 0xFFFFFFFF
# Struct tails that get a walker of their own, ``w_<struct>_after_<field>``: the
# indexer walks a header's StellarValue itself (where it ends places ledgerSeq),
# then the rest of the header, so StellarValue is walked once.
TAILS = (("LedgerHeader", "scpValue"),)


def pad4(n: int) -> int:
    return (n + 3) & ~3


@dataclass
class Check:
    """One thing to verify inside a static run, at a fixed offset.

    kind: "enum" (values), "bool", "zero" (``size`` padding bytes),
    "union" (a discriminant selecting among static arms, see ``arms``).
    """

    kind: str
    offset: int
    values: tuple[int, ...] = ()
    size: int = 0
    type_name: str = ""
    arms: tuple[tuple[tuple[int, ...], tuple[Check, ...]], ...] = ()


class Plan:
    def __init__(self, grammar: Grammar, root: str = ROOT):
        self.g = grammar
        self.names = grammar.reachable(root)
        self.ids = {n: i for i, n in enumerate(self.names)}
        self.recursive = grammar.recursive(self.names)
        self._static: dict[str, int | None] = {}
        self._min: dict[str, int] = {}
        for n in self.names:
            self.static_size(n)
            self.min_size(n)

    # -- sizes --
    def static_size(self, name: str) -> int | None:
        """The fixed encoded size of a type, or None when it varies."""
        if name in PRIMITIVES:
            return PRIMITIVES[name][0]
        if name in self._static:
            return self._static[name]
        self._static[name] = None  # a cycle is never static
        t = self.g.types[name]
        size: int | None
        if isinstance(t, Enum):
            size = 4
        elif isinstance(t, Typedef):
            size = self.decl_static(t.decl)
        elif isinstance(t, Struct):
            sizes = [self.decl_static(d) for d in t.fields]
            known = [s for s in sizes if s is not None]
            size = sum(known) if len(known) == len(sizes) else None
        else:
            arms = [self.decl_static(d) for _, d in self._arms(t)]
            size = 4 + arms[0] if arms and arms[0] is not None and len(set(arms)) == 1 else None
        self._static[name] = size
        return size

    def decl_static(self, d: Decl) -> int | None:
        if d.kind == "void":
            return 0
        if d.kind == "opaque":
            return pad4(d.bound or 0)
        if d.kind == "plain":
            return self.static_size(d.type_name)
        if d.kind == "fixed":
            s = self.static_size(d.type_name)
            return None if s is None else s * (d.bound or 0)
        return None

    def min_size(self, name: str) -> int:
        if name in PRIMITIVES:
            return PRIMITIVES[name][0]
        if name in self._min:
            return self._min[name]
        self._min[name] = 4  # a lower bound that holds on a cycle
        t = self.g.types[name]
        if isinstance(t, Enum):
            m = 4
        elif isinstance(t, Typedef):
            m = self.decl_min(t.decl)
        elif isinstance(t, Struct):
            m = sum(self.decl_min(d) for d in t.fields)
        else:
            m = 4 + min((self.decl_min(d) for _, d in self._arms(t)), default=0)
        self._min[name] = m
        return m

    def decl_min(self, d: Decl) -> int:
        if d.kind == "void":
            return 0
        if d.kind == "opaque":
            return pad4(d.bound or 0)
        if d.kind == "plain":
            return self.min_size(d.type_name)
        if d.kind == "fixed":
            return self.min_size(d.type_name) * (d.bound or 0)
        return 4  # var forms and optionals: a count or flag

    @staticmethod
    def _arms(t: Union) -> list[tuple[list[int], Decl]]:
        arms = list(t.arms)
        if t.default is not None:
            arms.append(([], t.default))
        return arms

    # -- checks inside static values --
    def checks(self, name: str, offset: int = 0) -> list[Check]:
        """What must be read and verified inside a static value of ``name``."""
        if name in PRIMITIVES:
            return [Check("bool", offset, type_name="bool")] if PRIMITIVES[name][1] == "bool" else []
        t = self.g.types[name]
        if isinstance(t, Enum):
            return [Check("enum", offset, tuple(sorted(set(t.values.values()))), type_name=name)]
        if isinstance(t, Typedef):
            return self.decl_checks(t.decl, offset)
        if isinstance(t, Struct):
            out: list[Check] = []
            for d in t.fields:
                out += self.decl_checks(d, offset)
                size = self.decl_static(d)
                assert size is not None, f"a field of static {name} varies in size"
                offset += size
            return out
        assert isinstance(t, Union)
        if t.default is not None:  # a default arm accepts every discriminant
            raise NotImplementedError(f"static union with a default arm: {name}")
        arms = tuple((tuple(v & MAX_U32 for v in cases), tuple(self.decl_checks(d, offset + 4))) for cases, d in t.arms)
        return [Check("union", offset, type_name=name, arms=arms)]

    def decl_checks(self, d: Decl, offset: int) -> list[Check]:
        if d.kind == "void":
            return []
        if d.kind == "opaque":
            n = d.bound or 0
            return [Check("zero", offset + n, size=pad4(n) - n, type_name="opaque")] if n % 4 else []
        if d.kind == "plain":
            return self.checks(d.type_name, offset)
        assert d.kind == "fixed"
        size = self.static_size(d.type_name)
        assert size is not None, f"a static value holds {d.type_name}[], which varies in size"
        out = []
        for i in range(d.bound or 0):
            out += self.checks(d.type_name, offset + i * size)
        return out

    def class_name(self, name: str) -> str:
        return self.g.class_names[name]
