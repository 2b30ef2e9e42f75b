"""Load test: N concurrent streaming clients against a real `serve`, for a
bounded time, and what the server paid for them (issue 16). A script, not a
test: ``make bench`` and CI never run it (``tests/test_load_script.py`` runs a
3-second smoke of it so it cannot rot).

    python benchmarks/load.py --mode tip --streams 200 --size small --seconds 20
    python benchmarks/load.py --mode history --streams 50 --size small --per-object 64 --seconds 15

Modes:

- ``tip``: a folder lake of one ledger per object (as the public lakes hold
  them); every client opens ``StreamRawLedgers`` at the lake's newest ledger
  and waits at the tip; once every stream has its first ledger, a writer in
  this process lands a new object every ``--cadence`` seconds (an atomic
  rename into the lake folder, its time taken right after the rename). Each
  ledger's latency is its arrival at a client minus its landing; the fan-out
  spread is, per ledger, the last client's arrival minus the first's.
  ``POLL_INTERVAL`` bounds the first part: a ledger waits up to one poll to be
  seen.
- ``history``: a lake behind the fake object server (its own process, 50 ms
  added to every answer); every client backfills from the lake's first
  ledger, all started together, until the lake's end or ``--seconds``.
  Per-message figures are the gaps between a stream's consecutive messages;
  storage GETs (the server's ``stellar_live_source_storage_requests_total``)
  per object streamed show how far the shared cache keeps reads flat.

Tip runs pin the clients (and the writer) to core 0 and the server to core 1
(``--pin auto``: when there are two cores or more), so the figures measure the
server; history runs are not pinned (as ``benchmarks/test_backfill.py``). The
clients are grpc.aio, one channel (one connection) per stream, decoding
nothing, in ``--client-procs`` processes (default 1; the report gives their
CPU, so a client that could not keep up shows). Refusals are calls ended with
RESOURCE_EXHAUSTED (or UNAVAILABLE at start); any other status is an error.
The server's CPU and peak resident memory come from ``/proc`` of its pid.

The server runs with the prod overlay's memory settings (k8s/overlays/prod)
but ``MAX_CONCURRENT_STREAMS`` raised to fit the run, and ``POLL_INTERVAL``
100 ms; ``--set NAME=VALUE`` changes any of them. Every setting is printed
with the figures; ``--json FILE`` appends the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the benchmarks and tests packages by name
    sys.path.insert(0, str(ROOT))

#: the prod overlay's memory settings (k8s/overlays/prod/kustomization.yaml)
PROD = {"CACHE_BYTES": "192MiB", "READAHEAD_BYTES": "32MiB", "MAX_OBJECT_BYTES": "32MiB", "DECODE_WORKERS": "2"}
BUCKET = "load-lake"
START = 64 * 1000  # any start: the ledgers are renumbered
TIP_HISTORY = 16  # objects in the tip lake before the writer starts
OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
REFUSALS = {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
GAP_SAMPLE = 50_000  # history gaps each client process returns at most


# -- the client processes -----------------------------------------------------------------------------------


async def run_clients(job: dict[str, Any]) -> dict[str, Any]:
    """One client process: ``job["streams"]`` streams of start..end. Prints
    {"ready": ...} once every stream is connected (tip: has its first ledger),
    waits for a line on stdin, then streams until done or ``job["seconds"]``."""
    import grpc

    from stellar_live_source import api

    request = api.StreamLedgersRequest(start_ledger=job["start"], end_ledger=job["end"]).SerializeToString()
    tip, expected = job["mode"] == "tip", job["end"] - job["start"] + 1
    channels = [grpc.aio.insecure_channel(job["addr"], options=OPTIONS) for _ in range(job["streams"])]
    await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 60) for ch in channels))
    go = asyncio.Event()
    first = [asyncio.Event() for _ in channels]
    times: list[list[float]] = [[] for _ in channels]
    sizes = [0] * len(channels)
    codes: list[str] = ["OK"] * len(channels)

    async def one(i: int) -> None:
        if not tip:
            await go.wait()
        call: Any = channels[i].unary_stream(api.STREAM_METHOD)(request, timeout=job["seconds"] + 120)
        got = times[i]
        try:
            async for msg in call:
                got.append(time.time())
                sizes[i] += len(msg)
                if len(got) == 1:
                    first[i].set()
                if len(got) == expected or (not tip and time.time() > job["deadline"]):
                    break
        except grpc.aio.AioRpcError as exc:
            codes[i] = exc.code().name
        finally:
            first[i].set()
            call.cancel()

    tasks = [asyncio.create_task(one(i)) for i in range(len(channels))]
    if tip:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 120)
    print(json.dumps({"ready": len(channels)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go" with the deadline
    job["deadline"] = time.time() + job["seconds"]
    cpu0, wall0 = time.process_time(), time.time()
    go.set()
    _, late = await asyncio.wait(tasks, timeout=job["seconds"] + (job.get("grace", 10) if tip else 5))
    for t in late:  # streams still open past the deadline and the grace: cut, not failed
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    await asyncio.gather(*(ch.close() for ch in channels))
    out: dict[str, Any] = {"codes": codes, "bytes": sizes, "counts": [len(t) for t in times]}
    out |= {"cpu_s": cpu, "wall_s": wall, "cut": len(late), "t_go": wall0}
    if tip:
        out["times"] = times
    else:
        gaps = [b - a for t in times for a, b in zip(t, t[1:], strict=False)]
        out["gaps"] = random.Random(1).sample(gaps, GAP_SAMPLE) if len(gaps) > GAP_SAMPLE else gaps
        out["spans"] = [(t[0], t[-1]) if t else None for t in times]
    return out


def client_main(job_json: str) -> None:
    job = json.loads(job_json)
    if job.get("cpu") is not None:
        os.sched_setaffinity(0, {job["cpu"]})
    print(json.dumps(asyncio.run(run_clients(job))), flush=True)


# -- the lakes ----------------------------------------------------------------------------------------------


def build_lake(folder: Path, size: str, count: int, per_object: int) -> None:
    """``count`` hash-chained real ledgers (small: testnet v0, ~4.6 KB; large:
    v25 load-test, ~1.2 MB), ``per_object`` to an object, one partition."""
    from benchmarks.objects import cycled_lake

    if (folder / ".done").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    cycled_lake(folder, size, START, count, per_file=per_object, per_partition=64_000)
    (folder / ".done").write_text("")


def stage_tip(tmp: Path, size: str, new: int) -> tuple[Path, list[tuple[int, Path, Path]]]:
    """A lake of TIP_HISTORY objects of one ledger, and ``new`` more staged
    beside it: (lake, [(sequence, staged file, its place in the lake)])."""
    from benchmarks.objects import RUNS
    from stellar_live_source.tools.pack import renumber, write_lake
    from tests.service_storage_support import run_ledgers

    ledgers = list(renumber(run_ledgers(RUNS[size]), START, TIP_HISTORY + new))
    lake = tmp / "lake"
    write_lake(lake, ledgers[:TIP_HISTORY], ledgers_per_file=1, files_per_partition=64_000)
    staged = []
    for i, xdr in enumerate(ledgers[TIP_HISTORY:]):
        sub = tmp / "staging" / str(i)
        (key,) = write_lake(sub, [xdr], ledgers_per_file=1, files_per_partition=64_000)
        staged.append((START + TIP_HISTORY + i, sub / key, lake / key))
    return lake, staged


# -- the server ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def metric_sum(text: str, name: str, match: str = "") -> float:
    """The sum of a metric's samples whose labels contain ``match``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ ") and match in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Server:
    """`stellar-live-source serve` in a process of its own (on ``cpu``, if given), settled."""

    def __init__(self, env: dict[str, str], cpu: int | None) -> None:
        from tests.service_support import Served, process_env, read_ports, wait_settled

        self.tmp = tempfile.TemporaryDirectory(prefix="sls-load-")
        ports_file = Path(self.tmp.name) / "ports.json"
        self.log = open(Path(self.tmp.name) / "server.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stellar_live_source.cli", "serve", "--ports-file", str(ports_file)],
            env=process_env(env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        try:
            ports = read_ports(ports_file, self.proc, 60)
            self.served = Served(f"127.0.0.1:{ports['grpc']}", self.proc, ports)
            wait_settled(self.served, 60)
        except BaseException:
            self.stop()
            raise

    def metrics(self) -> str:
        with urllib.request.urlopen(self.served.url("/metrics"), timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.tmp.cleanup()


class Sampler(threading.Thread):
    """The server's resident memory and active streams, every half second."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.stop_ = server, threading.Event()
        self.rss_kb: list[int] = []
        self.active: list[float] = []

    def run(self) -> None:
        while not self.stop_.wait(0.5):
            try:
                self.rss_kb.append(status_kb(self.server.proc.pid, "VmRSS"))
                self.active.append(metric_sum(self.server.metrics(), "stellar_live_source_streams_active"))
            except OSError:
                return


# -- a run ----------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def start_clients(job: dict[str, Any], streams: int, procs: int, cpu: int | None) -> list[subprocess.Popen[str]]:
    out = []
    for k in range(procs):
        n = streams // procs + (1 if k < streams % procs else 0)
        if n:
            j = json.dumps(job | {"streams": n, "cpu": cpu})
            out.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--client-job", j],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
            )
    return out


def read_json_line(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"a client process ended before {what} (exit {proc.wait()}): {err[-3000:]}")
    return json.loads(line)


def run(a: argparse.Namespace) -> dict[str, Any]:
    pin = a.pin == "on" or (a.pin == "auto" and a.mode == "tip" and (os.cpu_count() or 1) >= 2)
    client_cpu, server_cpu = (0, 1) if pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # the writer, with the clients
    settings = PROD | {
        "MAX_CONCURRENT_STREAMS": str(max(100, a.streams + 8)),
        "POLL_INTERVAL": "100ms",
        "LOG_LEVEL": "warning",
        "RETRY_BACKOFF": "1s",
        "MISSING_OBJECT_WAIT": "60s",
    }
    settings |= dict(kv.split("=", 1) for kv in a.set)
    from tests.service_support import env_for

    tmp = Path(tempfile.mkdtemp(prefix="sls-load-lake-"))
    objectserver: subprocess.Popen[str] | None = None
    staged: list[tuple[int, Path, Path]] = []
    figures: dict[str, Any] = {}
    try:
        if a.mode == "tip":
            new = math.ceil(a.seconds / a.cadence)
            lake, staged = stage_tip(tmp, a.size, new)
            env = env_for(lake, LEDGERS_PER_FILE=1, FILES_PER_PARTITION=64_000, **settings)
            first, last = START + TIP_HISTORY - 1, START + TIP_HISTORY + new - 1
            objects = new
        else:
            count = a.ledgers or {"small": 20_000 if a.per_object == 1 else 192_000, "large": 3_000}[a.size]
            lakes = Path(a.lakes) if a.lakes else tmp
            lake = lakes / f"{a.size}-{a.per_object}-{count}"
            build_lake(lake, a.size, count, a.per_object)
            objectserver = subprocess.Popen(
                [sys.executable, "-m", "tests.support.objectserver", "--bucket", BUCKET, "--folder", str(lake)]
                + ["--delay", str(a.delay), "--stats"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert objectserver.stdout is not None
            port = objectserver.stdout.readline().strip()
            from tests.service_storage_support import s3_env

            env = s3_env(f"http://127.0.0.1:{port}", BUCKET, LEDGERS_PER_FILE=a.per_object, **settings)
            env["FILES_PER_PARTITION"] = "64000"
            first, last = START, START + count - 1
            objects = math.ceil(count / a.per_object)
        server = Server(env, server_cpu)
        try:
            figures = drive(a, server, first, last, staged, client_cpu)
        finally:
            server.stop()
        figures["objects_in_lake"] = objects
    finally:
        if objectserver is not None:
            assert objectserver.stdin is not None and objectserver.stdout is not None
            objectserver.stdin.close()
            stats = objectserver.stdout.readline()  # --stats: its counts, once stdin closes
            objectserver.wait(20)
            if stats.strip():
                figures["objectserver"] = json.loads(stats)
        shutil.rmtree(tmp, ignore_errors=True)
    figures["settings"] = {k: v for k, v in env.items() if k not in ("BUCKET_NAME",) and "SECRET" not in k}
    figures["run"] = {
        "mode": a.mode,
        "streams": a.streams,
        "size": a.size,
        "per_object": 1 if a.mode == "tip" else a.per_object,
        "seconds": a.seconds,
        "cadence_s": a.cadence if a.mode == "tip" else None,
        "storage_delay_s": a.delay if a.mode == "history" else None,
        "pinned": pin,
        "client_procs": a.client_procs,
    }
    return figures


def drive(
    a: argparse.Namespace,
    server: Server,
    first: int,
    last: int,
    staged: list[tuple[int, Path, Path]],
    client_cpu: int | None,
) -> dict[str, Any]:
    pid = server.proc.pid
    rss_idle_kb = status_kb(pid, "VmRSS")
    job = {"mode": a.mode, "addr": server.served.addr, "start": first, "end": last, "seconds": a.seconds}
    clients = start_clients(job, a.streams, a.client_procs, client_cpu)
    try:
        for p in clients:
            read_json_line(p, "it was ready")
        sampler = Sampler(server)
        sampler.start()
        m0, cpu0, t0 = server.metrics(), cpu_seconds(pid), time.time()
        for p in clients:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        landed: dict[int, float] = {}
        if a.mode == "tip":
            for i, (seq, src, dest) in enumerate(staged):
                time.sleep(max(0.0, t0 + i * a.cadence - time.time()))
                os.replace(src, dest)  # atomic: the watcher never sees half an object
                landed[seq] = time.time()
        results = [read_json_line(p, "its results") for p in clients]
        t1, cpu1, m1 = time.time(), cpu_seconds(pid), server.metrics()
        sampler.stop_.set()
        sampler.join()
    finally:
        for p in clients:
            if p.poll() is None:
                p.kill()
            p.wait()
    codes = [c for r in results for c in r["codes"]]
    counts = [n for r in results for n in r["counts"]]
    wall = max(r["wall_s"] for r in results)
    out: dict[str, Any] = {
        "ledgers": sum(counts),
        "bytes": sum(sum(r["bytes"]) for r in results),
        "refused": sum(c in REFUSALS for c in codes),
        "errors": sum(c not in REFUSALS and c not in ("OK", "CANCELLED") for c in codes),
        "error_codes": sorted({c for c in codes if c not in ("OK", "CANCELLED")}),
        "cut": sum(r["cut"] for r in results),
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_util": (cpu1 - cpu0) / (t1 - t0),
        "client_cpu_util": sum(r["cpu_s"] for r in results) / wall,
        "rss_idle_mb": rss_idle_kb / 1024,
        "rss_peak_mb": max(sampler.rss_kb or [0]) / 1024,
        "vmhwm_mb": status_kb(pid, "VmHWM") / 1024,
        "streams_active_max": max(sampler.active or [0]),
        "storage_gets": metric_sum(m1, "stellar_live_source_storage_requests_total", 'operation="get"')
        - metric_sum(m0, "stellar_live_source_storage_requests_total", 'operation="get"'),
        "server_refusals": metric_sum(m1, "stellar_live_source_refusals_total"),
    }
    if a.mode == "tip":
        lat, spread = [], []
        per_seq: dict[int, list[float]] = {}
        for r in results:
            for times in r["times"]:
                for k, t in enumerate(times[1:], start=1):  # the first is the lake's newest, before the writer
                    per_seq.setdefault(first + k, []).append(t)
        for seq, ts in per_seq.items():
            if seq in landed:
                lat += [t - landed[seq] for t in ts]
                spread.append(max(ts) - min(ts))
        out["ledgers"] -= sum(n > 0 for n in counts)  # the first ledger of each stream: not a landed one
        out["landed"] = len(landed)
        out["expected"] = len(landed) * a.streams
        out["seconds"] = (max(landed.values()) - t0) if landed else 0.0
        out["latency_ms"] = {q: pct(lat, v) * 1e3 for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
        out["latency_ms"]["max"] = max(lat) * 1e3 if lat else math.nan
        out["spread_ms"] = {"p50": pct(spread, 0.5) * 1e3, "p99": pct(spread, 0.99) * 1e3}
        out["samples"] = len(lat)
    else:
        gaps = [g for r in results for g in r["gaps"]]
        spans = [s for r in results for s in r["spans"] if s]
        # From the start signal to the last message received (streams cut at the deadline included).
        out["seconds"] = (max(e for _, e in spans) - min(r["t_go"] for r in results)) if spans else 0.0
        out["gap_ms"] = {q: pct(gaps, v) * 1e3 for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
        out["gap_ms"]["max"] = max(gaps) * 1e3 if gaps else math.nan
        out["min_stream_ledgers"] = min(counts) if counts else 0
        out["distinct_objects"] = math.ceil(max(counts or [0]) / a.per_object)
    out["ledgers_per_s"] = out["ledgers"] / out["seconds"] if out["seconds"] else 0.0
    out["mb_per_s"] = out["bytes"] / out["seconds"] / 1e6 if out["seconds"] else 0.0
    return out


def report(f: dict[str, Any]) -> list[str]:
    r = f["run"]
    head = (
        f"load: mode={r['mode']} streams={r['streams']} size={r['size']} ledgers/object={r['per_object']}"
        f" seconds={r['seconds']:g} pinned={r['pinned']} client_procs={r['client_procs']}"
    )
    if r["mode"] == "tip":
        head += f" cadence={r['cadence_s']:g}s"
    else:
        head += f" storage_delay={r['storage_delay_s']:g}s"
    lines = [head, "settings: " + " ".join(f"{k}={v}" for k, v in sorted(f["settings"].items()))]
    lines.append(
        f"throughput: {f['ledgers_per_s']:,.0f} ledgers/s, {f['mb_per_s']:,.1f} MB/s"
        f" ({f['ledgers']:,} ledgers, {f['bytes'] / 1e6:,.1f} MB in {f['seconds']:.2f} s)"
    )
    if r["mode"] == "tip":
        q = f["latency_ms"]
        lines.append(
            f"latency landing->client ms: p50 {q['p50']:.1f} p90 {q['p90']:.1f} p99 {q['p99']:.1f} max {q['max']:.1f}"
            f" ({f['samples']:,} of {f['expected']:,} expected; {f['landed']} objects landed);"
            f" fan-out spread p50 {f['spread_ms']['p50']:.1f} p99 {f['spread_ms']['p99']:.1f}"
        )
    else:
        q = f["gap_ms"]
        lines.append(
            f"latency between messages ms: p50 {q['p50']:.2f} p90 {q['p90']:.2f} p99 {q['p99']:.2f} max {q['max']:.1f};"
            f" slowest stream {f['min_stream_ledgers']:,} ledgers"
        )
        per = f["storage_gets"] / f["distinct_objects"] if f["distinct_objects"] else math.nan
        lines.append(
            f"storage: {f['storage_gets']:,.0f} GETs for {f['distinct_objects']:,} objects streamed"
            f" ({per:.2f} per object; {f['storage_gets'] / max(1, f['ledgers']):.5f} per ledger served)"
        )
    if "objectserver" in f:
        o = f["objectserver"]
        statuses = " ".join(f"{k[7:]}:{v}" for k, v in sorted(o.items()) if k.startswith("status_"))
        lines.append(
            f"object server: {o.get('requests', 0):,} requests ({statuses}),"
            f" at most {o.get('max_inflight', 0)} at once, CPU {o.get('cpu_s', 0):.1f} s"
        )
    lines.append(
        f"errors: {f['errors']} {f['error_codes'] or ''} refused: {f['refused']}"
        f" (server refusals_total {f['server_refusals']:.0f}) cut at the deadline: {f['cut']}"
    )
    lines.append(
        f"server: CPU {f['server_cpu_s']:.1f} s ({f['server_cpu_util'] * 100:.0f}% of a core), RSS idle"
        f" {f['rss_idle_mb']:.0f} MB, peak {f['rss_peak_mb']:.0f} MB (VmHWM {f['vmhwm_mb']:.0f} MB),"
        f" streams_active max {f['streams_active_max']:.0f}; clients: {f['client_cpu_util'] * 100:.0f}% of a core"
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client-job", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["tip", "history"], default="tip")
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--size", choices=["small", "large"], default="small")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the run lasts (tip: the writer)")
    p.add_argument("--cadence", type=float, default=0.5, help="tip: seconds between landed objects")
    p.add_argument("--per-object", type=int, default=1, help="history: ledgers per object (1 or 64)")
    p.add_argument("--ledgers", type=int, help="history: ledgers in the lake (default by size and layout)")
    p.add_argument("--delay", type=float, default=0.05, help="history: seconds the object server adds")
    p.add_argument("--lakes", help="history: keep the built lakes in this folder, for the next runs")
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument("--pin", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a server setting")
    p.add_argument("--json", help="append the figures to this file as one JSON line")
    a = p.parse_args()
    if a.client_job:
        client_main(a.client_job)
        return
    figures = run(a)
    for line in report(figures):
        print(line, flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
