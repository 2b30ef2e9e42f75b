"""Benchmarks report ratios against baselines measured in the same run; they
never assert a time. ``make bench`` runs them; results also land in
``.benchmarks/`` as pytest-benchmark JSON when ``--benchmark-autosave`` is given.

The test data, the server start and the lakes of real ledgers are the tests'
own (``tests.conftest``, ``tests.service_support``, ``tests.service_storage_support``)."""

from __future__ import annotations

from stellar_live_source.ops.runtime import tune_malloc

# Measured as `serve` runs: with glibc's malloc tuned (ops/runtime.py).
tune_malloc()

#: group -> name -> seconds per call (min of rounds), filled by the benchmarks
RESULTS: dict[str, dict[str, float]] = {}
#: lines printed above the ratios (what was compared with what)
NOTES: list[str] = []


def pytest_addoption(parser):
    group = parser.getgroup("stellar-live-source benchmarks")
    group.addoption(
        "--rounds",
        type=int,
        default=4,
        help="rounds of the service speed benchmark (ceiling, service, warm, [baseline] each round); default 4, "
        "an A/B wants at least 6",
    )
    group.addoption(
        "--baseline-python",
        metavar="PATH",
        help="an interpreter with another build of the service installed (an older commit): each round of the "
        "speed benchmark also streams from its cold `serve`, for same-run after/before ratios",
    )


def record(benchmark, group: str, name: str) -> None:
    RESULTS.setdefault(group, {})[name] = benchmark.stats.stats.min


def pytest_terminal_summary(terminalreporter):
    from .ratios import report

    lines = report(RESULTS)
    if lines:
        terminalreporter.section("ratios against same-run baselines")
        for line in [*NOTES, *lines]:
            terminalreporter.write_line(line)
