"""The shared object cache: a byte cap, LRU order, one fetch per object however
many streams ask, and a requester's cancel never cancels the others' fetch,
while the last requester's does."""

from __future__ import annotations

import asyncio

import pytest

from stellar_live_source.lake.objects import LakeObject, ObjectCache


def obj(start: int, size: int) -> LakeObject:
    return LakeObject(f"k{start}", start, start, [b"x" * size], b"", b"", size)


async def test_cap_and_lru_order():
    cache = ObjectCache(100)
    for i, size in enumerate((40, 40, 40)):
        cache.put(i, obj(i, size))
    assert cache.bytes == 80 and cache.peek(0) is None  # the oldest went
    cache.peek(1)  # 1 is now the most recent
    cache.put(3, obj(3, 40))
    assert cache.peek(2) is None and cache.peek(1) is not None and cache.bytes == 80


async def test_an_object_larger_than_the_cache_is_handed_out_but_not_kept():
    cache = ObjectCache(100)
    big = obj(7, 500)

    async def fetch():
        return big

    assert await cache.get(7, fetch) is big
    assert len(cache) == 0 and cache.bytes == 0


async def test_concurrent_requests_share_one_fetch_and_survive_a_cancel():
    cache = ObjectCache(1000)
    calls = 0
    release = asyncio.Event()

    async def fetch():
        nonlocal calls
        calls += 1
        await release.wait()
        return obj(5, 10)

    waiters = [asyncio.create_task(cache.get(5, fetch)) for _ in range(10)]
    await asyncio.sleep(0.01)
    waiters[0].cancel()  # the first requester (whose task runs the fetch) goes away
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert calls == 1 and all(r is results[0] for r in results)
    assert cache.peek(5) is results[0]


async def test_missing_objects_and_errors_are_not_cached():
    cache = ObjectCache(1000)

    async def missing():
        return None

    async def broken():
        raise OSError("boom")

    assert await cache.get(1, missing) is None and len(cache) == 0
    with pytest.raises(OSError):
        await cache.get(2, broken)
    assert len(cache) == 0 and not cache._inflight


async def test_the_fetch_is_cancelled_once_every_requester_has_gone():
    cache = ObjectCache(1000)
    started, cancelled = [], []

    async def fetch():
        started.append(1)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
        return obj(5, 10)

    waiters = [asyncio.create_task(cache.get(5, fetch)) for _ in range(3)]
    await asyncio.sleep(0.01)
    for w in waiters:
        w.cancel()
        await asyncio.sleep(0.01)
        assert cancelled == ([1] if w is waiters[-1] else [])  # only when the last has gone
    assert cache.inflight == 0 and started == [1]

    fresh = obj(5, 10)

    async def quick():
        return fresh

    assert await cache.get(5, quick) is fresh  # a new request starts a new fetch
