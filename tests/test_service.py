"""The service end to end over loopback with a real gRPC client, on a lake in
a folder: order, bytes, statuses, the tip, gaps, corruption, cancels, drains."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys

import grpc
import pytest

from stellar_live_source.client import Client
from stellar_live_source.core.keys import Layout

from .conftest import needs_testdata
from .service_support import (
    MAX_OBJECT_BYTES,
    SHARED_LAKE,
    cli_process,
    collect,
    count_gets,
    env_for,
    index_by_seq,
    lake_settings,
    read_lines,
    running_app,
    server_process,
    sha,
    status_of,
    storage_for,
    stream_settings,
    until,
    wait_for_health,
)

pytestmark = needs_testdata

FIRST, LAST = 1410048, 1410367
LAYOUT = Layout(64, 10)


def objects(lake):
    return sorted(p for p in lake.rglob("*.xdr.zst"))


def copy_lake(tmp_path, keep=None):
    """The shared testnet lake copied, optionally keeping only some objects (by file start)."""
    dst = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, dst)
    if keep is not None:
        for p in objects(dst):
            if LAYOUT.parse_key(str(p.relative_to(dst)))[0] not in keep:
                p.unlink()
    return dst


async def test_streams_every_ledger_byte_identical_in_order():
    index = index_by_seq()
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        assert app.lake is not None  # started
        got = await collect(addr, FIRST, LAST)
        assert [s for s, _ in got] == list(range(FIRST, LAST + 1))
        for seq, xdr in got:
            assert sha(xdr) == index[seq]["sha256"], seq
        mid = await collect(addr, 1410100, 1410200)
        assert [s for s, _ in mid] == list(range(1410100, 1410201))
        # every object read from storage once, then shared; the oldest once more at start, past the cache
        assert app.lake.fetches == 5 + 1


@pytest.mark.parametrize(
    "start,end,code,words",
    [
        (0, 0, grpc.StatusCode.INVALID_ARGUMENT, "start_ledger"),
        (1, 5, grpc.StatusCode.INVALID_ARGUMENT, "start_ledger"),
        (1410100, 1410099, grpc.StatusCode.INVALID_ARGUMENT, "end_ledger"),
        (1410000, 0, grpc.StatusCode.OUT_OF_RANGE, "1410048-1410367"),
    ],
)
async def test_bad_requests_end_with_a_status_that_says_why(start, end, code, words):
    async with running_app(env_for(SHARED_LAKE)) as (_, addr):
        got, details, n = await status_of(addr, start, end)
        assert (got, n) == (code, 0)
        assert words in details


async def test_a_start_beyond_the_tip_waits_until_the_deadline():
    async with running_app(env_for(SHARED_LAKE)) as (_, addr):
        async with Client(addr, max_retries=0) as client:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                async for _ in client.stream(LAST + 1, 0, timeout=1.0):
                    pass
            assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_get_ledger_range_pages_and_never_waits():
    index = index_by_seq()
    async with running_app(env_for(SHARED_LAKE, RANGE_MAX_LEDGERS=100)) as (_, addr):
        async with Client(addr) as client:
            seq, seen, pages = FIRST, [], 0
            while seq <= LAST:
                ledgers, latest = await client.ledger_range(seq, LAST + 1, timeout=30)
                assert latest == LAST and 0 < len(ledgers) <= 100
                seen += ledgers
                seq = ledgers[-1][0] + 1
                pages += 1
            assert pages == 4
            assert [s for s, _ in seen] == list(range(FIRST, LAST + 1))
            assert all(sha(x) == index[s]["sha256"] for s, x in seen)
            assert await client.ledger_range(LAST + 5, LAST + 10, timeout=30) == ([], LAST)
            for start, end in ((0, 5), (FIRST, FIRST), (FIRST, 0), (1, 4)):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await client.ledger_range(start, end, timeout=30)
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await client.ledger_range(100, 200, timeout=30)
            assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_get_ledger_range_byte_cap_keeps_at_least_one_ledger():
    async with running_app(env_for(SHARED_LAKE, RANGE_MAX_BYTES=1)) as (_, addr):
        async with Client(addr) as client:
            ledgers, _ = await client.ledger_range(FIRST, FIRST + 50, timeout=30)
            assert [s for s, _ in ledgers] == [FIRST]
    async with running_app(env_for(SHARED_LAKE, RANGE_MAX_BYTES="20KB")) as (_, addr):
        async with Client(addr) as client:
            ledgers, _ = await client.ledger_range(FIRST, FIRST + 50, timeout=30)
            assert 1 < len(ledgers) < 50 and sum(len(x) for _, x in ledgers) <= 20_000


async def test_live_tail_delivers_objects_as_they_land(tmp_path):
    full = copy_lake(tmp_path / "src")
    lake = copy_lake(tmp_path, keep={1410048 // 64 * 64, 1410112})
    async with running_app(env_for(lake)) as (_, addr):

        async def write_later():
            for p in objects(full)[::-1][2:]:  # the three newer objects, oldest first
                await asyncio.sleep(0.3)
                dst = lake / p.relative_to(full)
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_suffix(".tmp")
                tmp.write_bytes(p.read_bytes())
                tmp.rename(dst)

        writer = asyncio.create_task(write_later())
        got = await collect(addr, FIRST, LAST, timeout=30)
        await asyncio.wait_for(writer, 30)
        assert [s for s, _ in got] == list(range(FIRST, LAST + 1))


async def test_a_missing_object_between_others_is_not_found_naming_the_key(tmp_path):
    lake = copy_lake(tmp_path, keep={1410048 // 64 * 64, 1410112, 1410240, 1410304})
    async with running_app(env_for(lake, MISSING_OBJECT_WAIT="500ms")) as (_, addr):
        code, details, n = await status_of(addr, FIRST, 0)
        assert code == grpc.StatusCode.NOT_FOUND
        assert LAYOUT.object_key(1410176) in details
        assert n == 1410176 - FIRST  # every ledger before the gap, none after


async def test_a_corrupt_object_is_data_loss_naming_key_and_offset(tmp_path):
    lake = copy_lake(tmp_path)
    victim = lake / LAYOUT.object_key(1410112)
    import zstandard

    raw = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(victim.read_bytes()))
    raw[5000] ^= 0xFF
    victim.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    async with running_app(env_for(lake)) as (app, addr):
        assert app.lake is not None  # started
        reads = count_gets(app.lake.storage)
        code, details, n = await status_of(addr, FIRST, 0)
        assert code == grpc.StatusCode.DATA_LOSS
        assert LAYOUT.object_key(1410112) in details and "byte" in details
        assert n == 1410112 - FIRST
        assert reads[LAYOUT.object_key(1410112)] == 2  # read twice before it was called corrupt


async def test_cancelled_streams_are_not_failures_and_leave_nothing_behind():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        baseline = len(asyncio.all_tasks())
        async with Client(addr) as client:
            for i in range(200):
                agen = client.stream(FIRST + i % 300, 0)
                await agen.__anext__()
                await agen.aclose()
            got = await collect(addr, FIRST, FIRST + 100)
            assert len(got) == 101
        await until(lambda: app.service.active == 0 and len(asyncio.all_tasks()) <= baseline + 1, 5, "idle again")
        assert app.service.active == 0
        assert len(asyncio.all_tasks()) <= baseline + 1
        ended = {
            s.labels["code"]: s.value
            for m in app.metrics.streams_ended.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }
        assert set(ended) <= {"OK"}


async def test_draining_ends_streams_with_unavailable():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        lake = app.lake
        assert lake is not None  # started
        async with Client(addr, max_retries=0) as client:
            received = []

            async def consume():
                async for seq, _ in client.stream(LAST - 2, 0):
                    received.append(seq)

            task = asyncio.create_task(consume())
            await until(lambda: len(received) == 3, 10, "three ledgers")
            await until(lambda: lake.waiters == 1, 10, "the stream waiting at the tip")
            app.service.draining.set()
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await asyncio.wait_for(task, 10)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert received == [LAST - 2, LAST - 1, LAST]


async def test_fan_out_fetches_each_object_once():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        assert app.lake is not None  # started
        results = await asyncio.gather(*(collect(addr, FIRST, LAST) for _ in range(8)))
        assert all(len(r) == LAST - FIRST + 1 for r in results)
        assert app.lake.fetches == 5 + 1  # as above: each object once, and the oldest's lookup at start


def test_sigterm_drains_the_live_streams_of_client_processes_then_exits_0():
    """Two `stream` commands wait at the tip in their own processes; SIGTERM
    ends both streams with UNAVAILABLE (each client, allowed no retry, exits 3
    saying why) and the server exits 0."""
    env = env_for(SHARED_LAKE)
    with server_process(env) as srv:
        got = asyncio.run(collect(srv.addr, FIRST, FIRST + 70))
        assert [s for s, _ in got] == list(range(FIRST, FIRST + 71))
        clients = [
            cli_process("stream", "--server", srv.addr, "--from", str(LAST - 1), "--max-retries", "0") for _ in range(2)
        ]
        try:
            for client in clients:
                lines = read_lines(client, 2, timeout=30)
                assert [line.split()[0] for line in lines] == [str(LAST - 1), str(LAST)]
            wait_for_health(srv, lambda h: h["active_streams"] == 2, timeout=30)  # both wait at the tip
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(20) == 0
            for client in clients:
                _, err = client.communicate(timeout=20)
                assert client.returncode == 3, err
                assert err.count("\n") == 1 and "UNAVAILABLE" in err and "shutting down" in err, err
                assert "Traceback" not in err
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                    client.communicate()
        assert srv.proc.stdout is not None  # (piped)
        assert "signal received: draining" in srv.proc.stdout.read()
    out = subprocess.run(
        [sys.executable, "-m", "stellar_live_source.cli", "latest"],
        env={**env, "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == str(LAST), out.stderr


async def test_the_manifest_decides_the_layout_and_contradictions_fail_naming_both():
    from stellar_live_source.errors import LakeConfigError

    from .conftest import LEDGERS

    lake = LEDGERS / "testnet" / "datastore_testbucket_997-999"  # 1 ledger per file, 64000 per partition
    index = index_by_seq()
    async with running_app(env_for(lake)) as (app, addr):
        assert app.lake is not None  # started
        got = await collect(addr, 997, 999)
        assert [sha(x) for _, x in got] == [index[s]["sha256"] for s in (997, 998, 999)]
        assert (app.lake.layout.ledgers_per_file, app.lake.layout.files_per_partition) == (1, 64000)
    with pytest.raises(LakeConfigError, match="LEDGERS_PER_FILE=64 contradicts the lake manifest's ledgersPerBatch=1"):
        async with running_app(env_for(lake, LEDGERS_PER_FILE=64)):
            pass


async def test_read_ahead_stops_at_the_end_ledger():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        lake = app.lake
        assert lake is not None  # started
        started = lake.fetches  # the newest object (the tip) and the oldest (its first ledger)
        await collect(addr, FIRST, FIRST + 10)
        await until(lambda: lake.cache.inflight == 0, 10, "every read started has landed")
        assert (started, lake.fetches - started) == (2, 1)  # the stream's one object; nothing past the end


async def test_objects_larger_than_the_cache_are_read_once_per_stream():
    """Nothing is cached, yet the object that answers whether the start is in
    range is the one the stream sends from, and the newest object, read at
    start to learn the tip, is the one a stream at the tip sends from: none is
    read a second time."""
    async with running_app(env_for(SHARED_LAKE, CACHE_BYTES="64KiB")) as (app, addr):
        assert app.lake is not None  # started
        reads = count_gets(app.lake.storage)
        keys = [LAYOUT.object_key(s) for s in range(FIRST // 64 * 64, LAST + 1, 64)]
        got = await collect(addr, LAST - 3, LAST)  # a stream that starts in the newest object
        assert [s for s, _ in got] == list(range(LAST - 3, LAST + 1))
        assert dict(reads) == {}
        got = await collect(addr, FIRST + 5, LAST)
        assert [s for s, _ in got] == list(range(FIRST + 5, LAST + 1))
        assert dict(reads) == {k: 1 for k in keys[:-1]} and len(app.lake.cache) == 0


@pytest.mark.parametrize("budget_objects,most_fetched", [(1, 2), (2, 3)])
async def test_read_ahead_counts_fetches_still_running_against_its_byte_budget(budget_objects, most_fetched):
    """A hundred reads at once must not start when the budget holds one or two
    objects: each read in flight counts at the largest object seen, and one
    landed at its size (the budget is a multiple of the largest of the five
    objects, so no other fits beside the ones it holds)."""
    from stellar_live_source.lake.lake import Lake
    from stellar_live_source.server.stream import stream_frames

    lake = await Lake.open(storage_for("FS", bucket=str(SHARED_LAKE)), lake_settings(cache_bytes=1))
    try:
        objs = [await lake.object(fs) for fs in range(FIRST, LAST + 1, 64)]
        size = max(o.nbytes for o in objs if o is not None)
        await lake.newest()  # read once, before counting
        before = lake.fetches
        s = stream_settings(readahead_bytes=budget_objects * size)
        async with contextlib.aclosing(stream_frames(lake, FIRST, LAST, s)) as runs:
            first = await anext(runs)
            await asyncio.sleep(0)  # the read-ahead's tasks take their first step: their reads begin
            await until(lambda: lake.cache.inflight == 0, 10, "the reads it started have landed")
            assert len(first) == 64
            assert lake.fetches - before == most_fetched  # the object sent, and what the budget holds
            assert [len(r) async for r in runs] == [64] * 4  # and the rest of the stream is all there
    finally:
        await lake.close()


async def test_both_extensions_in_one_lake(tmp_path):
    lake = copy_lake(tmp_path)
    for p in objects(lake)[2:]:  # the two newest objects keep the new extension, the rest get the old
        p.rename(p.with_name(p.name.replace(".xdr.zst", ".xdr.zstd")))
    index = index_by_seq()
    async with running_app(env_for(lake)) as (_, addr):
        got = await collect(addr, FIRST, LAST)
        assert [sha(x) for _, x in got] == [index[s]["sha256"] for s in range(FIRST, LAST + 1)]


async def test_a_ledger_missing_from_its_object_is_not_found_naming_key_and_bounds(tmp_path):
    import zstandard

    from stellar_live_source.core import decode
    from stellar_live_source.tools.pack import batch_xdr

    lake = copy_lake(tmp_path)
    key = LAYOUT.object_key(1410112)
    d = decode.decode_object((lake / key).read_bytes(), max_size=MAX_OBJECT_BYTES)
    kept = [bytes(d.xdr(i)) for i in range(len(d.ledgers)) if d.ledgers[i].seq <= 1410150]
    (lake / key).write_bytes(zstandard.ZstdCompressor().compress(batch_xdr(1410112, 1410150, kept)))
    async with running_app(env_for(lake, MISSING_OBJECT_WAIT="300ms")) as (_, addr):
        code, details, n = await status_of(addr, FIRST, 0)
        assert code == grpc.StatusCode.NOT_FOUND
        assert f"ledger 1410151 is missing from object {key}, which holds 1410112-1410150" == details
        assert n == 1410151 - FIRST
