"""Backfilling a one-ledger-per-object lake from a remote store (the tests'
object server, S3 API), with many reads in flight: every ledger once and in
order while reads complete out of order, fail and are retried; and a stream
cancelled with 100 reads in flight leaves no task, slot, buffer or open
request behind, checked in the service and at the peer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stellar_live_source.client import Client
from stellar_live_source.tools.pack import renumber, write_lake

from .conftest import needs_testdata
from .service_storage_support import run_ledgers, s3_env
from .service_support import running_app, until
from .support.endpoints import DUMMY_AWS_ENV
from .support.objectserver import ObjectServer

pytestmark = needs_testdata
BUCKET = "backfill"
START, COUNT = 64 * 500, 640


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> tuple[Path, list[bytes]]:
    """COUNT real small ledgers from START, one per object: (folder, ledgers)."""
    ledgers = list(renumber(run_ledgers("v0"), START, COUNT))
    folder = tmp_path_factory.mktemp("one-per-object")
    write_lake(folder, ledgers, ledgers_per_file=1, files_per_partition=64_000)
    return folder, ledgers


@pytest.fixture
def server(lake, monkeypatch) -> Iterator[ObjectServer]:
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)  # obstore's and boto3's credentials, in this process
    with ObjectServer(auth="s3", seed=3) as s:
        s.load_folder(BUCKET, lake[0])
        yield s


def env(server: ObjectServer, **extra: str) -> dict[str, str]:
    return s3_env(server.url, BUCKET, LOG_LEVEL="warning", **extra)


async def test_reads_out_of_order_failing_and_retried_deliver_every_ledger_once_in_order(server, lake):
    _, ledgers = lake
    async with running_app(env(server, RETRY_ATTEMPTS="8", RETRY_BACKOFF="10ms")) as (app, addr):
        # Random latency reorders completions; one read in ten fails (503, reset or cut short).
        server.configure(delay=0.0, fail_rate=0.04, reset_rate=0.03, truncate_rate=0.03)
        jitter = asyncio.create_task(_jitter(server))
        try:
            async with Client(addr) as client:
                got = [(seq, raw) async for seq, raw in client.stream(START, START + COUNT - 1, timeout=60)]
        finally:
            jitter.cancel()
        assert [seq for seq, _ in got] == list(range(START, START + COUNT))
        assert [raw for _, raw in got] == ledgers
        assert server.stats["max_inflight"] >= 32  # many reads were in flight at once
        faults = server.stats["status_503"] + server.stats["reset"] + server.stats["truncated"]
        assert faults >= 10  # and many were retried
        assert app.parts.lake_settings.max_inflight == 128  # STORAGE_MAX_INFLIGHT at its default


async def _jitter(server: ObjectServer) -> None:
    """A new random delay every few milliseconds: reads overtake each other."""
    import random

    rng = random.Random(5)
    while True:
        server.configure(delay=rng.choice((0.0, 0.002, 0.02)))
        await asyncio.sleep(0.003)


async def test_a_stream_cancelled_with_100_reads_in_flight_leaves_nothing_behind(server):
    # No refresh of the newest ledger while the test looks: its read would hang at the peer too.
    async with running_app(env(server, POLL_INTERVAL="1h")) as (app, addr):
        lake = app.lake
        assert lake is not None
        baseline_tasks = len(asyncio.all_tasks())
        baseline_threads = {t.name for t in threading.enumerate()}
        async with Client(addr) as client:
            call = asyncio.ensure_future(_drain(server, client.stream(START, START + COUNT - 1, timeout=60)))
            await until(lambda: server.inflight >= 100, 10, "100 reads in flight at the peer")
            assert lake.slots.in_use >= 100
            aborted = server.stats["aborted"]
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
        # The service ends the stream: its reads are cancelled, their requests closed.
        await until(lambda: server.inflight == 0, 10, "every request closed at the peer")
        assert server.stats["aborted"] - aborted >= 100
        await until(lambda: lake.slots.in_use == 0 and lake.cache.inflight == 0, 5, "slots and fetches released")
        await until(lambda: len(asyncio.all_tasks()) <= baseline_tasks, 5, "the stream's tasks gone")
        assert not {t.name for t in threading.enumerate()} - baseline_threads - {"decode_0", "decode_1"}
        # The service is still up: stream again.
        server.configure(delay=0.0)
        async with Client(addr) as client:
            n = 0
            async for _ in client.stream(START, START + 63, timeout=30):
                n += 1
        assert n == 64


async def _drain(server: ObjectServer, stream) -> int:
    """Read the stream; after a few ledgers (object sizes known, read-ahead
    running), the peer stops answering while the test looks."""
    n = 0
    try:
        async for _ in stream:
            n += 1
            if n == 10:
                server.configure(delay=30.0)
    except grpc.aio.AioRpcError:
        pass
    return n


async def test_many_streams_over_one_range_ride_one_set_of_reads(server, lake):
    """30 streams backfilling the same range together: every object is fetched
    once, and the streams behind take what the first one's reads bring (the
    cache) instead of each joining every fetch ahead of it. Joining made each
    stream's read-ahead cost grow with the number of streams until the event
    loop did little else (30 streams: 30 joins per object, per stream ahead)."""
    _, ledgers = lake
    server.configure(delay=0.01)
    streams = 30
    async with running_app(env(server, MAX_CONCURRENT_STREAMS=str(streams))) as (app, addr):
        assert app.lake is not None
        cache = app.lake.cache
        misses, shared = cache.misses, cache.shared

        async def one() -> list[bytes]:
            async with Client(addr) as client:
                return [raw async for _, raw in client.stream(START, START + COUNT - 1, timeout=60)]

        got = await asyncio.gather(*(one() for _ in range(streams)))
        assert all(g == ledgers for g in got)  # every stream: every ledger, once, in order
        fetched, joined = cache.misses - misses, cache.shared - shared
        assert fetched <= COUNT + 1  # each object fetched once (the tip may be read again)
        assert joined < COUNT, f"{joined} joins of {fetched} fetches by {streams} streams"
