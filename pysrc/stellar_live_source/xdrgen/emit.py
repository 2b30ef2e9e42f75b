"""Writes the walker, once as Cython and once as its pure-Python twin.

Both come from the same plan through one emitter and a small dialect per
language, so the two walkers cannot drift apart: same functions, same checks,
same error codes and offsets.

Every type gets ``w_<Name>(b, p, n, st)``: walk one value of the type that
starts at ``p`` in ``b`` (which ends at ``n``) and return where it ends. The
compiled walker returns -1 after filling ``st`` on an error; the pure one
raises ``WalkFailure``.
"""

from __future__ import annotations

# The error codes live with the runtime that reports them.
from ..core.codes import E_BOOL, E_DEPTH, E_PADDING, E_TOO_LONG, E_TRUNCATED, E_UNKNOWN_ARM
from .grammar import PRIMITIVES, Decl, Enum, Struct, Typedef, Union
from .plan import MAX_U32, TAILS, Check, Plan

# Above this many checked elements a fixed array is checked in a loop, not unrolled.
_UNROLL = 16


class Cython:
    ext = "pxi"

    @staticmethod
    def rd(off: str) -> str:
        return f"rd32(b + {off})"

    @staticmethod
    def fail(code: int, tid: int, off: str) -> str:
        return f"return fail(st, {code}, {tid}, {off})"

    @staticmethod
    def call(tid_name: str) -> list[str]:
        return [f"p = w_{tid_name}(b, p, n, st)", "if p < 0: return -1"]

    @staticmethod
    def header(name: str) -> list[str]:
        return [
            f"cdef Py_ssize_t w_{name}(const uint8_t* b, Py_ssize_t p, Py_ssize_t n, WalkState* st) noexcept nogil:",
            "    cdef uint32_t d",
            "    cdef uint32_t c",
            "    cdef Py_ssize_t i, m",
        ]

    @staticmethod
    def bigger(count: str, size: int, room: str) -> str:
        # 64-bit arithmetic: a count near 2**32 times an element size must not wrap.
        return f"<uint64_t>{count} * {size} > <uint64_t>({room})"

    @staticmethod
    def match(var: str, values: tuple[int, ...]) -> str:
        return " or ".join(f"{var} == {v}U" for v in values)

    @staticmethod
    def padded(c: str) -> str:
        return f"(<Py_ssize_t>{c} + 3) & ~(<Py_ssize_t>3)"

    @staticmethod
    def nonzero(off: str, size: str) -> str:
        return f"not zeros(b + {off}, {size})"

    depth_enter = [
        "st.depth += 1",
        "if st.depth > st.max_depth: {fail}",
    ]
    depth_leave = ["st.depth -= 1"]


class Python:
    ext = "py"

    @staticmethod
    def rd(off: str) -> str:
        return f"_u32(b, {off})[0]"

    @staticmethod
    def fail(code: int, tid: int, off: str) -> str:
        return f"raise WalkFailure({code}, {tid}, {off})"

    @staticmethod
    def call(tid_name: str) -> list[str]:
        return [f"p = w_{tid_name}(b, p, n, st)"]

    @staticmethod
    def header(name: str) -> list[str]:
        return [f"def w_{name}(b, p, n, st):"]

    @staticmethod
    def bigger(count: str, size: int, room: str) -> str:
        return f"{count} * {size} > {room}"

    @staticmethod
    def match(var: str, values: tuple[int, ...]) -> str:
        if len(values) == 1:
            return f"{var} == {values[0]}"
        return f"{var} in {{{', '.join(str(v) for v in values)}}}"

    @staticmethod
    def padded(c: str) -> str:
        return f"({c} + 3) & ~3"

    @staticmethod
    def nonzero(off: str, size: str) -> str:
        return f"any(b[{off}:{off} + {size}])"

    depth_enter = [
        "st.depth += 1",
        "if st.depth > st.max_depth: {fail}",
    ]
    depth_leave = ["st.depth -= 1"]


class Emitter:
    def __init__(self, plan: Plan, dialect: type[Cython] | type[Python]):
        self.plan = plan
        self.d = dialect

    def tid(self, name: str) -> int:
        return self.plan.ids[name]

    # -- checks of static runs, at ``base + offset`` --
    def checks(self, checks: list[Check], base: str, tid: int, ind: str) -> list[str]:
        out: list[str] = []
        for ch in checks:
            off = f"{base} + {ch.offset}" if ch.offset else base
            where = self.plan.ids.get(ch.type_name, tid)
            if ch.kind == "bool":
                out.append(f"{ind}if {self.d.rd(off)} > 1: {self.d.fail(E_BOOL, tid, off)}")
            elif ch.kind == "zero":
                out.append(f"{ind}if {self.d.nonzero(off, str(ch.size))}: {self.d.fail(E_PADDING, tid, off)}")
            elif ch.kind == "enum":
                vals = tuple(v & MAX_U32 for v in ch.values)
                lo, hi = min(vals), max(vals)
                out.append(f"{ind}d = {self.d.rd(off)}")
                if hi - lo + 1 == len(vals):
                    cond = f"d > {hi}" if lo == 0 else f"d < {lo} or d > {hi}"
                    out.append(f"{ind}if {cond}: {self.d.fail(E_UNKNOWN_ARM, where, off)}")
                else:
                    out.append(f"{ind}if not ({self.d.match('d', vals)}): {self.d.fail(E_UNKNOWN_ARM, where, off)}")
            else:  # a union whose every arm is static and of one size
                out.append(f"{ind}d = {self.d.rd(off)}")
                for k, (cases, arm_checks) in enumerate(ch.arms):
                    kw = "if" if k == 0 else "elif"
                    out.append(f"{ind}{kw} {self.d.match('d', cases)}:")
                    out += self.checks(list(arm_checks), base, tid, ind + "    ") or [f"{ind}    pass"]
                out.append(f"{ind}else: {self.d.fail(E_UNKNOWN_ARM, where, off)}")
        return out

    def static_run(self, size: int, checks: list[Check], tid: int, ind: str) -> list[str]:
        if size == 0:
            return []
        out = [f"{ind}if n - p < {size}: {self.d.fail(E_TRUNCATED, tid, 'p')}"]
        out += self.checks(checks, "p", tid, ind)
        out.append(f"{ind}p += {size}")
        return out

    # -- one declaration --
    def decl(self, dcl: Decl, tid: int, ind: str) -> list[str]:
        plan, d = self.plan, self.d
        size = plan.decl_static(dcl)
        if size is not None:
            return self.static_run(
                size, plan.decl_checks(dcl, 0) if len(self._flat_checks(dcl)) <= _UNROLL else [], tid, ind
            ) + (self._checked_fixed_loop(dcl, tid, ind) if len(self._flat_checks(dcl)) > _UNROLL else [])
        if dcl.kind == "plain":
            return [ind + line for line in d.call(dcl.type_name)]
        if dcl.kind == "fixed":
            return [f"{ind}for i in range({dcl.bound}):"] + [ind + "    " + line for line in d.call(dcl.type_name)]
        if dcl.kind == "optional":
            return [
                f"{ind}if n - p < 4: {d.fail(E_TRUNCATED, tid, 'p')}",
                f"{ind}d = {d.rd('p')}",
                f"{ind}if d > 1: {d.fail(E_BOOL, tid, 'p')}",
                f"{ind}p += 4",
                f"{ind}if d:",
            ] + [ind + "    " + line for line in d.call(dcl.type_name)]
        # var arrays and var opaques start with a count
        out = [
            f"{ind}if n - p < 4: {d.fail(E_TRUNCATED, tid, 'p')}",
            f"{ind}c = {d.rd('p')}",
        ]
        if dcl.bound is not None and dcl.bound < MAX_U32:
            out.append(f"{ind}if c > {dcl.bound}: {d.fail(E_TOO_LONG, tid, 'p')}")
        if dcl.kind == "varopaque":
            return out + [
                f"{ind}m = {d.padded('c')}",
                f"{ind}if m > n - p - 4: {d.fail(E_TRUNCATED, tid, 'p')}",
                f"{ind}p += 4",
                f"{ind}if m != c and {d.nonzero('p + c', 'm - c')}: {d.fail(E_PADDING, tid, 'p + c')}",
                f"{ind}p += m",
            ]
        assert dcl.kind == "var"
        out.append(f"{ind}p += 4")
        esize = plan.static_size(dcl.type_name)
        if esize is not None:
            out.append(f"{ind}if {d.bigger('c', esize, 'n - p')}: {d.fail(E_TRUNCATED, tid, 'p')}")
            checks = plan.checks(dcl.type_name)
            if checks:
                out.append(f"{ind}for i in range(c):")
                out += self.checks(checks, "p", tid, ind + "    ")
                out.append(f"{ind}    p += {esize}")
            elif esize:
                out.append(f"{ind}p += c * {esize}")
            return out
        # Every element takes at least min_size bytes: a count that cannot fit
        # is refused before the loop, so garbage never spins.
        out.append(f"{ind}if {d.bigger('c', plan.min_size(dcl.type_name), 'n - p')}: {d.fail(E_TRUNCATED, tid, 'p')}")
        out.append(f"{ind}for i in range(c):")
        out += [ind + "    " + line for line in d.call(dcl.type_name)]
        return out

    def _flat_checks(self, dcl: Decl) -> list[Check]:
        return self.plan.decl_checks(dcl, 0) if dcl.kind != "void" else []

    def _checked_fixed_loop(self, dcl: Decl, tid: int, ind: str) -> list[str]:
        raise NotImplementedError(f"fixed array of {dcl.bound} checked elements ({dcl.type})")

    def fields(self, fields: list[Decl], tid: int, ind: str) -> list[str]:
        """A struct's fields, consecutive static ones in one run."""
        plan = self.plan
        body: list[str] = []
        run_size, run_checks = 0, []
        for f in fields:
            s = plan.decl_static(f)
            if s is not None and len(self._flat_checks(f)) <= _UNROLL:
                run_checks += plan.decl_checks(f, run_size)
                run_size += s
                continue
            body += self.static_run(run_size, run_checks, tid, ind)
            run_size, run_checks = 0, []
            body += self.decl(f, tid, ind)
        return body + self.static_run(run_size, run_checks, tid, ind)

    def tail(self, name: str, after: str) -> list[str]:
        """``w_<name>_after_<after>``: the fields of struct ``name`` after its
        field ``after``, failing as ``name``'s walker would there."""
        t = self.plan.g.types[name]
        assert isinstance(t, Struct) and name not in self.plan.recursive
        rest = [f.name for f in t.fields].index(after) + 1
        body = self.fields(t.fields[rest:], self.tid(name), "    ")
        return self.d.header(f"{name}_after_{after}") + body + ["    return p", "", ""]

    # -- one type --
    def function(self, name: str) -> list[str]:
        plan, d = self.plan, self.d
        t = plan.g.types[name]
        tid = self.tid(name)
        body: list[str] = []
        ind = "    "
        size = plan.static_size(name)
        if size is not None:
            body = self.static_run(size, plan.checks(name), tid, ind)
        elif isinstance(t, Typedef):
            body = self.decl(t.decl, tid, ind)
        elif isinstance(t, Struct):
            body = self.fields(t.fields, tid, ind)
        else:
            assert isinstance(t, Union)
            body = [
                f"{ind}if n - p < 4: {d.fail(E_TRUNCATED, tid, 'p')}",
                f"{ind}d = {d.rd('p')}",
                f"{ind}p += 4",
            ]
            for k, (cases, arm) in enumerate(t.arms):
                kw = "if" if k == 0 else "elif"
                body.append(f"{ind}{kw} {d.match('d', tuple(v & MAX_U32 for v in cases))}:")
                body += self.decl(arm, tid, ind + "    ") or [f"{ind}    pass"]
            if t.default is not None:
                body.append(f"{ind}else:")
                body += self.decl(t.default, tid, ind + "    ") or [f"{ind}    pass"]
            else:
                body.append(f"{ind}else: {d.fail(E_UNKNOWN_ARM, tid, 'p - 4')}")
        if name in plan.recursive:
            enter = [ind + line.format(fail=d.fail(E_DEPTH, tid, "p")) for line in d.depth_enter]
            body = enter + body + [ind + line for line in d.depth_leave]
        return d.header(name) + body + ["    return p", "", ""]

    def module_body(self) -> list[str]:
        out: list[str] = []
        for name in self.plan.names:
            out += self.function(name)
        for name, after in TAILS:
            out += self.tail(name, after)
        return out


def _sdk_note(plan: Plan, version: str) -> list[str]:
    return [
        f"# GENERATED by `python -m stellar_live_source.xdrgen` from stellar-sdk {version}: do not edit.",
        f"# {len(plan.names)} types reachable from LedgerCloseMetaBatch; regenerate after bumping the pin.",
        "",
    ]


def emit_cython(plan: Plan, version: str) -> str:
    em = Emitter(plan, Cython)
    out = _sdk_note(plan, version)
    out += [f"# Types (id: name): {', '.join(f'{i}: {n}' for i, n in enumerate(plan.names[:3]))}, ...", ""]
    out += em.module_body()
    out.append(f"cdef walk_fn WALKERS[{len(plan.names)}]")
    for i, name in enumerate(plan.names):
        out.append(f"WALKERS[{i}] = w_{name}")
    out += ["", *_tables(plan)]
    return "\n".join(out) + "\n"


def emit_python(plan: Plan, version: str) -> str:
    em = Emitter(plan, Python)
    out = ['"""The pure-Python twin of the compiled XDR walker (generated; see xdrgen)."""', ""]
    out += _sdk_note(plan, version)
    out += [
        "import struct",
        "",
        "_u32 = struct.Struct('>I').unpack_from",
        "",
        "",
        "class WalkFailure(Exception):",
        "    def __init__(self, code, tid, offset):",
        "        self.code, self.tid, self.offset = code, tid, offset",
        "",
        "",
    ]
    out += em.module_body()
    out.append("WALKERS = [" + ", ".join(f"w_{n}" for n in plan.names) + "]")
    out += ["", *_tables(plan)]
    return "\n".join(out) + "\n"


def _tables(plan: Plan) -> list[str]:
    names = ",\n    ".join(repr(n) for n in plan.names)
    classes = ",\n    ".join(repr(plan.class_name(n)) for n in plan.names)
    return [
        f"TYPE_NAMES = (\n    {names},\n)",
        "# stellar-sdk's class for each type (the coverage test compares these)",
        f"SDK_CLASSES = (\n    {classes},\n)",
        f"RECURSIVE = {tuple(sorted(plan.ids[n] for n in plan.recursive))!r}",
    ]


__all__ = ["emit_cython", "emit_python", "PRIMITIVES", "Enum"]
