"""The storage circuit breaker (lake.breaker) on its own, with a fake clock,
and through the lake's retries: states, the threshold, what is not a
failure (a missing object, a cancel), the single half-open probe, recovery,
live settings; and that retries are jittered, not in lockstep."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from stellar_live_source.errors import ObjectNotFound, RetriesExhausted, StorageError, StorageUnavailable, Unavailable
from stellar_live_source.lake.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from stellar_live_source.lake.lake import retrying
from stellar_live_source.ops.config import load

from .service_support import lake_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fail() -> int:
    raise RetriesExhausted("storage failed reading X after 6 tries: 503 Slow Down")


async def ok() -> int:
    return 1


async def missing() -> int:
    raise ObjectNotFound("no object X")


async def cancelled() -> int:
    raise asyncio.CancelledError


async def failures(b: Breaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(RetriesExhausted):
            await b.call(fail)


async def test_opens_after_the_threshold_of_consecutive_failures_and_fails_fast_naming_the_cause():
    clock = Clock()
    b = Breaker("s3://lake/", threshold=3, reset_timeout=10, clock=clock)
    seen: list[str] = []
    b.watch(lambda br: seen.append(br.state_name))
    await failures(b, 2)
    assert await b.call(ok) == 1  # a success resets the count
    await failures(b, 2)
    assert b.state == CLOSED
    await failures(b, 1)
    assert b.state == OPEN and seen == ["open"]
    calls = 0

    async def counted() -> int:
        nonlocal calls
        calls += 1
        return 1

    with pytest.raises(StorageUnavailable) as info:
        await b.call(counted)
    assert calls == 0  # storage was not asked
    assert isinstance(info.value, Unavailable)
    assert "s3://lake/" in str(info.value) and "503 Slow Down" in str(info.value)  # the cause
    clock.now += 9.9
    with pytest.raises(StorageUnavailable):
        await b.call(counted)
    assert calls == 0


async def test_missing_objects_and_cancels_are_not_failures():
    b = Breaker("fs", threshold=2, reset_timeout=10, clock=Clock())
    for _ in range(10):
        with pytest.raises(ObjectNotFound):
            await b.call(missing)
        with pytest.raises(asyncio.CancelledError):
            await b.call(cancelled)
    assert b.state == CLOSED and b.failures == 0
    # A stream cancelled while its read waits (the Go original counted these, then deadlocked).
    hang = asyncio.Event()
    tasks = [asyncio.create_task(b.call(hang.wait)) for _ in range(10)]
    await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert b.state == CLOSED and b.failures == 0
    # Not-found answers break a run of failures: storage answered.
    await failures(b, 1)
    with pytest.raises(ObjectNotFound):
        await b.call(missing)
    await failures(b, 1)
    assert b.state == CLOSED


async def test_half_open_admits_one_probe_whose_success_closes():
    clock = Clock()
    b = Breaker("gcs", threshold=1, reset_timeout=5, clock=clock)
    await failures(b, 1)
    assert b.state == OPEN
    clock.now += 5
    gate = asyncio.Event()

    async def probe() -> int:
        await gate.wait()
        return 7

    first = asyncio.create_task(b.call(probe))
    await asyncio.sleep(0)
    assert b.state == HALF_OPEN
    for _ in range(3):  # others fail fast while the probe is out
        with pytest.raises(StorageUnavailable, match="probe"):
            await b.call(ok)
    gate.set()
    assert await first == 7
    assert b.state == CLOSED and b.failures == 0
    assert await b.call(ok) == 1


async def test_a_failed_probe_opens_again_for_another_reset_timeout():
    clock = Clock()
    b = Breaker("gcs", threshold=2, reset_timeout=5, clock=clock)
    await failures(b, 2)
    clock.now += 5
    await failures(b, 1)  # the probe
    assert b.state == OPEN
    clock.now += 4
    with pytest.raises(StorageUnavailable):
        await b.call(ok)
    clock.now += 1
    assert await b.call(ok) == 1
    assert b.state == CLOSED


async def test_a_cancelled_probe_frees_the_probe_for_the_next_operation():
    clock = Clock()
    b = Breaker("fs", threshold=1, reset_timeout=1, clock=clock)
    await failures(b, 1)
    clock.now += 1
    task = asyncio.create_task(b.call(asyncio.Event().wait))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert b.state == HALF_OPEN
    assert await b.call(ok) == 1  # the next one is the probe
    assert b.state == CLOSED


async def test_settings_change_live_and_from_a_config():
    clock = Clock()
    b = Breaker("fs", threshold=5, reset_timeout=30, clock=clock)
    b.configure(threshold=2, reset_timeout=1)
    await failures(b, 2)
    assert b.state == OPEN
    clock.now += 1
    assert await b.call(ok) == 1
    b.update(load({"BREAKER_FAILURE_THRESHOLD": "7", "BREAKER_RESET_TIMEOUT": "3s"}))
    assert (b.threshold, b.reset_timeout) == (7, 3.0)


async def test_the_lake_retries_count_as_one_operation_and_stop_while_open():
    settings = lake_settings(retry_attempts=2, retry_backoff=0.001, breaker_failure_threshold=2)
    b = Breaker("fs", settings.breaker_failure_threshold, 60)
    tries = 0

    async def broken() -> bytes:
        nonlocal tries
        tries += 1
        raise StorageError("connection reset")

    for _ in range(2):
        with pytest.raises(RetriesExhausted):
            await retrying("reading X", broken, settings, b)
    assert tries == 6 and b.state == OPEN  # two operations of three tries each
    with pytest.raises(StorageUnavailable, match="connection reset"):
        await retrying("reading X", broken, settings, b)
    assert tries == 6


async def test_concurrent_retries_are_jittered_not_in_lockstep():
    """50 operations failing at the same moment retry at times spread over the
    backoff window (full jitter), not all at once."""
    settings = dataclasses.replace(lake_settings(), retry_attempts=1, retry_backoff=0.2)
    began = time.monotonic()
    second: list[float] = []

    def op():
        tries = 0

        async def call() -> int:
            nonlocal tries
            tries += 1
            if tries == 1:
                raise StorageError("503")
            second.append(time.monotonic() - began)
            return 1

        return call

    await asyncio.gather(*(retrying("x", op(), settings) for _ in range(50)))
    assert len(second) == 50
    second.sort()
    spread = second[-1] - second[0]
    assert spread > 0.1  # over half the 0.2 s window
    # No burst: at most a fifth of them within any 10 ms.
    assert max(sum(1 for t in second if a <= t < a + 0.01) for a in second) <= 10
