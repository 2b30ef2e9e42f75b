"""Latency benchmarks: the catch-up speed when every storage request takes
50 ms, and how soon a new ledger reaches a client waiting at the tip.

Storage latency: a lake of small real ledgers, one per object, in moto behind
a FaultProxy adding 50 ms to every request. The baseline, measured in the same
run and alternating with the service, is a bare loop of 16 boto3 threads
fetching the same objects through the same proxy. Both clients run in their own
process (the baseline as ``python -m benchmarks.test_latency``), so moto and the
proxy, in this process, share its GIL the same way for both.

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
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_testdata
from tests.service_storage_support import run_ledgers, s3_env
from tests.service_support import env_for, server_process
from tests.support.endpoints import moto_server, upload_folder_to_s3  # noqa: F401 - moto_server: a fixture, used by name
from tests.support.faultproxy import FaultProxy

from .conftest import RESULTS
from .objects import RUNS, cycled_lake
from .test_service_speed import parse, run_client

pytestmark = needs_testdata
DELAY = 0.05  # seconds the proxy adds to every request
WORKERS = 16
ROUNDS = 2
BUCKET = "latency-lake"


@dataclass(frozen=True)
class Spec:  # what run_client needs of a lake: its range
    first: int
    last: int


@dataclass(frozen=True)
class S3Lake:
    proxy: FaultProxy
    keys: list[str]
    range: Spec


@pytest.fixture(scope="module")
def s3_lake(moto_server, tmp_path_factory):  # noqa: F811 - the fixture imported above, by its name
    # The 320 testnet ledgers cycled to 384, one per object: 384 GETs of ~5 KB.
    start, count = 64 * 100, 384
    folder = tmp_path_factory.mktemp("latency-lake")
    keys = cycled_lake(folder, "small", start, count, per_file=1)
    upload_folder_to_s3(moto_server, BUCKET, folder)  # straight to moto: no delay
    host, port = moto_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.configure(delay=DELAY)
        yield S3Lake(proxy, keys, Spec(start, start + count - 1))


def bare_fetch(endpoint: str, bucket: str, keys: list[str]) -> dict:
    """The baseline: one boto3 client, 16 threads, each object read whole."""
    import boto3
    import botocore.config

    config = botocore.config.Config(max_pool_connections=WORKERS, s3={"addressing_style": "path"})
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)

    def get(key: str) -> int:
        with s3.get_object(Bucket=bucket, Key=key)["Body"] as body:
            return len(body.read())

    with ThreadPoolExecutor(WORKERS) as pool:
        t0 = time.perf_counter()
        size = sum(pool.map(get, keys))
        seconds = time.perf_counter() - t0
    return {"objects": len(keys), "bytes": size, "seconds": seconds}


def run_bare(lake: S3Lake) -> dict:
    job = json.dumps({"endpoint": lake.proxy.url, "bucket": BUCKET, "keys": lake.keys})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.test_latency"],
        input=job,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(f"the bare loop failed: {done.stderr}")
    return parse(done.stdout)


def is_list(path: str) -> bool:
    return "list-type=" in path


CASES = [(kind, r) for r in range(ROUNDS) for kind in ("bare", "service")]


@pytest.mark.parametrize("kind,round_", CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_storage_latency(benchmark, s3_lake, kind, round_):
    lake = s3_lake
    benchmark.group = "storage-latency"
    seen = len(lake.proxy.log)
    if kind == "bare":
        got = benchmark.pedantic(run_bare, (lake,), rounds=1, iterations=1)
        assert got["objects"] == len(lake.keys)
    else:
        env = s3_env(lake.proxy.url, BUCKET, NUM_WORKERS=WORKERS, BUFFER_SIZE=2 * WORKERS, LOG_LEVEL="warning")
        with server_process(env) as served:
            seen = len(lake.proxy.log)
            got = benchmark.pedantic(run_client, (served.addr, lake.range), rounds=1, iterations=1)
        assert got["ledgers"] == len(lake.keys)  # one ledger per object: ledgers/s = objects/s
    requests = list(lake.proxy.log)[seen:]
    assert all(outcome == "forwarded" for _, _, outcome in requests)
    rate = len(lake.keys) / got["seconds"]
    benchmark.extra_info.update(got, objects_per_s=rate)
    group = RESULTS.setdefault("storage-latency", {})
    group[f"{kind}_s"] = min(group.get(f"{kind}_s", got["seconds"]), got["seconds"])
    group[f"{kind}_objects/s"] = max(group.get(f"{kind}_objects/s", rate), rate)
    if kind == "service":  # its storage requests during the stream, lists apart: what the bare loop never pays
        group["service_lists"] = sum(is_list(path) for _, path, _ in requests)
        group["service_gets"] = len(requests) - group["service_lists"]
    print(f"\n{kind} round {round_}: {rate:,.0f} objects/s ({got['seconds']:.2f} s, {len(requests)} requests)")


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


if __name__ == "__main__":  # the bare loop's own process: a JSON job on stdin, one JSON line out
    job = json.load(sys.stdin)
    print(json.dumps(bare_fetch(job["endpoint"], job["bucket"], job["keys"])), flush=True)
