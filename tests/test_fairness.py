"""The read a stream needs next never waits behind other streams' read-ahead:
a stream at the tip gets each new object as soon with a backfill running
beside it, one whose read-ahead holds every slot read-ahead may take, as
without it. Were read-ahead allowed every slot, the tip watcher's read would
wait for one (slots.waits counts it) and land 50 to 110 ms later."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from stellar_live_source.client import Client
from stellar_live_source.core.keys import Layout
from stellar_live_source.lake.slots import RESERVED
from stellar_live_source.tools.pack import renumber, write_lake

from .conftest import needs_testdata
from .service_storage_support import run_ledgers
from .service_support import env_for, running_app, until

pytestmark = needs_testdata

BACKLOG = 1000  # objects, one ledger each, from ledger 2: more than the backfill reads meanwhile
LANDINGS = 10
# Every read takes this long, so reads that start together land together; a
# needed read left to wait for a slot would wait for the batch in flight to
# land: on average half a read, twice the 50 ms allowed.
READ_TIME = 0.25
MAX_INFLIGHT = RESERVED + 16
LAYOUT = Layout(1, 64000)


def slowed(get: Callable, seconds: float) -> Callable:
    """Reads of objects that exist take ``seconds``; a missing one is told at
    once (the stream at the tip asks for its next object before it waits)."""

    async def slow_get(key: str, on_size: Callable[[int], None] | None = None) -> bytes:
        data = await get(key, on_size)
        await asyncio.sleep(seconds)
        return data

    return slow_get


async def landing_times(
    lake, lake_dir: Path, later: list[tuple[str, bytes]], tip, staging: Path, backfill: bool
) -> list[float]:
    """Land each object (written aside, renamed into the lake: it appears
    whole) once the tip stream waits for it, at any point of the backfill's
    reads if one runs, and time it until the stream's client has its ledger:
    the tip watcher's next poll, its read, the send."""
    times = []
    for key, data in later:
        await until(lambda: lake.waiters == 1, 10, "the stream waiting at the tip")
        if backfill:
            await asyncio.sleep(random.uniform(0, READ_TIME))
        tmp = staging / key.replace("/", "_")
        tmp.write_bytes(data)
        landed = time.monotonic()
        os.rename(tmp, lake_dir / key)
        seq, _ = await asyncio.wait_for(anext(tip), 10)
        times.append(time.monotonic() - landed)
        assert seq == LAYOUT.parse_key(key)[0]
    return times


async def test_a_backfill_beside_a_stream_at_the_tip_does_not_slow_it(tmp_path):
    lake_dir = tmp_path / "lake"
    ledgers = renumber(run_ledgers("v0"), 2, BACKLOG + 2 * LANDINGS)
    keys = write_lake(lake_dir, ledgers, ledgers_per_file=LAYOUT.ledgers_per_file, files_per_partition=64000)
    later = [(k, (lake_dir / k).read_bytes()) for k in keys[BACKLOG:]]
    for key, _ in later:
        (lake_dir / key).unlink()
    staging = tmp_path / "staging"
    staging.mkdir()
    env = env_for(lake_dir, POLL_INTERVAL="20ms", STORAGE_MAX_INFLIGHT=str(MAX_INFLIGHT))
    async with running_app(env) as (app, addr):
        lake = app.lake
        assert lake is not None  # started
        lake.storage.get = slowed(lake.storage.get, READ_TIME)  # type: ignore[method-assign]
        newest = BACKLOG + 1
        async with Client(addr) as client, contextlib.aclosing(client.stream(newest, 0)) as tip:
            assert (await anext(tip))[0] == newest
            alone = await landing_times(lake, lake_dir, later[:LANDINGS], tip, staging, backfill=False)

            backfilled: list[int] = []

            async def backfill() -> None:
                async for seq, _ in client.stream(2, 0):
                    backfilled.append(seq)

            task = asyncio.create_task(backfill())
            try:
                await until(lambda: lake.slots.ahead_in_use == lake.slots.ahead_limit, 10, "read-ahead at its share")
                saturated = lake.slots.waits
                beside = await landing_times(lake, lake_dir, later[LANDINGS:], tip, staging, backfill=True)
                assert lake.slots.ahead_in_use == lake.slots.ahead_limit
                assert lake.slots.waits == saturated  # no read waited for a slot
                assert len(backfilled) > LANDINGS * 16  # the backfill ran all along
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"\nlanding to client, median of {LANDINGS}: {a * 1000:.0f} ms alone, {b * 1000:.0f} ms beside a backfill")
    assert b - a < 0.05, (alone, beside)
