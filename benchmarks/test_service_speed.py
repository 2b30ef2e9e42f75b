"""End-to-end service speed, as ratios to a transport ceiling measured in the
same run: ``ceiling_server.py``, a bare grpc.aio server streaming pre-built
RawLedger frames of the same ledgers from memory. Both are read by the same
fixed client, ``count_client.py``, in its own process (its own core).

The ceiling varies run to run, so the two alternate, round by round, and the
best of each is compared (and, less sensitive to outside load, each round's
own pair). The service is cold every round: a fresh process,
its cache smaller than the range, every object read from storage and decoded
once (asserted from its fetch counter, taken once start-up's reads are done:
the newest object, evicted before the stream reaches it, and the oldest, read
past the cache), every check on. Speeds are never asserted, only correctness.

Beside it, for the split and not against a goal, the service *warm*: a
cache that holds the whole range, filled by one unmeasured pass, so the
measured pass reads and decodes nothing (asserted: no storage reads). What
separates warm from the ceiling is the serving path; what separates cold from
warm is reading and decoding.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service_support import env_for, free_port, server_process

from .conftest import RESULTS
from .objects import cycled_lake

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


@dataclass(frozen=True)
class Spec:
    kind: str  # which real ledgers: "large" (v2, ~1.18 MB) or "small" (testnet, ~4.6 KB)
    start: int
    count: int
    per_file: int
    cache_bytes: int  # below the range's decompressed size: the run is cold


# Long enough that the service takes a second or more; objects as the exporter cuts them.
SPECS = {
    "large": Spec("large", 8 * 128, 400, 8, 64 * MiB),  # 50 objects, ~470 MB
    "small": Spec("small", 64 * 100, 20_000, 64, 32 * MiB),  # 313 objects, ~92 MB
}
# Fan-out: 32 connections over one range; the cache holds about half of it, so reading
# each object once takes the streams sharing fetches and keeping together.
FANOUT = Spec("small", 64 * 100, 3_200, 64, 8 * MiB)  # 50 objects, ~15 MB
FANOUT_PROCS, FANOUT_STREAMS = 4, 8  # 32 streams: several per client process, so the clients keep up
ROUNDS = 4


@dataclass(frozen=True)
class Lake:
    spec: Spec
    path: Path
    objects: int

    @property
    def first(self) -> int:
        return self.spec.start

    @property
    def last(self) -> int:
        return self.spec.start + self.spec.count - 1


@pytest.fixture(scope="session")
def lakes(tmp_path_factory, testdata) -> dict[str, Lake]:
    root = tmp_path_factory.mktemp("lakes")
    out = {}
    for name, s in {**SPECS, "fanout": FANOUT}.items():
        keys = cycled_lake(root / name, testdata, s.kind, s.start, s.count, s.per_file)
        out[name] = Lake(s, root / name, len(keys))
    return out


@pytest.fixture(scope="session")
def ceilings(lakes):
    """One ceiling server per lake, started when first needed: it serves from
    memory, so staying up between rounds changes nothing."""
    running: dict[str, tuple[str, subprocess.Popen]] = {}

    def get(name: str) -> tuple[str, subprocess.Popen]:
        if name not in running:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "ceiling_server.py"), str(port), str(lakes[name].path)],
                stdout=subprocess.PIPE,
                text=True,
            )
            if proc.stdout.readline().strip() != "READY":
                proc.kill()
                raise RuntimeError(f"the ceiling server did not start ({proc.wait()})")
            running[name] = (f"127.0.0.1:{port}", proc)
        return running[name]

    yield get
    for _, proc in running.values():
        proc.terminate()
        proc.wait(10)


def service_env(lake: Lake, **extra) -> dict[str, str]:
    return env_for(lake.path, **{"CACHE_BYTES": lake.spec.cache_bytes, "LOG_LEVEL": "warning", **extra})


def client_cmd(addr: str, lake: Lake, *args: str) -> list[str]:
    return [sys.executable, str(HERE / "count_client.py"), addr, str(lake.first), str(lake.last), *args]


def parse(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def run_client(addr: str, lake: Lake) -> dict:
    done = subprocess.run(client_cmd(addr, lake), capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"the client failed: {done.stderr}")
    return parse(done.stdout)


def cpu_seconds(pid: int) -> float:
    """user + system CPU of the process, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) * 1024


def storage_fetches(env: dict[str, str]) -> int:
    # server_process yields once /health reports the server settled; metrics were up before that.
    with urllib.request.urlopen(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(float(re.search(r"^stellar_live_source_storage_fetches (\S+)$", text, re.M).group(1)))


def keep(group: dict[str, float], name: str, value: float, better=max) -> None:
    group[name] = better(group.get(name, value), value)


BYTES: dict[str, int] = {}  # bytes received per lake, by whichever server ran first
SECONDS: dict[tuple[str, str, int], float] = {}  # (lake, server, round) -> client seconds

KINDS = ("ceiling", "service", "warm")
CASES = [(name, kind, r) for name in SPECS for r in range(ROUNDS) for kind in KINDS]
WARM_CACHE = "2GiB"  # holds either range whole


@pytest.mark.parametrize("name,kind,round_", CASES, ids=[f"{n}-{k}-{r}" for n, k, r in CASES])
def test_speed(benchmark, lakes, ceilings, name, kind, round_):
    lake = lakes[name]
    env = None if kind == "ceiling" else service_env(lake, **({"CACHE_BYTES": WARM_CACHE} if kind == "warm" else {}))
    with server_process(env) if env else contextlib.nullcontext(ceilings(name)) as (addr, proc):
        if kind == "warm":
            run_client(addr, lake)  # fills the cache: not measured
        fetched = storage_fetches(env) if env else 0
        cpu = cpu_seconds(proc.pid)
        got = benchmark.pedantic(run_client, (addr, lake), rounds=1, iterations=1)
        cpu = cpu_seconds(proc.pid) - cpu
        if env:
            # Cold: each object of the range read from storage exactly once during the run; warm: none.
            assert storage_fetches(env) - fetched == (lake.objects if kind == "service" else 0)
    assert got["ledgers"] == lake.spec.count
    assert got["bytes"] == BYTES.setdefault(name, got["bytes"])  # the ceiling and the service send the same bytes
    assert got["bytes"] > lake.spec.cache_bytes

    secs, gb = got["seconds"], got["bytes"] / 1e9
    figures = {"MB/s": got["bytes"] / secs / 1e6, "ledgers/s": got["ledgers"] / secs, "cpu_s/GB": cpu / gb}
    benchmark.group = f"service-{name}"
    benchmark.extra_info.update(got, **figures)
    group = RESULTS.setdefault(f"service-{name}", {})
    keep(group, f"{kind}_s", secs, min)
    keep(group, f"{kind}_MB/s", figures["MB/s"])
    keep(group, f"{kind}_ledgers/s", figures["ledgers/s"])
    keep(group, f"{kind}_cpu_s/GB", figures["cpu_s/GB"], min)
    # Each round's own pair too: load from outside drifts less within a round than across the run.
    SECONDS[name, kind, round_] = secs
    paired = [
        SECONDS[name, "ceiling", r] / SECONDS[name, "service", r]
        for r in range(ROUNDS)
        if (name, "ceiling", r) in SECONDS and (name, "service", r) in SECONDS
    ]
    if paired:
        group["paired_ratio"] = statistics.median(paired)


def test_fanout(benchmark, lakes):
    lake = lakes["fanout"]
    env = service_env(lake, MAX_CONCURRENT_STREAMS=FANOUT_PROCS * FANOUT_STREAMS)
    with server_process(env) as (addr, proc):
        fetched, cpu = storage_fetches(env), cpu_seconds(proc.pid)

        def fan_out() -> list[dict]:
            at = time.time() + 2.0  # every process connected before any stream starts
            args = ("--streams", str(FANOUT_STREAMS), "--at", str(at))
            procs = [
                subprocess.Popen(client_cmd(addr, lake, *args), stdout=subprocess.PIPE, text=True)
                for _ in range(FANOUT_PROCS)
            ]
            outs = [p.communicate(timeout=300)[0] for p in procs]
            assert all(p.returncode == 0 for p in procs), "a client failed"
            return [parse(out) for out in outs]

        got = benchmark.pedantic(fan_out, rounds=1, iterations=1)
        cpu = cpu_seconds(proc.pid) - cpu
        fetches = storage_fetches(env) - fetched
        rss = peak_rss(proc.pid)
    streams = FANOUT_PROCS * FANOUT_STREAMS
    assert all(g["min_stream_ledgers"] == lake.spec.count for g in got)
    total = sum(g["bytes"] for g in got)
    group = RESULTS.setdefault("service-fanout", {})
    group.update(
        {
            "streams": streams,
            "objects": lake.objects,
            "fetches": fetches,
            "ledgers/s": streams * lake.spec.count / max(g["seconds"] for g in got),
            "cpu_s/GB": cpu / (total / 1e9),
            "peak_rss_MiB": rss / MiB,
            "limit_MiB": (lake.spec.cache_bytes + 256 * MiB) / MiB,
        }
    )
    benchmark.group = "service-fanout"
    benchmark.extra_info.update(group)
    assert fetches == lake.objects  # every object read from storage once, whatever the number of clients
