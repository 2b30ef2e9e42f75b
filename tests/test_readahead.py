"""Read-ahead by bytes, and the lake's limit on storage reads in flight:
a stream holds at most READAHEAD_BYTES (objects fetched and not yet sent,
plus reads in flight), the lake runs at most STORAGE_MAX_INFLIGHT reads at
once, read-ahead never takes the slots kept for needed reads, and with a
hundred reads in flight that land out of order, fail and are retried, no
ledger is lost, repeated or reordered."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from stellar_live_source.errors import StorageError
from stellar_live_source.lake.lake import Lake
from stellar_live_source.lake.slots import RESERVED, Slots
from stellar_live_source.lake.storage import Storage
from stellar_live_source.server.stream import stream_frames
from stellar_live_source.tools.pack import renumber, write_lake

from .conftest import needs_testdata
from .service_storage_support import run_ledgers
from .service_support import lake_settings, storage_for, stream_settings, until

OBJECTS = 600  # one real ledger each, about 5 KB decoded (1 KB stored)


class Instrumented:
    """A storage's reads, each after a random delay (the size told halfway,
    as a remote store's headers would), some failing (half of them after the
    size was told, as a reset mid-body would); counts reads in flight and
    their peak, what the lake's read-ahead held at each start, and reads that
    landed out of order."""

    def __init__(
        self,
        storage: Storage,
        lake: Lake | None = None,
        delay: tuple[float, float] = (0.0, 0.0),
        fail: float = 0.0,
        seed: int = 0,
        on_start: Callable[[str], None] | None = None,
    ):
        self.real = storage.get
        self.lake = lake
        self.delay, self.fail, self.rng, self.on_start = delay, fail, random.Random(seed), on_start
        self.inflight = self.peak = self.ahead_peak = self.failed = self.reordered = 0
        self.last_landed = ""
        storage.get = self.get  # type: ignore[method-assign]  # a spy on one instance, for the test's life

    async def get(self, key: str, on_size: Callable[[int], None] | None = None) -> bytes:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        if self.lake is not None:
            self.ahead_peak = max(self.ahead_peak, self.lake.slots.ahead_in_use)
        if self.on_start is not None:
            self.on_start(key)
        try:
            delay = self.rng.uniform(*self.delay)
            await asyncio.sleep(delay / 2)  # until the headers
            self._maybe_fail(key)
            data = await self.real(key, on_size)  # the size is told here, as with the headers
            await asyncio.sleep(delay / 2)  # the body
            self._maybe_fail(key)
            if key < self.last_landed:
                self.reordered += 1
            self.last_landed = max(key, self.last_landed)
            return data
        finally:
            self.inflight -= 1

    def _maybe_fail(self, key: str) -> None:
        if self.rng.random() < self.fail / 2:
            self.failed += 1
            raise StorageError(f"injected failure reading {key}")


@pytest.fixture(scope="module")
def one_per_object(tmp_path_factory) -> Path:
    """OBJECTS real testnet ledgers from ledger 2, one per object."""
    root = tmp_path_factory.mktemp("one-per-object")
    write_lake(root, renumber(run_ledgers("v0"), 2, OBJECTS), ledgers_per_file=1, files_per_partition=64000)
    return root


async def open_lake(root: Path, **given) -> Lake:
    return await Lake.open(storage_for("FS", bucket=str(root)), lake_settings(**given))


@pytest.fixture(scope="module")
def plain(one_per_object) -> tuple[list[bytes], dict[int, int]]:
    """Every frame of the lake in order, and each object's decoded size, read plainly."""

    async def read() -> list:
        lake = await open_lake(one_per_object)
        try:
            return [await lake.object(fs) for fs in range(2, OBJECTS + 2)]
        finally:
            await lake.close()

    objs = asyncio.run(read())
    return [f for o in objs for f in o.frames], {o.start: o.nbytes for o in objs}


# -- the slots --


async def test_read_ahead_takes_at_most_all_but_the_reserved_slots_and_needed_reads_go_first():
    slots = Slots(RESERVED + 4)
    assert slots.ahead_limit == 4
    for _ in range(4):
        await slots.acquire(ahead=True)
    queued = [asyncio.create_task(slots.acquire(ahead=True)) for _ in range(3)]
    await asyncio.sleep(0)
    assert slots.ahead_in_use == 4 and not any(t.done() for t in queued) and slots.waits == 3
    for _ in range(RESERVED):  # needed reads: at once, while read-ahead waits
        await slots.acquire()
    assert slots.in_use == slots.limit and slots.waits == 3
    needed = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release(ahead=True)  # a read-ahead slot frees: the needed read waiting gets it
    await asyncio.sleep(0)
    assert needed.done() and not any(t.done() for t in queued)
    assert (slots.in_use, slots.ahead_in_use) == (slots.limit, 3)
    slots.release()  # a needed slot frees: read-ahead is under its share, the first in line gets it
    await asyncio.sleep(0)
    assert [t.done() for t in queued] == [True, False, False]
    assert (slots.in_use, slots.ahead_in_use) == (slots.limit, 4)


async def test_a_cancelled_waiter_leaks_no_slot():
    slots = Slots(1)
    assert slots.ahead_limit == 1  # never none
    await slots.acquire()
    gone, granted_then_gone, last = (asyncio.create_task(slots.acquire()) for _ in range(3))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    slots.release()  # to the second waiter, which is cancelled before it runs: it passes the slot on
    granted_then_gone.cancel()
    await asyncio.wait_for(last, 1)
    assert slots.in_use == 1
    slots.release()
    assert slots.in_use == slots.ahead_in_use == 0
    await asyncio.gather(gone, granted_then_gone, return_exceptions=True)


@needs_testdata
async def test_read_ahead_never_passes_its_share_and_a_needed_read_gets_a_slot_at_once(one_per_object):
    lake = await open_lake(one_per_object, max_inflight=RESERVED + 8)
    spy = Instrumented(lake.storage, lake, delay=(0.05, 0.05))
    try:
        ahead = [asyncio.create_task(lake.object(fs, ahead=True)) for fs in range(2, 42)]
        await until(lambda: lake.slots.ahead_in_use == 8, 5, "read-ahead at its share")
        waits = lake.slots.waits
        assert waits == 32  # the rest of the read-ahead queues
        needed = await asyncio.gather(*(lake.object(fs) for fs in range(100, 100 + RESERVED)))
        assert all(o is not None for o in needed)
        assert lake.slots.waits == waits  # none of the needed reads waited
        assert all(o is not None for o in await asyncio.gather(*ahead))
        assert spy.peak == RESERVED + 8 and spy.ahead_peak == 8
        assert lake.slots.in_use == lake.slots.ahead_in_use == 0
    finally:
        await lake.close()


# -- streams --


@needs_testdata
async def test_a_hundred_reads_in_flight_landing_out_of_order_failing_and_retried_lose_nothing(one_per_object, plain):
    """Two streams over the same objects, reads landing out of order, one in
    ten failing (half after the size was told); the lake's limit holds."""
    expected, _ = plain
    lake = await open_lake(one_per_object, retry_attempts=8, retry_backoff=0.005)
    spy = Instrumented(lake.storage, lake, delay=(0.005, 0.06), fail=0.1, seed=1)
    s = stream_settings()

    async def stream(start: int) -> list[bytes]:
        async with contextlib.aclosing(stream_frames(lake, start, OBJECTS + 1, s)) as runs:
            return [f async for run in runs for f in run]

    try:
        a, b = await asyncio.gather(stream(2), stream(2 + OBJECTS // 3))
    finally:
        await lake.close()
    assert a == expected and b == expected[OBJECTS // 3 :]
    assert spy.peak >= 100, f"only {spy.peak} reads in flight at most"
    assert spy.peak <= lake.settings.max_inflight and spy.ahead_peak <= lake.slots.ahead_limit
    assert spy.failed > 20 and spy.reordered > 20, (spy.failed, spy.reordered)


@needs_testdata
@pytest.mark.parametrize("start", [2, 301])
@pytest.mark.parametrize("budget_objects", [4, 40])
async def test_a_stream_holds_at_most_its_budget_counting_reads_in_flight(one_per_object, plain, budget_objects, start):
    """Measured from outside: the decoded bytes of every object a stream has
    asked storage for and not yet received stay under READAHEAD_BYTES plus
    the object the stream waits for, plus one for estimates short of the
    truth (a read counts at the largest object the stream has seen until
    storage tells its size, then at that size times the most any object
    expanded), and read-ahead does fill the budget. Objects here run from 0.5
    to 12 KB, so while a stream starts, having seen few, a little more may be
    asked for."""
    _, sizes = plain
    budget = budget_objects * sum(sizes.values()) // len(sizes)
    largest = max(sizes.values())
    asked: set[int] = set()
    state = {"received": start - 1, "peak": 0, "steady": 0}

    def started(key: str) -> None:
        fs = lake.layout.parse_key(key)[0]
        asked.add(fs)
        held = sum(sizes[x] for x in asked if x > state["received"])
        state["peak"] = max(state["peak"], held)
        if state["received"] >= start + 2 * budget_objects:  # every size the stream will meet met, or about
            state["steady"] = max(state["steady"], held)

    lake = await open_lake(one_per_object, cache_bytes=1)  # nothing kept beside the stream's own
    spy = Instrumented(lake.storage, lake, delay=(0.001, 0.02), seed=2, on_start=started)
    try:
        s = stream_settings(readahead_bytes=budget)
        async with contextlib.aclosing(stream_frames(lake, start, start + 199, s)) as runs:
            async for run in runs:
                state["received"] += len(run)
                await asyncio.sleep(0.002)  # a client slower than storage: read-ahead fills
    finally:
        await lake.close()
    assert budget / 2 <= state["steady"] <= budget + 2 * largest, (state, budget, largest)
    assert state["peak"] <= 1.5 * budget + 2 * largest, (state, budget, largest)
    assert spy.peak >= min(budget_objects, 20)  # reads do run side by side


@needs_testdata
async def test_closing_a_stream_cancels_its_reads_in_flight(one_per_object):
    lake = await open_lake(one_per_object)
    await lake.object(2)  # cached, as is the newest: the stream starts at once
    await lake.newest()
    spy = Instrumented(lake.storage, lake, delay=(10, 10))
    try:
        baseline = len(asyncio.all_tasks())
        runs = stream_frames(lake, 2, 0, stream_settings())
        assert len(await anext(runs)) == 1
        await until(lambda: spy.inflight >= 100, 5, "a hundred reads in flight")
        await runs.aclose()
        await until(lambda: spy.inflight == 0 and len(asyncio.all_tasks()) == baseline, 0.5, "every read cancelled")
        assert lake.cache.inflight == 0 and lake.slots.in_use == 0
    finally:
        await lake.close()
