"""The XDR grammar of Stellar, read from the definitions stellar-sdk ships.

Every class in ``stellar_sdk.xdr`` carries its XDR source under
``XDR Source Code::`` in its docstring; named bounds live in
``stellar_sdk.xdr.constants``. This module parses those texts into a small
model (``Grammar``) that the emitters turn into walkers. Anonymous nested
structs and unions get stellar-sdk's names (parent name + field name with its
first letter raised: ``LedgerEntry.ext`` -> ``LedgerEntryExt``).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

# --- the model ---------------------------------------------------------------

PRIMITIVES = {
    # name: (size, kind) where kind says what a walker must check
    "int": (4, "int"),
    "unsigned int": (4, "int"),
    "hyper": (8, "int"),
    "unsigned hyper": (8, "int"),
    "bool": (4, "bool"),
    "float": (4, "int"),
    "double": (8, "int"),
}


@dataclass
class Decl:
    """One declaration: a field, a union arm or a typedef target.

    kind: "plain" (one value of ``type``), "fixed" (``type name[n]``),
    "var" (``type name<max>``), "opaque" (``opaque[n]``), "varopaque"
    (``opaque<max>`` and ``string<max>``), "optional" (``type *name``),
    "void".
    """

    kind: str
    type: str | None = None  # a type name or a primitive, None for opaque/void
    bound: int | None = None  # n of fixed forms, max of var forms (None: 2**32-1)
    name: str | None = None

    @property
    def type_name(self) -> str:
        """``type``, of the forms that have one (all but opaque and void)."""
        if self.type is None:
            raise ValueError(f"a {self.kind} declaration has no type")
        return self.type


@dataclass
class Enum:
    name: str
    values: dict[str, int]
    kind: str = "enum"


@dataclass
class Struct:
    name: str
    fields: list[Decl]
    kind: str = "struct"


@dataclass
class Union:
    name: str
    disc_type: str  # an enum name or a primitive
    arms: list[tuple[list[int], Decl]]  # case values -> declaration
    default: Decl | None = None
    kind: str = "union"


@dataclass
class Typedef:
    name: str
    decl: Decl
    kind: str = "typedef"


Type = Enum | Struct | Union | Typedef


@dataclass
class Grammar:
    types: dict[str, Type] = field(default_factory=dict)
    constants: dict[str, int] = field(default_factory=dict)
    #: XDR name -> stellar-sdk class name (they differ in case: uint32 -> Uint32)
    class_names: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> Type:
        return self.types[name]

    def refs(self, t: Type) -> list[str]:
        """Names of the non-primitive types ``t`` refers to directly."""
        decls: list[Decl]
        if isinstance(t, Struct):
            decls = t.fields
        elif isinstance(t, Union):
            decls = [d for _, d in t.arms] + ([t.default] if t.default else [])
            if t.disc_type not in PRIMITIVES:
                decls = decls + [Decl("plain", t.disc_type)]
        elif isinstance(t, Typedef):
            decls = [t.decl]
        else:
            decls = []
        return [d.type for d in decls if d.type is not None and d.type not in PRIMITIVES]

    def reachable(self, root: str) -> list[str]:
        """Every type reachable from ``root``, in a stable order (``root`` first)."""
        seen: dict[str, None] = {}
        stack = [root]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen[name] = None
            stack.extend(reversed(self.refs(self.types[name])))
        return list(seen)

    def recursive(self, names: list[str]) -> set[str]:
        """The types among ``names`` that sit on a reference cycle (Tarjan's SCCs)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on: set[str] = set()
        stack: list[str] = []
        out: set[str] = set()
        counter = [0]

        def visit(v: str) -> None:
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in self.refs(self.types[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in self.refs(self.types[v]):
                    out.update(comp)

        for n in names:
            if n not in index:
                visit(n)
        return out


# --- the parser --------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(//[^\n]*)|(/\*.*?\*/)|(-?0x[0-9A-Fa-f]+|-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))", re.S)


def _tokens(text: str) -> list[str]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace is left
            break
        pos = m.end()
        if m.group(1) or m.group(2):
            continue
        tok = m.group(3) or m.group(4) or m.group(5)
        if tok:
            out.append(tok)
    return out


class _Parser:
    def __init__(self, text: str, grammar: Grammar):
        self.toks = _tokens(text)
        self.i = 0
        self.g = grammar

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expect: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expect is not None and tok != expect):
            raise SyntaxError(
                f"expected {expect!r}, found {tok!r} at token {self.i}: {' '.join(self.toks[: self.i + 3])}"
            )
        self.i += 1
        return tok

    def value(self, enum_values: dict[str, int] | None = None) -> int:
        tok = self.take()
        if re.fullmatch(r"-?(0x[0-9A-Fa-f]+|\d+)", tok):
            return int(tok, 0)
        if enum_values and tok in enum_values:
            return enum_values[tok]
        if tok in self.g.constants:
            return self.g.constants[tok]
        raise KeyError(tok)

    def definition(self) -> tuple[str, Type, list[Type]]:
        """One top-level definition; returns it and the anonymous types inside."""
        kw = self.take()
        nested: list[Type] = []
        if kw == "typedef":
            decl = self.declaration("", nested)
            self.take(";")
            return decl.name or "", Typedef(decl.name or "", decl), nested
        name = self.take()
        if kw == "enum":
            t: Type = self.enum_body(name)
        elif kw == "struct":
            t = self.struct_body(name, nested)
        elif kw == "union":
            t = self.union_body(name, nested)
        else:
            raise SyntaxError(f"unknown definition {kw!r}")
        self.take(";")
        return name, t, nested

    def enum_body(self, name: str) -> Enum:
        self.take("{")
        values: dict[str, int] = {}
        while True:
            member = self.take()
            self.take("=")
            values[member] = self.value(values)
            if self.peek() == ",":
                self.take(",")
            if self.peek() == "}":
                self.take("}")
                return Enum(name, values)

    def struct_body(self, name: str, nested: list[Type]) -> Struct:
        self.take("{")
        fields = []
        while self.peek() != "}":
            fields.append(self.declaration(name, nested))
            self.take(";")
        self.take("}")
        return Struct(name, fields)

    def union_body(self, name: str, nested: list[Type], arm_parent: str | None = None) -> Union:
        """``arm_parent`` names the anonymous types of the arms: stellar-sdk
        names them after the union's parent when the union is anonymous itself
        (``TrustLineEntry.ext`` arm ``v1`` -> ``TrustLineEntryV1``)."""
        self.take("switch")
        self.take("(")
        disc = self.type_spec(name, None, nested)
        self.take()  # the discriminant's name
        self.take(")")
        self.take("{")
        disc_values = None
        if disc not in PRIMITIVES:
            dt = self.g.types.get(disc)
            disc_values = dt.values if isinstance(dt, Enum) else None
        arms: list[tuple[list[int], Decl]] = []
        default = None
        while self.peek() != "}":
            cases: list[int] = []
            is_default = False
            while self.peek() in ("case", "default"):
                if self.take() == "case":
                    cases.append(self.value(disc_values))
                else:
                    is_default = True
                self.take(":")
            decl = self.declaration(arm_parent or name, nested)
            self.take(";")
            if cases:
                arms.append((cases, decl))
            if is_default:
                default = decl
        self.take("}")
        return Union(name, disc, arms, default)

    def type_spec(self, parent: str, field_name: str | None, nested: list[Type]) -> str:
        tok = self.take()
        if tok == "unsigned":
            return "unsigned " + self.take()
        if tok in ("struct", "union", "enum"):
            # An anonymous type: its name is only known after its body.
            start = self.i
            depth = 0
            while True:  # find the field name after the matching brace
                t = self.toks[self.i]
                self.i += 1
                if t == "{":
                    depth += 1
                elif t == "}":
                    depth -= 1
                    if depth == 0:
                        break
            fname = self.toks[self.i]
            anon = parent + fname[0].upper() + fname[1:]
            end = self.i
            self.i = start
            if tok == "struct":
                t2: Type = self.struct_body(anon, nested)
            elif tok == "union":
                t2 = self.union_body(anon, nested, arm_parent=parent)
            else:
                t2 = self.enum_body(anon)
            assert self.i == end
            nested.append(t2)
            return anon
        return tok

    def declaration(self, parent: str, nested: list[Type]) -> Decl:
        if self.peek() == "void":
            self.take()
            return Decl("void")
        if self.peek() in ("opaque", "string"):
            self.take()
            name = self.take()
            if self.peek() == "[":
                self.take("[")
                n = self.value()
                self.take("]")
                return Decl("opaque", None, n, name)
            self.take("<")
            bound = None if self.peek() == ">" else self.value()
            self.take(">")
            return Decl("varopaque", None, bound, name)
        tname = self.type_spec(parent, None, nested)
        if self.peek() == "*":
            self.take()
            return Decl("optional", tname, None, self.take())
        name = self.take()
        if self.peek() == "[":
            self.take("[")
            n = self.value()
            self.take("]")
            return Decl("fixed", tname, n, name)
        if self.peek() == "<":
            self.take("<")
            bound = None if self.peek() == ">" else self.value()
            self.take(">")
            return Decl("var", tname, bound, name)
        return Decl("plain", tname, None, name)


def _source(cls: type) -> str | None:
    doc = inspect.getdoc(cls) or ""
    if "XDR Source Code::" not in doc:
        return None
    return doc.split("XDR Source Code::", 1)[1]


def _named(source: str) -> bool:
    """True for a top-level definition; anonymous ones start with ``struct {`` or ``union switch``."""
    toks = _tokens(source)[:3]
    if not toks:
        return False
    if toks[0] == "typedef":
        return True
    return toks[0] in ("struct", "union", "enum") and toks[1] not in ("{", "switch")


def load_stellar_sdk() -> Grammar:
    """Parse every XDR definition shipped in the installed stellar-sdk."""
    import stellar_sdk.xdr as sx
    from stellar_sdk.xdr import constants

    g = Grammar()
    g.constants = {k: v for k, v in vars(constants).items() if k.isupper() and isinstance(v, int)}
    sources: list[tuple[str, str]] = []
    for cls_name, cls in sorted(vars(sx).items()):
        if inspect.isclass(cls):
            src = _source(cls)
            if src and _named(src):
                sources.append((cls_name, src))
    # Enums first: union case labels refer to their members, and enum members
    # may be defined by another enum's (SIGNER_KEY_TYPE_ED25519 = KEY_TYPE_ED25519),
    # so enums are parsed until every one resolves.
    enums = [s for s in sources if _tokens(s[1])[0] == "enum"]
    while enums:
        pending = []
        for cls_name, src in enums:
            try:
                name, t, _ = _Parser(src, g).definition()
            except KeyError:
                pending.append((cls_name, src))
                continue
            g.types[name] = t
            g.class_names[name] = cls_name
            assert isinstance(t, Enum)
            g.constants.update(t.values)
        if len(pending) == len(enums):
            raise SyntaxError(f"enums that never resolve: {[c for c, _ in pending]}")
        enums = pending
    for cls_name, src in sources:
        if _tokens(src)[0] == "enum":
            continue
        p = _Parser(src, g)
        name, t, nested = p.definition()
        if p.peek() is not None:
            raise SyntaxError(f"{cls_name}: trailing tokens {p.toks[p.i :]}")
        g.types[name] = t
        g.class_names[name] = cls_name
        for n in nested:
            g.types[n.name] = n
            g.class_names[n.name] = n.name
    return g


def sdk_version() -> str:
    import stellar_sdk

    return stellar_sdk.__version__
