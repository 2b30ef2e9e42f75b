"""What observing costs (issue 14): tracing and metrics on versus both off.

On: ``TRACING_ENABLED=true`` exporting over OTLP/gRPC to a real receiver in
this process (a ``TraceService`` that decodes and drops what it is sent: the
export work is real), every call sampled (``parentbased_always_on``, the worst
case; the default samples a tenth of new traces), and ``METRICS_ENABLED=true``.
Off: ``TRACING_ENABLED=false``, ``METRICS_ENABLED=false``.

- ``test_stream_overhead[large|small]``: the cold stream of
  ``test_service_speed`` (folder lake of real ledgers, large v2 objects and
  small testnet ones), read by ``count_client.py``: ledgers/s.
- ``test_backfill_overhead``: the backfill of ``test_backfill`` (one ledger per
  object from the object server, 50 ms added to every request): ledgers/s
  after a warm-up.

Each runs ``--rounds`` rounds (at least 6), on and off alternating which goes
first; the figure is the median of each round's on/off quotient (paired), the
goal 0.95 or more. Reported, never asserted: the machine may be shared.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_testdata
from tests.service_storage_support import s3_env
from tests.service_support import server_process
from tests.test_tracing import Receiver
from tests.test_tracing import receiver as tracing_receiver

from .conftest import NOTES
from .objects import cycled_lake
from .test_backfill import BUCKET, DELAY, START, object_server, stream_with_mark
from .test_service_speed import SPECS, Lake, run_client, service_env

pytestmark = needs_testdata
GOAL = 0.95
BACKFILL_WARM_UP, BACKFILL_TIMED = 1_000, 8_000


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    """The tests' OTLP receiver (a real TraceService): export work is real."""
    with tracing_receiver() as (rec, port):
        yield rec, port


def observed(on: bool, port: int) -> dict[str, str]:
    if not on:
        return {"TRACING_ENABLED": "false", "METRICS_ENABLED": "false"}
    return {
        "TRACING_ENABLED": "true",
        "METRICS_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_SDK_DISABLED": "false",
    }


def paired(rates: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median on/off quotient, median on, median off) of rounds of (on, off) ledgers/s."""
    return (
        statistics.median(on / off for on, off in rates),
        statistics.median(on for on, _ in rates),
        statistics.median(off for _, off in rates),
    )


def report(what: str, rates: list[tuple[float, float]], spans: int) -> None:
    q, on, off = paired(rates)
    verdict = "met" if q >= GOAL else "NOT met"
    NOTES.append(
        f"observability overhead, {what}: on {on:,.0f} / off {off:,.0f} ledgers/s (medians of {len(rates)} rounds); "
        f"paired median on/off {q:.3f} (rounds: {', '.join(f'{a / b:.3f}' for a, b in rates)}); "
        f"{spans} spans received; goal >= {GOAL}: {verdict}"
    )
    print("\n" + NOTES[-1])


@pytest.fixture(scope="module")
def stream_lakes(tmp_path_factory) -> dict[str, Lake]:
    root = tmp_path_factory.mktemp("overhead-lakes")
    out = {}
    for name in ("large", "small"):
        s = SPECS[name]
        keys = cycled_lake(root / name, s.kind, s.start, s.count, s.per_file)
        out[name] = Lake(s, root / name, len(keys))
    return out


def _rounds(request: pytest.FixtureRequest) -> int:
    return max(6, int(request.config.getoption("--rounds")))


@pytest.mark.parametrize("name", ["large", "small"])
def test_stream_overhead(benchmark, name, stream_lakes, receiver, request) -> None:
    rec, port = receiver
    lake = stream_lakes[name]
    rates: list[tuple[float, float]] = []

    def rounds() -> None:
        for r in range(_rounds(request)):
            got: dict[bool, float] = {}
            for on in (True, False) if r % 2 == 0 else (False, True):
                with server_process(service_env(lake, **observed(on, port))) as served:
                    out = run_client(served.addr, lake)
                assert out["ledgers"] == lake.spec.count
                got[on] = out["ledgers"] / out["seconds"]
            rates.append((got[True], got[False]))

    benchmark.group = "observability overhead"
    benchmark.pedantic(rounds, rounds=1, iterations=1)
    report(f"stream ({name} objects, folder lake, cold)", rates, len(rec.spans))


@pytest.fixture(scope="module")
def backfill_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("overhead-backfill")
    cycled_lake(folder, "small", START, BACKFILL_WARM_UP + BACKFILL_TIMED, per_file=1, per_partition=64_000)
    return folder


def test_backfill_overhead(benchmark, backfill_folder, receiver, request) -> None:
    rec, port = receiver
    first, last = START, START + BACKFILL_WARM_UP + BACKFILL_TIMED - 1
    rates: list[tuple[float, float]] = []

    def rounds() -> None:
        with object_server(backfill_folder, "--delay", str(DELAY), "--auth", "s3") as (url, _fake):
            for r in range(_rounds(request)):
                got: dict[bool, float] = {}
                for on in (True, False) if r % 2 == 0 else (False, True):
                    env = s3_env(url, BUCKET, LOG_LEVEL="warning", **observed(on, port))
                    with server_process(env) as served:
                        out = stream_with_mark(served.addr, first, last, BACKFILL_WARM_UP, {})
                    assert out["ledgers"] == BACKFILL_TIMED
                    got[on] = BACKFILL_TIMED / out["seconds"]
                rates.append((got[True], got[False]))

    benchmark.group = "observability overhead"
    benchmark.pedantic(rounds, rounds=1, iterations=1)
    report(
        f"backfill (1 ledger/object, {DELAY * 1e3:.0f} ms per request, {BACKFILL_TIMED:,} ledgers after "
        f"{BACKFILL_WARM_UP:,})",
        rates,
        len(rec.spans),
    )
