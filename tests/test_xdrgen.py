"""The walker is generated, never hand-edited, and covers exactly the types
reachable from LedgerCloseMetaBatch."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

sx = pytest.importorskip("stellar_sdk.xdr", reason="the [test] extra brings stellar-sdk")

from stellar_live_source.core import _walk_gen_py  # noqa: E402 - after the importorskip
from stellar_live_source.xdrgen import __main__ as xdrgen  # noqa: E402 - after the importorskip
from stellar_live_source.xdrgen.grammar import Struct, load_stellar_sdk  # noqa: E402 - after the importorskip
from stellar_live_source.xdrgen.plan import TAILS, Plan  # noqa: E402 - after the importorskip

ROOT = Path(__file__).resolve().parents[1]


def test_regenerating_changes_nothing():
    generated = xdrgen.generate(ROOT)
    assert len(generated) == 2
    for path, text in generated.items():
        assert path.read_text() == text, f"{path} is stale: run `make generate`"


def test_check_mode_reports_a_stale_file_and_writes_nothing(tmp_path, capsys):
    for rel in xdrgen.TARGETS.values():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    assert xdrgen.main(["--check", "--root", str(tmp_path)]) == 0
    stale = tmp_path / xdrgen.TARGETS["cython"]
    stale.write_text("# edited by hand\n")
    assert xdrgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "stale: ext/stellar_live_source/core/_walk_gen.pxi" in capsys.readouterr().err
    assert stale.read_text() == "# edited by hand\n"
    assert xdrgen.main(["--root", str(tmp_path)]) == 0
    assert stale.read_text() == (ROOT / xdrgen.TARGETS["cython"]).read_text()


def _sdk_reachable(root: str) -> set[str]:
    """Independently of the generator: follow the ``X.unpack(`` calls in the
    source of stellar-sdk's own ``unpack`` methods."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        cls = getattr(sx, name, None)
        if cls is None or not hasattr(cls, "unpack"):
            continue
        stack += re.findall(r"\b([A-Z][A-Za-z0-9]*)\.unpack\(", inspect.getsource(cls.unpack))
    # Keep the XDR-defined classes; Integer, Opaque, String... are xdrlib wrappers.
    return {n for n in seen if "XDR Source Code::" in (getattr(sx, n).__doc__ or "")}


def test_walker_covers_exactly_the_reachable_types():
    expected = _sdk_reachable("LedgerCloseMetaBatch")
    assert len(expected) > 330
    covered = set(_walk_gen_py.SDK_CLASSES)
    assert covered == expected, (sorted(expected - covered), sorted(covered - expected))
    assert len(_walk_gen_py.WALKERS) == len(_walk_gen_py.TYPE_NAMES) == len(covered)


def test_the_compiled_walker_has_the_same_tables():
    from stellar_live_source.core import _walk_c

    assert _walk_c.TYPE_NAMES == _walk_gen_py.TYPE_NAMES
    assert _walk_c.SDK_CLASSES == _walk_gen_py.SDK_CLASSES


def test_the_grammar_parses_every_definition_stellar_sdk_ships():
    g = load_stellar_sdk()
    named = [c for c in vars(sx).values() if inspect.isclass(c) and "XDR Source Code::" in (c.__doc__ or "")]
    # Every class with a definition, named or anonymous, is one parsed type.
    assert {g.class_names[n] for n in g.types} == {c.__name__ for c in named}
    # SCVal nests through SCVec and SCMap: those are the depth-counted types.
    assert {"SCVal", "SCVec", "SCMap"} <= g.recursive(g.reachable("LedgerCloseMetaBatch"))


def test_the_indexers_header_offsets_are_the_grammars():
    """The index reads previousLedgerHash 4 bytes into a header, walks its
    StellarValue from byte 36, reads ledgerSeq 64 bytes after it, and walks
    the rest with the generated w_LedgerHeader_after_scpValue."""
    p = Plan(load_stellar_sdk())
    header = p.g.types["LedgerHeader"]
    assert isinstance(header, Struct)
    fields = header.fields
    names = [f.name for f in fields]
    sizes = [p.decl_static(f) for f in fields]
    sv = names.index("scpValue")
    assert names[: sv + 4] == [
        "ledgerVersion",
        "previousLedgerHash",
        "scpValue",
        "txSetResultHash",
        "bucketListHash",
        "ledgerSeq",
    ]
    assert sizes[:2] == [4, 32] and sizes[sv + 1 : sv + 3] == [32, 32]
    assert ("LedgerHeader", "scpValue") in TAILS
    assert callable(_walk_gen_py.w_LedgerHeader_after_scpValue)
