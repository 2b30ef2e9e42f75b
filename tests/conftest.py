"""Shared fixtures: the real test data beside the project, and both twins of
every core module so one test body runs the compiled and the pure path."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from stellar_live_source.core import _backend

# moto's S3 server and the GCS emulator, as session fixtures for every test module.
pytest_plugins = ["tests.support.endpoints"]

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"
LEDGERS = TESTDATA / "ledgers"

needs_testdata = pytest.mark.skipif(
    not (LEDGERS / "INDEX.jsonl").exists(),
    reason=f"the shared ledger test data is not at {TESTDATA} (clone the project beside shared/)",
)

CORE_MODULES = ("zstd", "walk", "index", "keys", "frame")


@dataclass(frozen=True)
class Twin:
    """The core's modules of one implementation: ``c`` (compiled) or ``py`` (pure)."""

    name: str
    zstd: ModuleType
    walk: ModuleType
    index: ModuleType
    keys: ModuleType
    frame: ModuleType


def load_twin(name: str) -> Twin:
    """One twin's modules, imported directly. The compiled ones must be compiled
    (a stray .py of the same name would pass for them); where the compiled core
    is not in use, asking for it skips the test."""
    if name == "c" and not _backend.COMPILED_EXPECTED:
        why = f"{_backend.ENV_NO_EXTENSIONS} is set" if _backend.NO_EXTENSIONS else "not CPython"
        pytest.skip(f"the compiled core is not in use ({why})")
    modules = {m: importlib.import_module(f"stellar_live_source.core._{m}_{name}") for m in CORE_MODULES}
    if name == "c":
        for module in modules.values():
            assert (module.__file__ or "").endswith((".so", ".pyd")), (
                f"{module.__name__} is not compiled: {module.__file__}"
            )
    return Twin(name, **modules)


@pytest.fixture(scope="session", params=["c", "py"])
def twin(request) -> Twin:
    """Runs a test body on each twin, as multidict's tests run on both of its."""
    return load_twin(request.param)


@pytest.fixture(scope="session")
def twins() -> tuple[Twin, Twin]:
    """The compiled and the pure twin, for a test that compares them in one body."""
    return load_twin("c"), load_twin("py")


@pytest.fixture(scope="session")
def index_rows() -> list[dict]:
    if not (LEDGERS / "INDEX.jsonl").exists():
        pytest.skip(f"the shared ledger test data is not at {TESTDATA}")
    return [json.loads(line) for line in (LEDGERS / "INDEX.jsonl").read_text().splitlines() if line.strip()]


def compiled_expected() -> bool:
    return os.environ.get("STELLAR_LIVE_SOURCE_NO_EXTENSIONS", "") in ("", "0")


def outcome(fn, *args):
    """A comparable result of one twin: the value, or the exception's type and message."""
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001 - comparing whatever each twin raises
        return type(exc), str(exc)


def batch(ledgers: list[bytes], start: int, end: int | None = None) -> bytes:
    """A LedgerCloseMetaBatch of ``ledgers``, its bounds from ``start`` unless ``end`` says otherwise."""
    from stellar_live_source.tools.pack import batch_xdr

    return batch_xdr(start, start + len(ledgers) - 1 if end is None else end, ledgers)
