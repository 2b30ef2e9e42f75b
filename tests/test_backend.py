"""Which twin is loaded: compiled by default on CPython, never a silent
fallback; the pure twins when STELLAR_LIVE_SOURCE_NO_EXTENSIONS=1."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from types import ModuleType

import pytest

from stellar_live_source import core

from .conftest import CORE_MODULES, ROOT, compiled_expected, load_twin

MODULES = ["zstd", "walk", "index", "keys", "frame"]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "STELLAR_LIVE_SOURCE_NO_EXTENSIONS"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=60)


def test_every_selector_loaded_the_compiled_module():
    import importlib

    if not compiled_expected():
        pytest.skip("STELLAR_LIVE_SOURCE_NO_EXTENSIONS is set")
    assert core.BACKEND == "cython"
    for name in MODULES:
        impl = importlib.import_module(f"stellar_live_source.core.{name}")._impl
        assert impl.__name__ == f"stellar_live_source.core._{name}_c"
        assert impl.__file__.endswith((".so", ".pyd")), impl.__file__


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libcrypto found through hashlib's _hashlib")
def test_compiled_header_hashes_call_libcrypto_directly():
    """Not a hashlib object per header (about four times the cost); the debug
    build checks every such hash against hashlib."""
    from stellar_live_source.core import index

    if not compiled_expected():
        pytest.skip("STELLAR_LIVE_SOURCE_NO_EXTENSIONS is set")
    assert index.SHA256 == "libcrypto"


PREFAULT_CHECK = """
import json, os
from stellar_live_source.ops.runtime import tune_malloc
tune_malloc()  # as serve does: a freed block stays in the heap, resident
import zstandard
from stellar_live_source.core import _frame_c, _zstd_c
data = os.urandom(1 << 20) * 8  # 8 MiB, over the 1 MiB floor
packed = zstandard.ZstdCompressor().compress(data)
first = _zstd_c.decompress(packed, 1 << 30)
n1 = _zstd_c.prefaulted_bytes()
del first
again = _zstd_c.decompress(packed, 1 << 30)  # the freed block again: resident, nothing to populate
n2 = _zstd_c.prefaulted_bytes()
frame = _frame_c.raw_ledger_frame(7, again, 0, len(again))
n3 = _frame_c.prefaulted_bytes()
small = zstandard.ZstdCompressor().compress(os.urandom(1000) * 500)  # 500 kB: under the floor
_zstd_c.decompress(small, 1 << 30)
print(json.dumps([n1, n2, n3, _zstd_c.prefaulted_bytes(), again == data, frame.endswith(data)]))
"""


def test_compiled_core_populates_fresh_pages_of_big_buffers_at_once():
    """The decompressed object and each big frame: fresh heap pages in one
    madvise(MADV_POPULATE_WRITE) rather than a fault per page; resident pages
    never (it would cost for nothing). A fresh process shows both."""
    import platform

    out = _run(PREFAULT_CHECK)
    assert out.returncode == 0, out.stderr
    n1, n2, n3, n4, same, framed = json.loads(out.stdout)
    assert same and framed
    release = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2] if x.isdigit())
    if not sys.platform.startswith("linux") or release < (5, 14):
        assert n1 == n2 == n3 == n4 == 0  # no MADV_POPULATE_WRITE: the kernel faults pages in as before
        return
    assert n1 >= 4 << 20  # most of the 8 MiB was heap the process had never touched
    assert n2 == n1  # the block freed and taken again was resident
    assert n3 >= 4 << 20
    assert n4 == n2  # small outputs are left to the kernel


def test_the_environment_variable_forces_the_pure_twins():
    code = (
        "import importlib, stellar_live_source.core as c; print(c.BACKEND); "
        f"print(*[importlib.import_module('stellar_live_source.core.' + m)._impl.__name__ for m in {MODULES!r}])"
    )
    out = _run(code, STELLAR_LIVE_SOURCE_NO_EXTENSIONS="1")
    assert out.returncode == 0, out.stderr
    backend, modules = out.stdout.splitlines()
    assert backend == "python"
    assert modules.split() == [f"stellar_live_source.core._{m}_py" for m in MODULES]


def test_a_missing_extension_is_an_error_not_a_fallback():
    code = "import sys; sys.modules['stellar_live_source.core._walk_c'] = None\nimport stellar_live_source.core.walk"
    out = _run(code)
    assert out.returncode != 0
    assert "the compiled core module stellar_live_source.core._walk_c is missing" in out.stderr
    assert "STELLAR_LIVE_SOURCE_NO_EXTENSIONS=1" in out.stderr


def test_the_command_reports_its_backend():
    out = subprocess.run([sys.executable, "-m", "stellar_live_source.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and f"core: {core.BACKEND}" in out.stdout


def test_debug_builds_are_what_they_say():
    """`make test-debug` runs the suite on a build with the invariant checks."""
    from stellar_live_source.core import _walk_c

    assert _walk_c.DEBUG == (os.environ.get("STELLAR_LIVE_SOURCE_EXPECT_DEBUG") == "1")


def test_no_cython_declarations_share_a_python_module_name():
    """A .pxd is cimported by its dotted name: core/zstd.pxd read as the selector
    core/zstd.py's declarations, but declared libzstd. C libraries' declarations
    live in ext/stellar_live_source/includes, named after the library."""
    ext = ROOT / "ext" / "stellar_live_source"
    package = ROOT / "pysrc" / "stellar_live_source"
    shadowing = [
        str(pxd.relative_to(ROOT))
        for pxd in ext.rglob("*.pxd")
        if pxd.stem != "__init__" and (package / pxd.relative_to(ext)).with_suffix(".py").exists()
    ]
    assert shadowing == []


def _imported(body: list[ast.stmt]) -> set[str]:
    """Names bound by the module-level imports of ``body`` (under ``if`` and ``try`` too)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        if isinstance(node, ast.If | ast.Try):
            names |= _imported(node.body + node.orelse + getattr(node, "finalbody", []))
    return names


def _pyx_imported(text: str) -> set[str]:
    """The same for a .pyx: its column-0 Python imports (a cimport binds no module attribute)."""
    found = re.findall(r"^(?:from\s+\S+\s+import\s+(?:\([^)]*\)|[^\n]*)|import\s+[^\n]*)", text, re.M)
    return _imported(ast.parse("\n".join(found)).body)


def _public(module: ModuleType, imported: set[str]) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and name not in imported and not isinstance(value, ModuleType)
    }


def _declared(stub: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(stub).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            assert isinstance(node.target, ast.Name), ast.dump(node)
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                assert isinstance(target, ast.Name), ast.dump(node)
                names.add(target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("name", [f"_{m}" for m in MODULES])
def test_each_stub_declares_exactly_what_both_twins_provide(name):
    """One .pyi types both twins, so the compiled module, its pure twin and the
    stub have the same public names (not counting what each imports)."""
    if not compiled_expected():
        pytest.skip("STELLAR_LIVE_SOURCE_NO_EXTENSIONS is set")
    core_dir = ROOT / "pysrc" / "stellar_live_source" / "core"
    compiled = importlib.import_module(f"stellar_live_source.core.{name}_c")
    pure = importlib.import_module(f"stellar_live_source.core.{name}_py")
    pyx = ROOT / "ext" / "stellar_live_source" / "core" / f"{name}_c.pyx"
    in_compiled = _public(compiled, _pyx_imported(pyx.read_text()))
    in_pure = _public(pure, _imported(ast.parse((core_dir / f"{name}_py.py").read_text()).body))
    in_stub = _declared((core_dir / f"{name}_c.pyi").read_text())
    assert (in_stub - in_compiled, in_compiled - in_stub) == (set(), set()), "stub vs compiled"
    assert (in_stub - in_pure, in_pure - in_stub) == (set(), set()), "stub vs pure twin"


def test_the_twin_fixture_runs_compiled_modules_or_skips_saying_why(monkeypatch):
    """conftest's ``twin``: its compiled param refuses a module that is not an
    extension (a stray _frame_c.py would pass for one) and is skipped, with the
    reason, where the compiled core is not in use."""
    from stellar_live_source.core import _backend

    pure = load_twin("py")
    assert [getattr(pure, m).__name__ for m in CORE_MODULES] == [
        f"stellar_live_source.core._{m}_py" for m in CORE_MODULES
    ]
    if compiled_expected():
        assert (load_twin("c").frame.__file__ or "").endswith((".so", ".pyd"))
        impostor = ModuleType("stellar_live_source.core._frame_c")
        impostor.__file__ = str(ROOT / "pysrc" / "stellar_live_source" / "core" / "_frame_c.py")
        monkeypatch.setitem(sys.modules, impostor.__name__, impostor)
        with pytest.raises(AssertionError, match="_frame_c is not compiled"):
            load_twin("c")
    monkeypatch.setattr(_backend, "COMPILED_EXPECTED", False)
    monkeypatch.setattr(_backend, "NO_EXTENSIONS", True)
    with pytest.raises(pytest.skip.Exception, match="STELLAR_LIVE_SOURCE_NO_EXTENSIONS is set"):
        load_twin("c")
