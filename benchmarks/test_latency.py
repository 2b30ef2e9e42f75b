"""Latency benchmarks: the catch-up speed when every storage request takes
50 ms, and how soon a new ledger reaches a client waiting at the tip.

Storage latency (issue 12, goal 4's latency part): a lake of 4,000 small real
ledgers, one per object as real lakes hold them, served by the fake object
server (``tests/support/objectserver.py``) in a process of its own, adding
50 ms to every answer and refusing unsigned requests. moto could not be the
peer: it serves a few hundred objects per second, far below what 120 reads at
once at 50 ms ask (2,400 a second).

The baseline, measured in the same run and alternating with the service, is a
bare loop of the client the service reads with (obstore's S3 store; the loop
is ``benchmarks/test_storage_clients.py``'s ``obstore`` candidate, in its own
process) keeping as many reads in flight as one stream of the service can:
the read-ahead slots, ``STORAGE_MAX_INFLIGHT`` (default 128) less the 8 kept
for needed reads (``lake/slots.py``), 120. (A backfilling stream's needed read
is almost always one of its read-ahead reads already in flight, so 120, not
128, is what one stream holds; 128 would ask of the service what no single
stream can do.) It reads the same 4,000 objects. The service, every setting at
its default, streams the same range to ``count_client.py``; the goal is its
objects per second at 0.8 or more of the bare loop's (best round of each;
the median of the rounds' own pairs is printed beside it).

Beside it, to show the same paths work against a real S3 API, a smaller run
against moto through a FaultProxy adding 50 ms: 384 objects, the same two
readers, figures printed without a goal (moto, not the readers, sets the pace).

Tip latency: a folder lake that a writer extends one object at a time at
random moments (an atomic rename into place) while a client waits at the tip;
each ledger's arrival minus its landing, against the poll interval + 100 ms.
Only correctness is asserted, never a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from stellar_live_source.lake.slots import RESERVED
from stellar_live_source.ops.config import defaults
from tests.conftest import needs_testdata
from tests.service_storage_support import run_ledgers, s3_env
from tests.service_support import env_for, server_process
from tests.support.endpoints import moto_server, upload_folder_to_s3  # noqa: F401 - moto_server: a fixture, used by name
from tests.support.faultproxy import FaultProxy

from .conftest import RESULTS
from .objects import RUNS, cycled_lake
from .test_service_speed import cpu_seconds, run_client, storage_fetches
from .test_storage_clients import ObjectServerProcess, client_env, quiet_moto, start_object_server
from .test_storage_clients import run_client as run_storage_client

pytestmark = needs_testdata
DELAY = 0.05  # seconds added to every request
#: the bare loop's reads in flight: the service's read-ahead slots at the default STORAGE_MAX_INFLIGHT
BARE_INFLIGHT = defaults().storage.max_inflight - RESERVED
ROUNDS = 3
BUCKET = "latency-lake"
START = 64 * 100
OBJECTS = 4_000  # one ledger each: about 2 s at the goal's pace
MOTO_OBJECTS = 384  # the 320 testnet ledgers cycled, one per object; moto's pace, about 1 s


@dataclass(frozen=True)
class Spec:  # what run_client needs of a lake: its range
    first: int
    last: int


@dataclass(frozen=True)
class Lake:
    folder: Path
    keys: list[str]
    range: Spec


def make_lake(folder: Path, count: int) -> Lake:
    # One partition, as the public lake's manifest has it (64,000 objects per partition).
    keys = cycled_lake(folder, "small", START, count, per_file=1, per_partition=64_000)
    return Lake(folder, keys, Spec(START, START + count - 1))


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return make_lake(tmp_path_factory.mktemp("latency-lake"), OBJECTS)


@pytest.fixture(scope="module")
def moto_lake(moto_server, tmp_path_factory):  # noqa: F811 - the fixture imported above, by its name
    quiet_moto()
    lake = make_lake(tmp_path_factory.mktemp("latency-moto-lake"), MOTO_OBJECTS)
    upload_folder_to_s3(moto_server, BUCKET, lake.folder)  # straight to moto: no delay
    host, port = moto_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.configure(delay=DELAY)
        yield lake, proxy


def run_bare(endpoint: str, lake: Lake) -> dict:
    """The bare obstore loop in its own process: every object of the lake, BARE_INFLIGHT at once."""
    job = {"candidate": "obstore", "endpoint": endpoint, "bucket": BUCKET, "keys": lake.keys}
    return run_storage_client(job | {"inflight": BARE_INFLIGHT, "warmup": 0}, client_env("obstore"))


def measure(benchmark, kind: str, endpoint: str, lake: Lake, server_pid: int) -> dict[str, float]:
    """One reader's pass over the lake: objects/s, and the CPU of the reader and of the storage peer's process."""
    peer = cpu_seconds(server_pid)
    if kind == "bare":
        got = benchmark.pedantic(run_bare, (endpoint, lake), rounds=1, iterations=1)
        assert got["objects"] == len(lake.keys)
        figures = {"reader_cpu_ms": got["cpu_s"] / len(lake.keys) * 1e3}
    else:
        # Every setting at its default (the tests' environment polls every 100 ms: not here).
        env = s3_env(endpoint, BUCKET, LOG_LEVEL="warning", POLL_INTERVAL=f"{defaults().storage.poll_interval:g}s")
        with server_process(env) as served:
            fetched, cpu = storage_fetches(served), cpu_seconds(served.proc.pid)
            peer = cpu_seconds(server_pid)
            got = benchmark.pedantic(run_client, (served.addr, lake.range), rounds=1, iterations=1)
            cpu = cpu_seconds(served.proc.pid) - cpu
            fetches = storage_fetches(served) - fetched
        assert got["ledgers"] == len(lake.keys)  # one ledger per object: ledgers/s = objects/s
        # Every object of the range once, but the newest, which the service holds from start-up.
        assert fetches == len(lake.keys) - 1, fetches
        figures = {"reader_cpu_ms": cpu / len(lake.keys) * 1e3, "fetches": fetches}
        if served.proc.returncode:  # not the benchmark's business, but worth seeing
            print(f"\nthe service exited with {served.proc.returncode} after SIGTERM")
        figures["exit_code"] = served.proc.returncode
    figures["objects/s"] = len(lake.keys) / got["seconds"]
    figures["seconds"] = got["seconds"]
    figures["peer_cpu_ms"] = (cpu_seconds(server_pid) - peer) / len(lake.keys) * 1e3
    benchmark.extra_info.update(figures)
    return figures


def keep(group: dict[str, float], kind: str, figures: dict[str, float]) -> None:
    """Best round of each reader: its shortest pass and highest rate."""
    group[f"{kind}_s"] = min(group.get(f"{kind}_s", figures["seconds"]), figures["seconds"])
    group[f"{kind}_objects/s"] = max(group.get(f"{kind}_objects/s", figures["objects/s"]), figures["objects/s"])


SECONDS: dict[tuple[str, int], float] = {}  # (reader, round) -> seconds of its pass
CASES = [(kind, r) for r in range(ROUNDS) for kind in (("bare", "service") if r % 2 == 0 else ("service", "bare"))]


@pytest.mark.parametrize("kind,round_", CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_storage_latency(benchmark, lake, kind, round_):
    benchmark.group = "storage-latency"
    server: ObjectServerProcess = start_object_server(lake.folder, BUCKET, "--delay", str(DELAY), "--auth", "s3")
    try:
        figures = measure(benchmark, kind, server.url, lake, server.proc.pid)
    finally:
        stats = server.stop()
    # Nothing refused or failed: 206s are ranged reads, 404s look-ups past the newest object.
    assert stats.get("refused", 0) == 0, stats
    answered = sum(stats.get(f"status_{code}", 0) for code in (200, 206, 404))
    assert answered == stats["requests"], json.dumps(stats)
    group = RESULTS.setdefault("storage-latency", {"bare_inflight": BARE_INFLIGHT})
    keep(group, kind, figures)
    # Each round's own pair too: load from outside drifts less within a round than across the run.
    SECONDS[kind, round_] = figures["seconds"]
    paired = [
        SECONDS["bare", r] / SECONDS["service", r]
        for r in range(ROUNDS)
        if ("bare", r) in SECONDS and ("service", r) in SECONDS
    ]
    if paired:
        group["paired_ratio"] = statistics.median(paired)
    cpu = figures["reader_cpu_ms"]
    group[f"{kind}_cpu_ms"] = min(group.get(f"{kind}_cpu_ms", cpu), cpu)
    if kind == "service":  # what the bare loop never pays: start-up's listings and look-ups, before the stream
        group["service_gets"] = figures["fetches"]
        group["service_other_requests"] = stats["requests"] - figures["fetches"]
        group["service_lists"] = stats.get("list", 0)
    print(
        f"\n{kind} round {round_}: {figures['objects/s']:,.0f} objects/s ({figures['seconds']:.2f} s);"
        f" CPU per object: reader {figures['reader_cpu_ms']:.3f} ms, object server {figures['peer_cpu_ms']:.3f} ms;"
        f" object server: {stats['requests']:,} requests ({stats.get('list', 0)} lists, at most"
        f" {stats.get('max_inflight', 0)} at once)"
    )


MOTO_CASES = ["bare", "service"]


@pytest.mark.parametrize("kind", MOTO_CASES)
def test_storage_latency_moto(benchmark, moto_lake, kind):
    lake, proxy = moto_lake
    benchmark.group = "storage-latency-moto"
    seen = len(proxy.log)
    figures = measure(benchmark, kind, proxy.url, lake, os.getpid())  # moto and the proxy: this process
    assert all(outcome == "forwarded" for _, _, outcome in list(proxy.log)[seen:])
    keep(RESULTS.setdefault("storage-latency-moto", {}), kind, figures)
    print(
        f"\n{kind} against moto + 50 ms: {figures['objects/s']:,.0f} objects/s ({figures['seconds']:.2f} s,"
        f" {len(lake.keys)} objects); CPU per object: reader {figures['reader_cpu_ms']:.3f} ms,"
        f" moto and the proxy {figures['peer_cpu_ms']:.3f} ms"
    )


# -- tip latency ---------------------------------------------------------------------------------------------

TIP_START, TIP_HISTORY, TIP_NEW = 64 * 100, 16, 10  # 1 ledger per object
POLL = 1.0
GOAL = POLL + 0.1


def stage(folder: Path, ledgers: list[bytes]) -> list[tuple[Path, str]]:
    """Each ledger as its own finished object under ``folder``: (file, key in the lake)."""
    from stellar_live_source.tools.pack import sequence_of, write_lake

    out = []
    for xdr in ledgers:
        sub = folder / str(sequence_of(xdr))
        (key,) = write_lake(sub, [xdr], ledgers_per_file=1)
        out.append((sub / key, key))
    return out


async def follow_tip(addr: str, lake: Path, staged: list[tuple[Path, str]], rng: random.Random):
    """(landed, arrived) wall-clock times per new ledger, in order."""
    from stellar_live_source.client import Client

    first_new, last = TIP_START + TIP_HISTORY, TIP_START + TIP_HISTORY + TIP_NEW - 1
    landed: list[float] = []

    async def write() -> None:
        for path, key in staged:
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            dest = lake / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)  # atomic: the watcher never sees half an object
            landed.append(time.time())

    arrived: list[float] = []
    async with Client(addr) as client:
        # From the lake's last ledger: once it arrives, the stream is open and waiting at the tip.
        stream = client.stream(first_new - 1, last, timeout=60)
        seq, _ = await anext(stream)
        assert seq == first_new - 1
        writer = asyncio.create_task(write())
        async for seq, _ in stream:
            arrived.append(time.time())
            assert seq == first_new + len(arrived) - 1
        await writer
    return landed, arrived


def test_tip_latency(benchmark, tmp_path):
    from stellar_live_source.tools.pack import renumber, write_lake

    ledgers = list(renumber(run_ledgers(RUNS["small"]), TIP_START, TIP_HISTORY + TIP_NEW))
    lake = tmp_path / "lake"
    write_lake(lake, ledgers[:TIP_HISTORY], ledgers_per_file=1)
    staged = stage(tmp_path / "staging", ledgers[TIP_HISTORY:])  # same filesystem: renames are atomic
    env = env_for(lake, POLL_INTERVAL=f"{POLL:g}s", LOG_LEVEL="warning")
    with server_process(env) as served:
        landed, arrived = benchmark.pedantic(
            lambda: asyncio.run(asyncio.wait_for(follow_tip(served.addr, lake, staged, random.Random(7)), 60)),
            rounds=1,
            iterations=1,
        )
    assert len(arrived) == len(landed) == TIP_NEW
    lat = sorted(a - b for a, b in zip(arrived, landed, strict=True))
    figures = {
        "max_ms": lat[-1] * 1e3,
        "p50_ms": statistics.median(lat) * 1e3,
        "p95_ms": statistics.quantiles(lat, n=20, method="inclusive")[18] * 1e3,
        "min_ms": lat[0] * 1e3,
        "goal_ms": GOAL * 1e3,
        "objects": TIP_NEW,
    }
    RESULTS["tip-latency"] = figures
    benchmark.group = "tip-latency"
    benchmark.extra_info.update(figures)
    verdict = "goal met" if lat[-1] <= GOAL else "NOT met"
    print(
        f"\ntip latency over {TIP_NEW} objects (1 ledger each), poll {POLL:g} s: max {figures['max_ms']:.0f} ms, "
        f"p50 {figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms; max <= {GOAL * 1e3:.0f} ms: {verdict}"
    )
