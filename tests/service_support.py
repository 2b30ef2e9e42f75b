"""Running the service in tests: in-process (an App on free loopback ports)
or as a real process (`stellar-live-source serve`), and reading it back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from stellar_live_source import parts
from stellar_live_source.lake.lake import LakeSettings
from stellar_live_source.lake.storage import Storage, open_storage
from stellar_live_source.ops.config import defaults, load
from stellar_live_source.server.app import App
from stellar_live_source.server.stream import StreamSettings

from .conftest import LEDGERS, TESTDATA

SHARED_LAKE = TESTDATA / "lakes" / "testnet_1410048-1410367_lpf64_fpp10"
#: The cap on an object's decompressed size that tests decode with: the configuration's default.
MAX_OBJECT_BYTES = defaults().storage.max_object_bytes


def storage_for(kind: str, *, bucket: str, **given: Any) -> Storage:
    """``open_storage`` with what is not given at the configuration's defaults."""
    d = defaults().storage
    kw: dict[str, Any] = {
        "prefix": "",
        "region": None,
        "endpoint": None,
        "force_path_style": False,
        "anonymous": False,
        "timeout": d.timeout,
        "max_inflight": d.max_inflight,
    }
    return open_storage(kind, bucket=bucket, **(kw | given))


def lake_settings(**given: Any) -> LakeSettings:
    """The lake's settings at the configuration's defaults, but for what is given."""
    return dataclasses.replace(parts.lake_settings(defaults()), **given)


def stream_settings(**given: Any) -> StreamSettings:
    return dataclasses.replace(parts.stream_settings(defaults()), **given)


def count_gets(storage: Storage) -> collections.Counter[str]:
    """Reads of each key from now on: the real storage answers, this counts."""
    counts: collections.Counter[str] = collections.Counter()
    real = storage.get

    async def get(key: str, on_size: Callable[[int], None] | None = None) -> bytes:
        counts[key] += 1
        return await real(key, on_size)

    storage.get = get  # type: ignore[method-assign]  # a spy on one instance, for this test's life
    return counts


async def until(condition: Callable[[], bool], timeout: float = 10, what: str = "the condition") -> None:
    """Wait for ``condition`` (polled), failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.01)


def env_for(lake: Path | str, **extra: object) -> dict[str, str]:
    """A server's environment for a lake in a folder, every listener on a port
    the kernel picks (0); the server reports the ports it bound."""
    env = {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "0",
        "HEALTH_PORT": "0",
        "METRICS_PORT": "0",
        "STORAGE_TYPE": "FS",
        "BUCKET_NAME": str(lake),
        "POLL_INTERVAL": "100ms",
        "RETRY_BACKOFF": "50ms",
        "MISSING_OBJECT_WAIT": "1s",
        "GRACEFUL_SHUTDOWN_TIMEOUT": "2s",
        "LOG_LEVEL": "info",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextlib.asynccontextmanager
async def running_app(env: dict[str, str]) -> AsyncIterator[tuple[App, str]]:
    """The service in this process, started and settled: its start-up reads
    (the newest ledger, then the oldest in the background) done, so tests that
    count reads or turn storage flaky act on a server that has started."""
    app = App(parts.build(load(env)))
    bound = await app.start()
    await app.settled()
    try:
        yield app, f"127.0.0.1:{bound.grpc_port}"
    finally:
        await app.stop(1.0)


@dataclass
class Served:
    """A server process: its gRPC address and the ports it reported."""

    addr: str
    proc: subprocess.Popen[str]
    ports: dict[str, int | None]

    def url(self, path: str) -> str:
        listener = "metrics" if path == "/metrics" else "health"
        return f"http://127.0.0.1:{self.ports[listener]}{path}"


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of a GET; error statuses are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_settled(served: Served, timeout: float = 30) -> None:
    """Until /ready says ready and /health shows start-up's own reads done:
    the newest ledger, then the oldest, looked up in the background once
    ready (an empty lake has neither). A health port not listening yet is
    asked again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            out = served.proc.stdout.read() if served.proc.stdout else ""
            raise RuntimeError(f"the server exited ({served.proc.returncode}): {out}")
        try:
            status, body = http_get(served.url("/ready"), timeout=5)
        except OSError:  # not listening yet
            status, body = 0, b"{}"
        report = json.loads(body)
        if status == 200 and (report["newest_ledger"] is None or report["oldest_ledger"] is not None):
            return
        time.sleep(0.05)
    raise TimeoutError(f"the service did not settle in {timeout}s")


def read_ports(path: Path, proc: subprocess.Popen[str], timeout: float) -> dict[str, int | None]:
    """The ports ``serve --ports-file`` wrote (written whole, once every listener is bound)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"the server exited ({proc.returncode}) before binding: {out}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server wrote no ports file in {timeout}s")
        time.sleep(0.02)
    return json.loads(path.read_text())


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a child process: ours without any lake or server settings, plus ``env``."""
    prefixes = ("STORAGE_", "BUCKET", "SERVER_", "ARCHIVE_", "S3_", "AWS_", "HEALTH_", "METRICS_")
    full = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    full.update(env)
    return full


@contextlib.contextmanager
def server_process(env: dict[str, str], timeout: float = 30, python: str = sys.executable) -> Iterator[Served]:
    """`stellar-live-source serve` as a real process, settled; stopped (SIGTERM) after."""
    with tempfile.TemporaryDirectory(prefix="sls-ports-") as tmp:
        ports_file = Path(tmp) / "ports.json"
        proc = subprocess.Popen(
            [python, "-m", "stellar_live_source.cli", "serve", "--ports-file", str(ports_file)],
            env=process_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            started = time.monotonic()
            ports = read_ports(ports_file, proc, timeout)
            served = Served(f"127.0.0.1:{ports['grpc']}", proc, ports)
            wait_settled(served, max(1.0, timeout - (time.monotonic() - started)))
            yield served
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()


def cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``stellar-live-source ARGS`` as a real process, its output as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "stellar_live_source.cli", *args],
        env=process_env(env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_LINES: weakref.WeakKeyDictionary[subprocess.Popen[str], queue.Queue[str]] = weakref.WeakKeyDictionary()


def read_lines(proc: subprocess.Popen[str], n: int, timeout: float) -> list[str]:
    """The next ``n`` lines of the process's stdout, failing after ``timeout``
    seconds (a thread reads them, so a quiet process cannot hang the test)."""
    lines_of = _LINES.get(proc)
    if lines_of is None:
        stdout = proc.stdout
        assert stdout is not None
        lines_of = _LINES[proc] = queue.Queue()

        def pump(q: queue.Queue[str] = lines_of) -> None:
            for line in stdout:
                q.put(line.rstrip("\n"))
            q.put("")  # the end

        threading.Thread(target=pump, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < n:
        try:
            line = lines_of.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"{len(lines)} of {n} lines within {timeout}s: {lines}") from None
        if not line:
            raise AssertionError(f"the process ended ({proc.wait()}) after {len(lines)} of {n} lines: {lines}")
        lines.append(line)
    return lines


def wait_for_health(served: Served, check: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    """/health's report once ``check`` holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        report = json.loads(http_get(served.url("/health"))[1])
        if check(report):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"/health never satisfied the check within {timeout}s: {report}")
        time.sleep(0.05)


def index_by_seq() -> dict[int, dict]:
    rows = [json.loads(line) for line in (LEDGERS / "INDEX.jsonl").read_text().splitlines() if line.strip()]
    return {r["seq"]: r for r in rows}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def collect(addr: str, start: int, end: int, timeout: float = 60) -> list[tuple[int, bytes]]:
    from stellar_live_source.client import Client

    async with Client(addr) as client:
        return [x async for x in client.stream(start, end, timeout=timeout)]


async def status_of(addr: str, start: int, end: int = 0, timeout: float = 20) -> tuple[grpc.StatusCode, str, int]:
    """Stream until the server ends it; (code, details, ledgers received)."""
    from stellar_live_source.client import Client

    n = 0
    async with Client(addr, max_retries=0) as client:
        try:
            async for _ in client.stream(start, end, timeout=timeout):
                n += 1
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", n
    return grpc.StatusCode.OK, "", n


def run(coro):
    return asyncio.run(coro)
