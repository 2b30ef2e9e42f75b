"""A storage outage through the breaker, end to end (the tests' object server
answering every request 503): the breaker opens, /ready is 503 naming the
cause while /health stays 200, storage recovers, the breaker closes, /ready
is 200 again, and a resuming client got every ledger exactly once in order.
The tip watcher's failed polls open it too, and a stream waiting at the tip
keeps waiting through the outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stellar_live_source.client import Client
from stellar_live_source.core.keys import Layout
from stellar_live_source.lake.breaker import CLOSED, OPEN
from stellar_live_source.tools.pack import renumber, write_lake

from .conftest import needs_testdata
from .service_storage_support import run_ledgers, s3_env
from .service_support import http_get, running_app, until
from .support.endpoints import DUMMY_AWS_ENV
from .support.objectserver import ObjectServer

pytestmark = needs_testdata

BUCKET = "outage"
START, COUNT = 64 * 20, 120  # one ledger per object; the last is held back for the tip test
LAYOUT = Layout(1, 64000)


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, list[bytes]]:
    ledgers = list(renumber(run_ledgers("v1"), START, COUNT + 1))
    write_lake(tmp_path / "lake", ledgers, ledgers_per_file=1, files_per_partition=64000)
    return tmp_path / "lake", ledgers


@pytest.fixture
def server(lake, monkeypatch) -> Iterator[ObjectServer]:
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    folder, _ = lake
    last = LAYOUT.object_key(START + COUNT)
    with ObjectServer(auth="s3", seed=5) as s:
        for key in s.load_folder(BUCKET, folder):
            if key == last:
                s.delete(BUCKET, key)
        yield s


def env(server: ObjectServer) -> dict[str, str]:
    return s3_env(
        server.url,
        BUCKET,
        LOG_LEVEL="error",
        RETRY_ATTEMPTS="1",
        RETRY_BACKOFF="10ms",
        POLL_INTERVAL="50ms",
        BREAKER_FAILURE_THRESHOLD="3",
        BREAKER_RESET_TIMEOUT="200ms",
        READAHEAD_BYTES="16KiB",
        CACHE_BYTES="1MiB",
    )


async def probe(app, path: str) -> tuple[int, dict]:
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{app.bound.health_port}{path}", 5)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"body": body.decode(errors="replace")}


async def outage(app, server: ObjectServer, seen: dict) -> None:
    """Storage down until the breaker opened and readiness said so; then up."""
    server.configure(fail_rate=1.0)
    await until(lambda: app.lake.breaker.state == OPEN, 10, "the breaker to open")
    # Read at once, before any await: by the time the probes below are answered
    # (slower on the pure twins) the short reset timeout may have made it half-open.
    seen["gauge"] = app.metrics.registry.get_sample_value("stellar_live_source_breaker_state", {"backend": "S3"})
    seen["ready"] = await probe(app, "/ready")
    seen["health"] = await probe(app, "/health")
    await asyncio.sleep(0.3)  # past the reset timeout: failed probes open it again
    server.configure(fail_rate=0.0)
    await until(lambda: app.lake.breaker.state == CLOSED, 10, "the breaker to close")
    await until(lambda: app.readiness.ready, 5, "readiness")
    seen["ready_after"] = await probe(app, "/ready")


async def test_an_outage_opens_the_breaker_and_a_resuming_client_loses_and_repeats_nothing(server, lake):
    _, ledgers = lake
    async with running_app(env(server)) as (app, addr):
        assert app.lake is not None
        seen: dict = {}
        unavailable: list[str] = []
        got: list[tuple[int, bytes]] = []
        task = None
        async with Client(
            addr,
            max_retries=None,
            retry_backoff=0.05,
            retry_backoff_max=0.2,
            on_retry=lambda e, n, w: unavailable.append(e.details() or ""),
        ) as client:
            async for seq, raw in client.stream(START, START + COUNT - 1, timeout=60):
                got.append((seq, raw))
                if len(got) == 10:
                    task = asyncio.create_task(outage(app, server, seen))
                if task is not None and not task.done():
                    await asyncio.sleep(0.01)  # a reader slow enough to meet the outage
        assert task is not None
        await task
        assert [s for s, _ in got] == list(range(START, START + COUNT))  # each exactly once, in order
        assert [r for _, r in got] == ledgers[:COUNT]
        assert unavailable, "the stream met the outage"
        assert any("circuit breaker open" in d for d in unavailable)  # failing fast, naming the cause
        assert any("503" in d or "Service Unavailable" in d for d in unavailable)
        status, body = seen["ready"]
        assert status == 503 and "storage" in json.dumps(body)
        assert seen["health"][0] == 200
        assert seen["gauge"] == 2
        assert seen["ready_after"][0] == 200
        assert app.lake.breaker.opens >= 1


async def test_failed_tip_polls_open_the_breaker_and_a_waiting_stream_keeps_waiting(server, lake):
    _, ledgers = lake
    newest = START + COUNT - 1
    async with running_app(env(server)) as (app, addr):
        lake_ = app.lake
        assert lake_ is not None
        async with Client(addr, max_retries=0) as client:
            stream = client.stream(newest + 1, newest + 1, timeout=30)
            first = asyncio.create_task(anext(stream))
            await until(lambda: lake_.waiters == 1, 5, "the stream to wait at the tip")
            server.configure(fail_rate=1.0)  # only the tip watcher asks storage now
            await until(lambda: lake_.breaker.state == OPEN, 10, "the breaker to open")
            status, body = await probe(app, "/ready")
            assert status == 503 and "circuit breaker" in json.dumps(body)
            assert (await probe(app, "/health"))[0] == 200
            await asyncio.sleep(0.3)
            assert not first.done() and lake_.waiters == 1  # still waiting, not failed
            server.configure(fail_rate=0.0)
            await until(lambda: lake_.breaker.state == CLOSED, 10, "the breaker to close")
            assert (await probe(app, "/ready"))[0] == 200
            server.put(BUCKET, LAYOUT.object_key(newest + 1), (lake[0] / LAYOUT.object_key(newest + 1)).read_bytes())
            seq, raw = await asyncio.wait_for(first, 10)
            assert (seq, raw) == (newest + 1, ledgers[COUNT])
            await stream.aclose()
