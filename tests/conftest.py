"""Shared fixtures: the real test data beside the project, and both twins of
every core module so one test body runs the compiled and the pure path."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

# moto's S3 server and the GCS emulator, as session fixtures for every test module.
pytest_plugins = ["tests.support.endpoints"]

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"
LEDGERS = TESTDATA / "ledgers"

needs_testdata = pytest.mark.skipif(
    not (LEDGERS / "INDEX.jsonl").exists(),
    reason=f"the shared ledger test data is not at {TESTDATA} (clone the project beside shared/)",
)

TWINS = ["c", "py"]


def load_twins(kind: str) -> SimpleNamespace:
    """The walk and index modules of one twin, imported directly."""
    return SimpleNamespace(
        name=kind,
        walk=importlib.import_module(f"stellar_live_source.core._walk_{kind}"),
        index=importlib.import_module(f"stellar_live_source.core._index_{kind}"),
    )


@pytest.fixture(params=TWINS)
def twin(request) -> SimpleNamespace:
    return load_twins(request.param)


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
