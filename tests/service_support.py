"""Running the service in tests: in-process (an App on free loopback ports)
or as a real process (`stellar-live-source serve`), and reading it back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc

from stellar_live_source.ops.config import load
from stellar_live_source.server.app import App

from .conftest import LEDGERS, TESTDATA

SHARED_LAKE = TESTDATA / "lakes" / "testnet_1410048-1410367_lpf64_fpp10"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket stays bound until all are
    picked, or the kernel may hand the same port out twice (4 triples of
    separate picks in 20,000 had a repeat here)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(n):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def env_for(lake: Path | str, **extra) -> dict[str, str]:
    grpc_port, health_port, metrics_port = free_ports(3)
    env = {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(grpc_port),
        "HEALTH_PORT": str(health_port),
        "METRICS_PORT": str(metrics_port),
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
async def running_app(env: dict[str, str]):
    app = App(load(env))
    bound = await app.start()
    # Settled before the test acts: the background lookup of the oldest ledger done
    # (tests that turn storage flaky or count reads mean a server that has started).
    await asyncio.gather(app._oldest_lookup, return_exceptions=True)
    try:
        yield app, f"127.0.0.1:{bound.grpc_port}"
    finally:
        await app.stop(1.0)


def wait_settled(env: dict[str, str], timeout: float = 20) -> None:
    """Until /health shows start-up's own reads done: the newest ledger, then
    the oldest, looked up in the background once serving (an empty lake has
    neither). Tests that count reads or turn storage flaky start from here."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{env['HEALTH_PORT']}/health", timeout=5) as r:
                report = json.loads(r.read())
            if report["newest_ledger"] is None or report["oldest_ledger"] is not None:
                return
        except OSError:  # not listening yet, or 503 while starting
            pass
        time.sleep(0.05)
    raise TimeoutError("the service did not settle")


@contextlib.contextmanager
def server_process(env: dict[str, str], timeout: float = 30):
    """`stellar-live-source serve` as a real process; yields its address."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "BUCKET", "SERVER_", "ARCHIVE_"))}
    full.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stellar_live_source.cli", "serve"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    addr = f"127.0.0.1:{env['SERVER_PORT']}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}): {proc.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", int(env["SERVER_PORT"])), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the server did not start") from None
                time.sleep(0.1)
        wait_settled(env, max(1.0, deadline - time.monotonic()))
        yield addr, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
    async with Client(addr, max_resumes=0) as client:
        try:
            async for _ in client.stream(start, end, timeout=timeout):
                n += 1
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", n
    return grpc.StatusCode.OK, "", n


def run(coro):
    return asyncio.run(coro)
