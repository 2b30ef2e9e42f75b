"""A lake written by someone hostile: entries that are not regular files
(a FIFO with no writer would block a plain open forever, a device, a
directory at an object's key), links in and out of the lake, objects larger
than MAX_OBJECT_BYTES (refused before they are read, folder and remote), a
failed object's buffer not kept alive by its exception, and an object that
hangs (one slot held; the loop, /health and other streams keep working)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stellar_live_source.errors import CorruptObject, ObjectNotFound
from stellar_live_source.lake.lake import Lake
from stellar_live_source.parts import SAMPLE_LAKE

from .service_storage_support import s3_env
from .service_support import env_for, http_get, lake_settings, running_app, status_of, storage_for, until
from .support.endpoints import DUMMY_AWS_ENV
from .support.objectserver import ObjectServer

PART = "FFFFFFFF--0-31"
OBJ = f"{PART}/FFFFFFFB--4-7.xdr.zst"  # ledgers 4-7 of the sample lake (2-13)
OTHER = f"{PART}/FFFFFFF7--8-11.xdr.zst"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(SAMPLE_LAKE, root)
    return root


def folder(root: Path, **kw):
    return storage_for("FS", bucket=str(root), timeout=5, **kw)


async def test_a_fifo_is_refused_without_blocking(lake: Path):
    (lake / OBJ).unlink()
    os.mkfifo(lake / OBJ)  # no writer: open(O_RDONLY) would block forever
    s = folder(lake)
    try:
        began = time.monotonic()
        for _ in range(3):  # the inline path and the pool's both refuse it
            with pytest.raises(CorruptObject, match="FIFO"):
                await asyncio.wait_for(s.get(OBJ), 5)
        assert time.monotonic() - began < 2
    finally:
        await s.close()


async def test_a_device_and_a_directory_at_an_object_key_are_refused(lake: Path):
    (lake / OBJ).unlink()
    os.symlink("/dev/zero", lake / OBJ)  # endless bytes, if it were read
    (lake / OTHER).unlink()
    (lake / OTHER).mkdir()
    s = folder(lake)
    try:
        with pytest.raises(CorruptObject, match="device"):
            await asyncio.wait_for(s.get(OBJ), 5)
        with pytest.raises(CorruptObject, match="directory"):
            await asyncio.wait_for(s.get(OTHER), 5)
        with pytest.raises(ObjectNotFound):  # a partition folder is no object, as on S3
            await s.get(PART)
    finally:
        await s.close()


async def test_links_are_followed_only_within_the_lake(lake: Path, tmp_path: Path):
    data = (lake / OBJ).read_bytes()
    outside = tmp_path / "secret.xdr.zst"
    outside.write_bytes(data)
    (lake / "moved").mkdir()
    (lake / OBJ).rename(lake / "moved" / "obj")
    os.symlink(lake / "moved" / "obj", lake / OBJ)  # inside: followed
    (lake / OTHER).unlink()
    os.symlink(outside, lake / OTHER)  # outside: refused
    os.symlink(tmp_path, lake / "escape")  # a folder outside: not listed into
    s = folder(lake)
    try:
        for _ in range(2):
            assert await s.get(OBJ) == data
            with pytest.raises(CorruptObject, match="outside the lake"):
                await s.get(OTHER)
        keys = await s.list("")
        assert not any(k.startswith("escape/") for k in keys)
    finally:
        await s.close()


async def test_an_oversized_file_is_refused_from_its_stat_unread(lake: Path):
    (lake / OBJ).unlink()
    with open(lake / OBJ, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse: reading it would take the memory
    s = folder(lake)
    s.max_object_bytes = 1 << 20
    try:
        began = time.monotonic()
        with pytest.raises(CorruptObject, match="MAX_OBJECT_BYTES"):
            await s.get(OBJ)
        assert time.monotonic() - began < 1
        assert s.stats["get_bytes"] == 0
    finally:
        await s.close()


def _large_buffers(exc: BaseException, floor: int) -> list[str]:
    """Buffers of ``floor`` bytes or more reachable from an exception: its
    args, its traceback's frames' locals, and those of its cause and context."""
    found, seen = [], set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        values = list(e.args)
        tb = e.__traceback__
        while tb is not None:
            values += [v for k, v in tb.tb_frame.f_locals.items()]
            tb = tb.tb_next
        found += [type(v).__name__ for v in values if isinstance(v, bytes | bytearray | memoryview) and len(v) >= floor]
        todo += [e.__cause__, e.__context__]
    return found


async def test_a_corrupt_object_leaves_no_buffer_in_its_exception(lake: Path):
    (lake / OBJ).write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(300_000))  # zstd magic, then garbage
    settings = lake_settings(max_object_bytes=1 << 20)
    lake_ = await Lake.open(folder(lake), settings)
    try:
        with pytest.raises(CorruptObject) as info:
            await lake_.object(4)
        assert _large_buffers(info.value, 100_000) == []
        # Refused for its size: no buffer either (the stored size is over the cap).
        lake_.storage.max_object_bytes = 1000
        with pytest.raises(CorruptObject, match="MAX_OBJECT_BYTES") as info:
            await lake_.object(8)
        assert _large_buffers(info.value, 1000) == []
    finally:
        await lake_.close()


async def test_the_event_loop_stays_free_while_a_stream_meets_a_fifo(lake: Path):
    (lake / OBJ).unlink()
    os.mkfifo(lake / OBJ)
    async with running_app(env_for(lake)) as (app, addr):
        assert app.bound is not None
        health = f"http://127.0.0.1:{app.bound.health_port}/health"
        streams = [asyncio.create_task(status_of(addr, 2, 13, timeout=10)) for _ in range(3)]
        status, _ = await asyncio.to_thread(http_get, health, 5)
        assert status == 200
        for code, details, n in await asyncio.gather(*streams):
            assert code == grpc.StatusCode.DATA_LOSS and "FIFO" in details and n == 2
        assert (await status_of(addr, 8, 13, timeout=10))[:3:2] == (grpc.StatusCode.OK, 6)  # other objects still served


# -- remote: the tests' object server --

BUCKET = "hostile"


@pytest.fixture
def server(lake: Path, monkeypatch) -> Iterator[ObjectServer]:
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with ObjectServer(auth="s3") as s:
        s.load_folder(BUCKET, lake)
        yield s


async def test_a_remote_object_over_the_cap_is_refused_with_at_most_the_cap_transferred(server: ObjectServer):
    big = os.urandom(4 << 20)
    server.put(BUCKET, OBJ, big)
    sent: list[int] = []
    answer = server.answer

    def spy(method, target, headers):
        status, extra, body = answer(method, target, headers)
        if OBJ.split("/")[-1] in target:
            sent.append(len(body))
        return status, extra, body

    server.answer = spy  # type: ignore[method-assign]
    s = storage_for("S3", bucket=BUCKET, endpoint=server.url, force_path_style=True, timeout=5)
    s.max_object_bytes = 64 << 10
    try:
        with pytest.raises(CorruptObject, match="MAX_OBJECT_BYTES"):
            await s.get(OBJ)
        assert sent == [(64 << 10) + 1]  # asked for one byte past the cap, not 4 MiB
        sizes: list[int] = []
        with pytest.raises(CorruptObject, match=str(len(big))):  # the size from the headers
            await s.get(OBJ, sizes.append)
        assert sizes == []  # refused before anyone was told a size
        assert s.stats["get_bytes"] == 0
        s.max_object_bytes = 8 << 20
        assert bytes(await s.get(OBJ)) == big  # under the cap: whole
    finally:
        await s.close()


async def test_a_hanging_object_holds_one_slot_while_health_and_other_streams_work(server: ObjectServer):
    server.rule(OBJ, "hang")
    env = s3_env(
        server.url,
        BUCKET,
        STORAGE_TIMEOUT="1s",
        RETRY_ATTEMPTS="1",
        RETRY_BACKOFF="10ms",
        BREAKER_FAILURE_THRESHOLD="100",
        LOG_LEVEL="warning",
    )
    async with running_app(env) as (app, addr):
        assert app.lake is not None and app.bound is not None
        hung = asyncio.create_task(status_of(addr, 4, 7, timeout=20))
        await asyncio.sleep(0.2)
        assert app.lake.slots.in_use == 1  # the hung read holds one slot
        began = time.monotonic()
        status, _ = await asyncio.to_thread(http_get, f"http://127.0.0.1:{app.bound.health_port}/health", 5)
        assert status == 200
        code, _, n = await status_of(addr, 8, 13, timeout=10)
        assert (code, n) == (grpc.StatusCode.OK, 6)
        assert time.monotonic() - began < 1.0  # while the hung read still waits
        code, details, n = await hung
        assert code == grpc.StatusCode.UNAVAILABLE and "after 2 tries" in details and n == 0
        assert app.lake.slots.in_use == 0  # released at the deadline
        # A shutdown while the object hangs again is not held up by it.
        again = asyncio.create_task(status_of(addr, 4, 7, timeout=20))
        await until(lambda: app.lake is not None and app.lake.slots.in_use == 1, 5, "the read to hang")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.5  # app.stop(1.0) in running_app, not the 1 s storage deadline twice
    code, _, n = await again
    assert code == grpc.StatusCode.UNAVAILABLE and n == 0
