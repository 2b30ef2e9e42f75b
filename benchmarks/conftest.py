"""Benchmarks report ratios against baselines measured in the same run; they
never assert a time. ``make bench`` runs them; results also land in
``.benchmarks/`` as pytest-benchmark JSON when ``--benchmark-autosave`` is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from stellar_live_source.ops.runtime import tune_malloc

# Measured as `serve` runs: with glibc's malloc tuned (ops/runtime.py).
tune_malloc()

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"

#: group -> name -> seconds per call (min of rounds), filled by the benchmarks
RESULTS: dict[str, dict[str, float]] = {}


def record(benchmark, group: str, name: str) -> None:
    RESULTS.setdefault(group, {})[name] = benchmark.stats.stats.min


def pytest_terminal_summary(terminalreporter):
    from .ratios import report

    lines = report(RESULTS)
    if lines:
        terminalreporter.section("ratios against same-run baselines")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not (TESTDATA / "ledgers").exists():
        pytest.skip(f"no shared test data at {TESTDATA}")
    return TESTDATA
