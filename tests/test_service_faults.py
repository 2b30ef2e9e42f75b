"""The service with faults injected between it and a real storage endpoint (moto's
S3 server behind tests/support/faultproxy.py: 500/503 answers, dropped
connections, truncated bodies, delays, and storage down), clients that go away
mid-stream, and the live tail on S3 and GCS through the real server process.

The flaky-storage tests are random by nature: with one request in five failing
and the default 5 retries, an object is lost only when six tries in a row fail
(0.2^6 = 6.4e-5 per object, about 0.5% for the 72 objects a test reads). The
proxy draws its outcomes from a seeded generator, so the sequence of outcomes is
the same on every run; only which request meets which depends on timing.

Listings are retried like reads: a client waiting at the tip and GetLedgerRange
keep working under the same faults (both failed with UNKNOWN before)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from stellar_live_source.client import Client
from stellar_live_source.server.stream import ReadAhead
from stellar_live_source.tools.pack import write_lake

from .conftest import needs_testdata
from .service_storage_support import (
    LAYOUTS,
    RUNS,
    build_lake,
    check_run,
    gcs_lake_env,
    run_ledgers,
    s3_env,
    stream_once,
    upload_parallel,
)
from .service_support import collect, index_by_seq, running_app, server_process
from .support.endpoints import gcs_client, s3_client
from .support.faultproxy import FaultProxy

pytestmark = needs_testdata

FIRST = RUNS["v0"][0]
LAST = FIRST + 127  # the fault lake: 128 testnet ledgers, one per object


@pytest.fixture(scope="session")
def fault_lake(tmp_path_factory) -> Path:
    """The first 128 testnet ledgers, 1 per file (128 objects): more requests, more faults."""
    root = tmp_path_factory.mktemp("fault-lake")
    write_lake(root, run_ledgers("v0")[: LAST - FIRST + 1], ledgers_per_file=1, files_per_partition=64000)
    return root


@pytest.fixture(scope="session")
def fault_bucket(moto_server, fault_lake) -> str:
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    upload_parallel("S3", moto_server, bucket, fault_lake)
    return bucket


@pytest.fixture
def proxy(moto_server):
    """A FaultProxy in front of moto; healthy until a test turns its knobs."""
    host, port = moto_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port), seed=11) as p:
        yield p


def ended(app) -> dict[str, float]:
    return {
        s.labels["code"]: s.value
        for m in app.metrics.streams_ended.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }


# -- flaky storage ---------------------------------------------------------------------------------------

# Faults stay transient: no request meets more in a row than the default retries
# (RETRY_ATTEMPTS 5, six tries) absorb. See FaultProxy's max_in_a_row.
TRANSIENT = {"max_in_a_row": 5}
FLAKY_SPANS = [
    (FIRST, FIRST + 63),
    (FIRST + 10, FIRST + 40),
    (FIRST + 32, FIRST + 71),
    (FIRST + 63, FIRST + 63),
    (FIRST + 50, FIRST + 71),
]


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"fail_rate": 0.2}, id="500-503"),
        pytest.param({"fail_rate": 0.08, "drop_rate": 0.06, "truncate_rate": 0.06, "delay": 0.005}, id="mixed"),
    ],
)
async def test_one_request_in_five_failing_every_stream_delivers_every_ledger_once(proxy, fault_bucket, knobs):
    index = index_by_seq()
    # The server starts healthy (its start-up reads are not retried: one failed request there
    # stops `serve`), then storage turns flaky before any stream: every object is read under faults.
    async with running_app(s3_env(proxy.url, fault_bucket, RETRY_BACKOFF="20ms")) as (app, addr):
        assert app.lake is not None  # started
        proxy.configure(**knobs, **TRANSIENT)
        before = dict(proxy.counts)
        results = await asyncio.gather(*(stream_once(addr, a, b) for a, b in FLAKY_SPANS))
        proxy.reset()
        for (a, b), (got, code, details) in zip(FLAKY_SPANS, results, strict=True):
            assert code == grpc.StatusCode.OK, f"stream {a}-{b} ended {code.name}: {details}"
            check_run(got, a, b, index)
        counts = proxy.counts
        faults = {k: counts[k] - before[k] for k in ("failed", "dropped", "truncated")}
        print(
            f"\n{knobs}: {counts['seen'] - before['seen']} requests, faults {faults}, "
            f"storage errors seen by the service {app.lake.storage.stats['errors']}"
        )
        for kind, rate in (("failed", "fail_rate"), ("dropped", "drop_rate"), ("truncated", "truncate_rate")):
            if knobs.get(rate):
                assert faults[kind] > 0, f"no {kind} request: the test proved nothing ({counts})"
        assert app.lake.storage.stats["errors"] >= sum(faults.values())  # every fault reached the service
        assert ended(app) == {"OK": len(FLAKY_SPANS)}


async def test_one_request_in_five_failing_a_client_waiting_at_the_tip_gets_new_objects(proxy, moto_server, fault_lake):
    bucket = f"flaky-tail-{uuid.uuid4().hex[:8]}"
    keys = sorted(p.relative_to(fault_lake).as_posix() for p in fault_lake.rglob("*.xdr.zst"))[::-1]  # oldest first
    await asyncio.to_thread(_put_s3, moto_server, bucket, fault_lake, [".config.json", *keys[:8]])
    async with running_app(s3_env(proxy.url, bucket, RETRY_BACKOFF="20ms")) as (app, addr):
        proxy.configure(fail_rate=0.2, **TRANSIENT)
        task = asyncio.create_task(stream_once(addr, FIRST + 8, FIRST + 11, timeout=30))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(_put_s3, moto_server, bucket, fault_lake, keys[8:12])
        got, code, details = await asyncio.wait_for(task, 60)
        assert code == grpc.StatusCode.OK, f"{code.name}: {details}"
        assert [s for s, _ in got] == list(range(FIRST + 8, FIRST + 12))


async def test_one_request_in_five_failing_get_ledger_range_answers_every_page(proxy, fault_bucket):
    index = index_by_seq()
    async with running_app(s3_env(proxy.url, fault_bucket, RETRY_BACKOFF="20ms", RANGE_MAX_LEDGERS=2)) as (_, addr):
        proxy.configure(fail_rate=0.2, **TRANSIENT)
        async with Client(addr) as client:
            seen, seq = [], FIRST
            while seq <= FIRST + 63:
                ledgers, latest = await client.ledger_range(seq, FIRST + 64, timeout=30)
                assert latest == LAST
                seen += ledgers
                seq = ledgers[-1][0] + 1
        check_run(seen, FIRST, FIRST + 63, index)


def _put_s3(endpoint: str, bucket: str, folder, keys: list[str]) -> None:
    client = s3_client(endpoint)
    try:
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        for key in keys:
            client.put_object(Bucket=bucket, Key=key, Body=(folder / key).read_bytes())
    finally:
        client.close()


# -- storage down longer than the retry budget ----------------------------------------------------------

# A few objects ahead; the outage opens the storage breaker, which probes again soon after.
OUTAGE = {"RETRY_ATTEMPTS": "2", "RETRY_BACKOFF": "50ms", "READAHEAD_BYTES": "24KiB", "BREAKER_RESET_TIMEOUT": "200ms"}


async def test_storage_down_past_the_retry_budget_ends_streams_unavailable_and_resuming_misses_nothing(
    proxy, fault_bucket
):
    index = index_by_seq()
    cached = FIRST + 39  # the first 40 objects are read before the outage; the rest wait in storage
    async with running_app(s3_env(proxy.url, fault_bucket, **OUTAGE)) as (app, addr):
        check_run(await collect(addr, FIRST, cached), FIRST, cached, index)
        proxy.configure(down=True)
        starts = [FIRST, FIRST + 20, cached]
        t0 = time.monotonic()
        first_legs = await asyncio.gather(*(stream_once(addr, s, LAST) for s in starts))
        took = time.monotonic() - t0
        for start, (got, code, details) in zip(starts, first_legs, strict=True):
            assert code == grpc.StatusCode.UNAVAILABLE, f"from {start}: {code.name} {details}"
            assert "storage failed" in details and "after 3 tries" in details, details
            assert [s for s, _ in got] == list(range(start, cached + 1))  # all that storage could give
        assert proxy.counts["refused"] >= 3  # the next object: three tries (shared by the streams)
        assert took < 10, f"the retry budget is 2 retries of at most 100 ms; the streams took {took:.1f}s"
        # Storage comes back; once the breaker may probe again, each client resumes from its last ledger + 1.
        proxy.configure(down=False)
        await asyncio.sleep(0.3)  # past BREAKER_RESET_TIMEOUT: the next read is the probe, and closes it
        for start, (got, _, _) in zip(starts, first_legs, strict=True):
            rest, code, details = await stream_once(addr, got[-1][0] + 1, LAST)
            assert code == grpc.StatusCode.OK, details
            check_run(got + rest, start, LAST, index)
        assert ended(app) == {"UNAVAILABLE": 3, "OK": 4}


async def test_the_client_resumes_by_itself_across_an_outage_and_misses_nothing(proxy, fault_bucket):
    index = index_by_seq()
    async with running_app(s3_env(proxy.url, fault_bucket, **OUTAGE)) as (app, addr):
        check_run(await collect(addr, FIRST, FIRST + 29), FIRST, FIRST + 29, index)
        proxy.configure(down=True)
        restored_at = float("inf")

        async def outage_ends():
            nonlocal restored_at
            await asyncio.sleep(1.5)
            proxy.configure(down=False)
            restored_at = time.monotonic()

        restore = asyncio.create_task(outage_ends())
        got, arrived = [], {}
        async with Client(addr, max_retries=None, retry_backoff=0.1, retry_backoff_max=0.4) as client:
            async for seq, xdr in client.stream(FIRST, LAST, timeout=60):
                got.append((seq, xdr))
                arrived[seq] = time.monotonic()
            resumes = client.retries
        await restore
        check_run(got, FIRST, LAST, index)
        assert resumes >= 1 and proxy.counts["refused"] > 0
        assert ended(app).get("UNAVAILABLE", 0) == resumes
        # The first ledger the cache did not hold came from storage, so only once storage was back.
        assert arrived[FIRST + 30] >= restored_at
        print(f"\noutage of 1.5s: {resumes} resumes, every ledger once")


# -- clients that go away -------------------------------------------------------------------------------


def _threads() -> list[str]:
    """Live threads of this process, less moto's one-per-request server threads and the
    threads of the lake's pools (started on demand, they stay; bounded by their sizes)."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if "process_request_thread" not in t.name and not t.name.startswith(("lake-", "decode"))
    )


def _live_read_aheads() -> list[ReadAhead]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, ReadAhead)]


def _leftovers(state: dict) -> dict:
    """What of ``state`` is more than an idle app holds."""
    return {k: v for k, v in state.items() if (v > 0 if k in ("tasks", "threads") else v)}


async def _settled(app, baseline_tasks: int, baseline_threads: int, timeout: float = 10.0) -> dict:
    """Wait (bounded) until the app is idle again: what it still holds beyond the baselines."""
    lake = app.lake
    deadline = time.monotonic() + timeout
    while True:
        left = _leftovers(
            {
                "active streams": app.service.active,
                "waiters at the tip": lake.waiters,
                "tip watcher running": lake.watching,
                "fetches in flight": lake.cache.inflight,
                "tasks": len(asyncio.all_tasks()) - baseline_tasks,
                "threads": len(_threads()) - baseline_threads,
            }
        )
        if not left:  # the costly look last (a full garbage collection)
            left = _leftovers({"read-aheads holding tasks": sum(1 for r in _live_read_aheads() if r.pending)})
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


async def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_clients_that_disconnect_mid_stream_leave_no_task_thread_or_buffer(proxy, fault_bucket):
    """Rounds of six streams closed by their clients after two ledgers, while the server
    still reads ahead for them (storage answers after 250 ms), then two closed while they
    wait at the tip. Once their handlers end, the read-aheads of the six run nothing
    (within 100 ms: not left to finish their reads); after a bounded wait the app is back
    where the first round left it (that round also brings every pool to full size): no
    stream, waiter, watcher, read, read-ahead, task or thread more."""
    env = s3_env(proxy.url, fault_bucket, READAHEAD_BYTES="16KiB", STORAGE_MAX_INFLIGHT=16)  # a few objects ahead
    async with running_app(env) as (app, addr):
        lake = app.lake
        assert lake is not None  # started
        proxy.configure(delay=0.25)
        inflight_at_close: list[int] = []  # storage reads still running as each client went

        async def one_round(r: int) -> list:
            async with Client(addr, max_retries=0) as client:

                async def close_after(start: int, n: int) -> None:
                    agen = client.stream(start, 0)
                    for _ in range(n):
                        await agen.__anext__()
                    await agen.aclose()
                    inflight_at_close.append(lake.cache.inflight)

                async def wait_at_tip_then_go() -> None:
                    agen = client.stream(LAST - 1, 0)
                    assert [(await agen.__anext__())[0] for _ in range(2)] == [LAST - 1, LAST]
                    with pytest.raises(asyncio.TimeoutError):  # nothing newer: it waits at the tip
                        await asyncio.wait_for(agen.__anext__(), 0.3)
                    await agen.aclose()

                await asyncio.gather(*(close_after(FIRST + r * 36 + i * 6, 2) for i in range(6)))  # fresh objects
                await _until(lambda: app.service.active == 0, 5)
                await asyncio.sleep(0.1)
                running = [
                    (key, r.task) for ra in _live_read_aheads() for key, r in ra.pending.items() if not r.task.done()
                ]
                await asyncio.gather(wait_at_tip_then_go(), wait_at_tip_then_go())
                return running

        for r in range(3):
            running = await one_round(r)
            assert not running, f"round {r}: read-aheads of closed streams still read objects {running}"
            if r == 0:
                await _settled(app, 10**6, 10**6)
                base_tasks, base_threads, warm_threads = len(asyncio.all_tasks()), len(_threads()), _threads()
                continue
            left = await _settled(app, base_tasks, base_threads)
            assert not left, f"round {r} left behind {left}; threads {_threads()}, after warm-up {warm_threads}"
        assert max(inflight_at_close) > 0, "no client left while the server was reading: the test proved nothing"
        assert lake.cache.bytes <= lake.cache.cap
        assert _live_read_aheads() == []  # not even idle ones: every stream's read-ahead is gone
        assert set(ended(app)) <= {"OK"}  # cancels are no failures
        assert lake.storage.threads <= 16  # pool threads are counted apart: they stay, bounded


# -- the live tail on S3 and GCS, through the real server process -------------------------------------------------


@pytest.mark.parametrize("storage,layout,present,total", [("S3", "64x10", 2, 5), ("GCS", "1x64000", 8, 16)])
def test_objects_written_while_a_client_waits_at_the_tip_are_delivered_in_order(
    storage, layout, present, total, request, tmp_path
):
    """The lake starts with a few objects; the client streams to the end of ``total``
    objects, and each missing object is written only once the client has everything
    before it and waits at the tip. Latency from upload to delivery is printed."""
    index = index_by_seq()
    lpf, fpp = LAYOUTS[layout]
    src = build_lake(tmp_path / "src", layout, runs=("v0",))
    keys = sorted((p.relative_to(src).as_posix() for p in src.rglob("*.xdr.zst")), reverse=True)[:total]
    last = FIRST + total * lpf - 1
    bucket = f"tail-{uuid.uuid4().hex[:8]}"
    if storage == "S3":
        endpoint = request.getfixturevalue("moto_server")
        client = s3_client(endpoint)
        client.create_bucket(Bucket=bucket)
        put = lambda key: client.put_object(Bucket=bucket, Key=key, Body=(src / key).read_bytes())  # noqa: E731 - one line per branch
        env = s3_env(endpoint, bucket)
    else:
        host = request.getfixturevalue("gcs_emulator")
        client = gcs_client(host)
        b = client.create_bucket(bucket)
        put = lambda key: b.blob(key).upload_from_string((src / key).read_bytes())  # noqa: E731 - one line per branch
        env = gcs_lake_env(host, bucket)
    request.addfinalizer(client.close)
    for key in [".config.json", *keys[:present]]:
        put(key)
    env.update(LOG_LEVEL="warning", POLL_INTERVAL="100ms")

    with server_process(env) as srv:
        addr = srv.addr

        async def main():
            received: list[tuple[int, bytes]] = []
            arrived: dict[int, float] = {}
            uploaded: dict[int, float] = {}

            async def consume():
                async with Client(addr, max_retries=0) as c:
                    async for seq, xdr in c.stream(FIRST, last, timeout=90):
                        received.append((seq, xdr))
                        arrived.setdefault((seq - FIRST) // lpf, time.monotonic())

            async def produce():
                for i in range(present, total):
                    tip = FIRST + i * lpf - 1
                    while not received or received[-1][0] < tip:  # the client has all there is...
                        if consumer.done():
                            return
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(0.3)  # ...and waits at the tip
                    assert received[-1][0] == tip
                    await asyncio.to_thread(put, keys[i])
                    uploaded[i] = time.monotonic()

            consumer = asyncio.create_task(consume())
            await asyncio.wait_for(asyncio.gather(consumer, produce()), 120)
            check_run(received, FIRST, last, index)
            lat = [arrived[i] - uploaded[i] for i in range(present, total)]
            print(
                f"\n{storage} live tail: {total - present} objects, upload-to-delivery "
                f"{min(lat) * 1000:.0f}-{max(lat) * 1000:.0f} ms (poll 100 ms)"
            )
            assert max(lat) < 15

        asyncio.run(main())


async def test_start_up_reads_are_retried(proxy, fault_bucket):
    proxy.configure(fail_rate=0.5)
    async with running_app(s3_env(proxy.url, fault_bucket, RETRY_BACKOFF="20ms")) as (_, addr):
        proxy.configure(fail_rate=0)
        got, code, details = await stream_once(addr, FIRST, FIRST + 5, timeout=30)
        assert code == grpc.StatusCode.OK, details
        assert [s for s, _ in got] == list(range(FIRST, FIRST + 6))
    assert proxy.counts["failed"] > 0


def test_serve_with_storage_down_exits_with_one_clear_line(proxy, fault_bucket):
    import subprocess
    import sys

    proxy.configure(down=True)
    try:
        env = {
            **s3_env(proxy.url, fault_bucket, RETRY_ATTEMPTS=1, RETRY_BACKOFF="10ms", STORAGE_TIMEOUT="2s"),
            "PATH": "",
        }
        out = subprocess.run(
            [sys.executable, "-m", "stellar_live_source.cli", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        proxy.configure(down=False)
    assert out.returncode == 3  # storage unavailable after the retries
    err = [line for line in out.stderr.splitlines() if line.startswith("stellar-live-source serve:")]
    assert len(err) == 1 and "storage failed checking the lake after 2 tries" in err[0], out.stderr
    assert "Traceback" not in out.stderr
