"""End-to-end service speed, as ratios to a transport ceiling measured in the
same run: ``ceiling_server.py``, a bare grpc.aio server streaming pre-built
RawLedger frames of the same ledgers from memory. Both are read by the same
fixed client, ``count_client.py``, in its own process (its own core).

The ceiling varies run to run, so the two alternate, round by round, and the
best of each is compared (and, less sensitive to outside load, each round's
own pair). The service is cold every round: a fresh process,
its cache smaller than the range, every object read from storage and decoded
once, every check on. Asserted from its fetch counter, taken once start-up's
reads are done (the newest object and the oldest): during the stream, every
object of the range but the newest, which the service keeps beside its cache
from start-up (the range ends at the lake's newest ledger). Speeds are never
asserted, only correctness.

Beside it, for the split and not against a goal, the service *warm*: a
cache that holds the whole range, filled by one unmeasured pass, so the
measured pass reads and decodes nothing (asserted: no storage reads). What
separates warm from the ceiling is the serving path; what separates cold from
warm is reading and decoding.

With ``--baseline-python PATH`` (an interpreter with another build installed,
an older commit), each round also streams from that build's cold service, the
*baseline*, for a same-run A/B: each build's paired median against the same
rounds' ceiling, and their quotient (after/before). ``--rounds N`` sets the
rounds (default 4; an A/B wants at least 6).

Within a round the ceiling runs first, as it always has (both cold servers
pair with that one measurement), and the warm service last (it is not part of
the A/B). The cold service and the baseline swap places every round, so
neither always runs right after the other: whatever drifts within a round
(the other server's pages still being freed, a neighbour's load building up)
falls on each in half the rounds, not always on the same one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_testdata
from tests.service_support import Served, env_for, http_get, process_env, server_process, wait_settled

from .conftest import NOTES, RESULTS
from .objects import cycled_lake

pytestmark = needs_testdata

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
# Objects of a range that ends at the lake's newest ledger that the service holds before any stream:
# the newest, read at start-up and kept beside the cache (since c28bdf1; the baseline 5a03a08 evicted
# it and read it again in the stream).
HELD = 1


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
def lakes(tmp_path_factory) -> dict[str, Lake]:
    root = tmp_path_factory.mktemp("lakes")
    out = {}
    for name, s in {**SPECS, "fanout": FANOUT}.items():
        keys = cycled_lake(root / name, s.kind, s.start, s.count, s.per_file)
        out[name] = Lake(s, root / name, len(keys))
    return out


@pytest.fixture(scope="session")
def ceilings(lakes):
    """One ceiling server per lake, started when first needed: it serves from
    memory, so staying up between rounds changes nothing. It binds port 0 and
    reports the port it bound (``READY <port>``)."""
    running: dict[str, Served] = {}

    def get(name: str) -> Served:
        if name not in running:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "ceiling_server.py"), str(lakes[name].path)],
                stdout=subprocess.PIPE,
                text=True,
            )
            ready, _, port = proc.stdout.readline().strip().partition(" ")  # type: ignore[union-attr]  # stdout=PIPE
            if ready != "READY" or not port.isdigit():
                proc.kill()
                raise RuntimeError(f"the ceiling server did not start ({proc.wait()})")
            running[name] = Served(f"127.0.0.1:{port}", proc, {"grpc": int(port), "health": None, "metrics": None})
        return running[name]

    yield get
    for served in running.values():
        served.proc.terminate()
        served.proc.wait(10)


def three_free_ports() -> tuple[int, int, int]:
    """Ports for the baseline's three listeners. The baseline build predates
    port 0 (its configuration wants ports >= 1, and it reports none it bound),
    so here, and only here, ports are picked the old way: three sockets bound
    to port 0 together, so the kernel hands out three different ones, closed
    just before the baseline binds them (should another process take one in
    between, the baseline fails to start, loudly)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(3)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        grpc_port, health_port, metrics_port = (sock.getsockname()[1] for sock in socks)
    return grpc_port, health_port, metrics_port


def baseline_env(env: dict[str, str]) -> dict[str, str]:
    """A baseline process's environment: ``process_env``'s, without PYTHONPATH,
    so that it imports its own build and nothing of this checkout."""
    return {k: v for k, v in process_env(env).items() if k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def baseline_python(request) -> str | None:
    """``--baseline-python``, checked to import the service from outside this checkout."""
    python = request.config.getoption("baseline_python")
    if python is None:
        return None
    where = subprocess.run(
        [python, "-c", "import stellar_live_source; print(stellar_live_source.__file__)"],
        env=baseline_env({}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    source = Path(where).resolve().parents[1]
    if source.is_relative_to(ROOT):
        raise pytest.UsageError(f"--baseline-python {python} imports this checkout's stellar_live_source ({where})")
    commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    NOTES.append(f"baseline: {python}, stellar_live_source from {source} (commit {commit.stdout.strip() or '?'})")
    return python


@contextlib.contextmanager
def baseline_process(python: str, env: dict[str, str], timeout: float = 30) -> Iterator[Served]:
    """The baseline's `serve` on the ports ``three_free_ports`` picked, settled
    as ``server_process``'s are (``wait_settled``: /ready 200 with start-up's
    reads done; the baseline answers /ready with its /health report), stopped
    (SIGTERM, then waited for) after."""
    grpc_port, health_port, metrics_port = three_free_ports()
    ports = {"SERVER_PORT": grpc_port, "HEALTH_PORT": health_port, "METRICS_PORT": metrics_port}
    with subprocess.Popen(
        [python, "-m", "stellar_live_source.cli", "serve"],
        env=baseline_env({**env, **{k: str(v) for k, v in ports.items()}}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        served = Served(
            f"127.0.0.1:{grpc_port}", proc, {"grpc": grpc_port, "health": health_port, "metrics": metrics_port}
        )
        try:
            wait_settled(served, timeout)
            yield served
        finally:
            proc.terminate()  # Popen's exit waits for it: it stops within GRACEFUL_SHUTDOWN_TIMEOUT (2 s)


def service_env(lake: Lake, **extra) -> dict[str, str]:
    return env_for(lake.path, **{"CACHE_BYTES": lake.spec.cache_bytes, "LOG_LEVEL": "warning", **extra})


def client_cmd(addr: str, lake: Lake, *args: str) -> list[str]:
    return [sys.executable, str(HERE / "count_client.py"), addr, str(lake.first), str(lake.last), *args]


def parse(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def run_client(addr: str, lake: Lake, *args: str) -> dict:
    done = subprocess.run(client_cmd(addr, lake, *args), capture_output=True, text=True, timeout=300)
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
    return int(m.group(1)) * 1024  # type: ignore[union-attr]  # Linux's status always has VmHWM


def storage_fetches(served: Served, outcome: str = "") -> int:
    """Storage gets so far (``outcome``: only those that ended so, e.g. ``ok``)."""
    # The servers are yielded settled; metrics were up before that.
    status, body = http_get(served.url("/metrics"))
    assert status == 200, (status, body)
    # Every storage get, retries included, whatever its outcome: summed over backends and outcomes.
    text = body.decode()
    pattern = r'^stellar_live_source_storage_requests_total\{[^}]*operation="get"[^}]*\} (\S+)$'
    if outcome:
        pattern = pattern.replace('operation="get"', f'operation="get"[^}}]*outcome="{outcome}"')
    gets = re.findall(pattern, text, re.M)
    if not gets:  # a baseline from before storage_requests_total: its storage_fetches gauge
        gets = re.findall(r"^stellar_live_source_storage_fetches (\S+)$", text, re.M)
    return int(sum(float(v) for v in gets))


def keep(group: dict[str, float], name: str, value: float, better=max) -> None:
    group[name] = better(group.get(name, value), value)


BYTES: dict[str, int] = {}  # bytes received per lake, by whichever server ran first
SECONDS: dict[tuple[str, str, int], float] = {}  # (lake, server, round) -> client seconds

WARM_CACHE = "2GiB"  # holds either range whole


def round_kinds(round_: int, baseline: bool) -> list[str]:
    """The servers of one round, in order (see the module's docstring)."""
    cold = ["service", "baseline"] if round_ % 2 == 0 else ["baseline", "service"]
    return ["ceiling", *(cold if baseline else ["service"]), "warm"]


V1_ROUNDS = 6  # at least: the v1/raw goal is judged over paired medians of 6 rounds or more


def v1_round_kinds(round_: int) -> list[str]:
    """The two services' cold streams of one round, alternating which goes first."""
    return ["raw", "v1"] if round_ % 2 == 0 else ["v1", "raw"]


def pytest_generate_tests(metafunc):
    if metafunc.definition.originalname == "test_v1_speed":
        rounds = max(V1_ROUNDS, metafunc.config.getoption("rounds"))
        cases = [(name, kind, r) for name in SPECS for r in range(rounds) for kind in v1_round_kinds(r)]
        metafunc.parametrize("name,kind,round_", cases, ids=[f"{n}-{k}-{r}" for n, k, r in cases])
    if metafunc.definition.originalname == "test_speed":
        rounds, baseline = metafunc.config.getoption("rounds"), metafunc.config.getoption("baseline_python")
        cases = [(name, kind, r) for name in SPECS for r in range(rounds) for kind in round_kinds(r, bool(baseline))]
        metafunc.parametrize("name,kind,round_", cases, ids=[f"{n}-{k}-{r}" for n, k, r in cases])


def serving(kind: str, lake: Lake, ceiling: Callable[[], Served], baseline: str | None):
    if kind == "ceiling":
        return contextlib.nullcontext(ceiling())
    env = service_env(lake, **({"CACHE_BYTES": WARM_CACHE} if kind == "warm" else {}))
    return baseline_process(baseline, env) if kind == "baseline" else server_process(env)  # type: ignore[arg-type]  # "baseline" implies --baseline-python


def test_speed(benchmark, lakes, ceilings, baseline_python, name, kind, round_):
    lake = lakes[name]
    with serving(kind, lake, lambda: ceilings(name), baseline_python) as served:
        if kind == "warm":
            run_client(served.addr, lake)  # fills the cache: not measured
        fetched = storage_fetches(served) if kind != "ceiling" else 0
        cpu = cpu_seconds(served.proc.pid)
        got = benchmark.pedantic(run_client, (served.addr, lake), rounds=1, iterations=1)
        cpu = cpu_seconds(served.proc.pid) - cpu
        if kind != "ceiling":
            # Cold: each object of the range read from storage once during the run, but those held
            # from start-up (by a baseline older than the commit after 5a03a08, none); warm: none.
            fetches = storage_fetches(served) - fetched
            if kind == "warm":
                assert fetches == 0
            else:
                assert fetches in ((lake.objects - HELD,) if kind == "service" else (lake.objects - HELD, lake.objects))
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
    rounds = sorted({r for n, _, r in SECONDS if n == name})
    for server, figure in (("service", "paired_ratio"), ("baseline", "baseline_paired_ratio")):
        paired = [
            SECONDS[name, "ceiling", r] / SECONDS[name, server, r]
            for r in rounds
            if (name, "ceiling", r) in SECONDS and (name, server, r) in SECONDS
        ]
        if paired:
            group[figure] = statistics.median(paired)
            group[f"{figure}_rounds"] = len(paired)


def test_fanout(benchmark, lakes):
    lake = lakes["fanout"]
    env = service_env(lake, MAX_CONCURRENT_STREAMS=FANOUT_PROCS * FANOUT_STREAMS)
    with server_process(env) as served:
        addr, proc = served.addr, served.proc
        fetched, cpu = storage_fetches(served), cpu_seconds(proc.pid)

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
        fetches = storage_fetches(served) - fetched
        rss = peak_rss(proc.pid)
    streams = FANOUT_PROCS * FANOUT_STREAMS
    assert all(g["min_stream_ledgers"] == lake.spec.count for g in got)
    total = sum(g["bytes"] for g in got)
    group = RESULTS.setdefault("service-fanout", {})
    group.update(
        {
            "streams": streams,
            "objects": lake.objects,
            "held": HELD,
            "fetches": fetches,
            "ledgers/s": streams * lake.spec.count / max(g["seconds"] for g in got),
            "cpu_s/GB": cpu / (total / 1e9),
            "peak_rss_MiB": rss / MiB,
            "limit_MiB": (lake.spec.cache_bytes + 256 * MiB) / MiB,
        }
    )
    benchmark.group = "service-fanout"
    benchmark.extra_info.update(group)
    # Every object read from storage once (the held one at start-up), whatever the number of clients.
    assert fetches == lake.objects - HELD


V1_SECONDS: dict[tuple[str, str, int], float] = {}  # (lake, "raw" or "v1", round) -> client seconds
BYTES_V1: dict[tuple[str, str], int] = {}  # (lake, "raw" or "v1") -> bytes received


def test_v1_speed(benchmark, lakes, name, kind, round_):
    """The same cold stream from ``raw_ledger_service`` and from ``stellar.v1``
    (frames with the network and close time, built by the core once per
    object), each round from a fresh server, in alternating order; the figure
    is v1/raw in ledgers per second, the median of the rounds' own pairs."""
    lake = lakes[name]
    with server_process(service_env(lake)) as served:
        fetched = storage_fetches(served, "ok")
        args = ("--v1",) if kind == "v1" else ()
        got = benchmark.pedantic(run_client, (served.addr, lake, *args), rounds=1, iterations=1)
        # Cold: every object read once (a v1 stream has no end: it may also ask for objects past the
        # newest before the client cancels it, reads that find nothing).
        assert storage_fetches(served, "ok") - fetched == lake.objects - HELD
    assert got["ledgers"] == lake.spec.count and got["bytes"] > lake.spec.cache_bytes
    BYTES_V1.setdefault((name, kind), got["bytes"])
    if (name, "raw") in BYTES_V1 and (name, "v1") in BYTES_V1:  # v1 frames: the same ledgers, and more
        assert BYTES_V1[name, "v1"] > BYTES_V1[name, "raw"]
    benchmark.group = f"v1-{name}"
    benchmark.extra_info.update(got)
    V1_SECONDS[name, kind, round_] = got["seconds"]
    group = RESULTS.setdefault(f"v1-{name}", {})
    keep(group, f"{kind}_ledgers/s", got["ledgers"] / got["seconds"])
    paired = [
        V1_SECONDS[name, "raw", r] / V1_SECONDS[name, "v1", r]
        for r in sorted({r for n, _, r in V1_SECONDS if n == name})
        if (name, "raw", r) in V1_SECONDS and (name, "v1", r) in V1_SECONDS
    ]
    if paired:
        group["paired_ratio"] = statistics.median(paired)
        group["paired_ratio_rounds"] = len(paired)
