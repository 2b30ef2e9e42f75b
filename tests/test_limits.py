"""Limits and fairness (issue 13): the greedy client, per-IP identity, the
token buckets' bounded memory, the per-stream pace, range calls counted as
streams and capped by RANGE_INFLIGHT_BYTES, malformed requests and starts too
far ahead of the lake."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest

from stellar_live_source import api
from stellar_live_source.server.door import RETRY_AFTER, ByteBudget, TokenBuckets

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, env_for, running_app, until
from .test_auth import channel, counter, scrape

FIRST, LAST = 1410048, 1410367
KEY_A, KEY_B = "sk-greedy-aaaaaaaaaaaaaaaa", "sk-polite-bbbbbbbbbbbbbbbb"


# -- units --
def test_token_bucket_refills_and_refuses():
    now = [0.0]
    b = TokenBuckets(lambda: now[0])
    assert [b.take("a", 2.0, 3) for _ in range(3)] == [0, 0, 0]
    assert b.take("a", 2.0, 3) == pytest.approx(0.5)
    assert b.take("b", 2.0, 3) == 0  # another client has its own bucket
    now[0] += 0.5
    assert b.take("a", 2.0, 3) == 0
    assert b.take("a", 2.0, 3) > 0


def test_token_buckets_are_evicted_when_idle_and_bounded():
    now = [0.0]
    b = TokenBuckets(lambda: now[0], idle=600, most=100)
    for i in range(1000):
        b.take(f"ip{i}", 1.0, 5)
        assert len(b) <= 100
    assert len(b) == 100
    now[0] += 601
    b.take("fresh", 1.0, 5)
    assert len(b) == 1  # every idle bucket gone


async def test_byte_budget_waits_first_come_first_served():
    budget = ByteBudget(100)
    await budget.acquire(80)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await budget.acquire(n)
        order.append(name)

    t1 = asyncio.ensure_future(take("first", 50))
    await asyncio.sleep(0)
    t2 = asyncio.ensure_future(take("second", 10))  # would fit, but waits its turn behind first
    await asyncio.sleep(0.01)
    assert order == []
    budget.release(80)
    await asyncio.gather(t1, t2)
    assert order == ["first", "second"] and budget.used == 60
    budget.release(60)
    await budget.acquire(500)  # larger than the cap: alone, it still runs
    assert budget.used == 500


# -- over loopback --
def keys_env(tmp_path: Path, **extra: object) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.write_text(f"greedy:{KEY_A}\npolite:{KEY_B}\n")
    return env_for(
        SHARED_LAKE, API_KEY_REQUIRED="true", API_KEYS_FILE=str(keys), ALLOW_INSECURE_API_KEYS="true", **extra
    )


def stream_req(start: int, end: int = 0) -> bytes:
    return api.StreamLedgersRequest(start_ledger=start, end_ledger=end).SerializeToString()


def range_req(start: int, end: int) -> bytes:
    return api.GetLedgerRangeRequest(start_ledger=start, end_ledger=end).SerializeToString()


def retry_after(err: grpc.aio.AioRpcError) -> int:
    return int(dict(err.trailing_metadata() or ())[RETRY_AFTER])


@needs_testdata
async def test_greedy_client_cannot_stop_another(tmp_path):
    env = keys_env(tmp_path, MAX_STREAMS_PER_CLIENT=2, RATE_LIMIT_RPS=5, RATE_LIMIT_BURST=4)
    async with running_app(env) as (app, addr), channel(addr) as ch:
        stream = ch.unary_stream(api.STREAM_METHOD)
        greedy = (("authorization", f"Bearer {KEY_A}"),)
        held: list[grpc.aio.UnaryStreamCall] = []
        refused: list[grpc.aio.AioRpcError] = []
        deadline = time.monotonic() + 5
        for _ in range(20):  # bounded by count and time
            if time.monotonic() > deadline:
                break
            call = stream(stream_req(LAST - 1), metadata=greedy, timeout=30)  # to the tip, then waits there
            try:
                await call.read()
                held.append(call)
            except grpc.aio.AioRpcError as err:
                refused.append(err)
        assert len(held) == 2
        assert refused and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
        assert all(retry_after(e) > 0 for e in refused)
        messages = {e.details() or "" for e in refused}
        assert any("MAX_STREAMS_PER_CLIENT" in m for m in messages)
        assert any("RATE_LIMIT_RPS" in m for m in messages)
        assert app.door.open_calls == {"greedy": 2}

        polite = (("x-api-key", KEY_B),)
        got = [m async for m in stream(stream_req(FIRST, FIRST + 99), metadata=polite, timeout=30)]
        assert len(got) == 100

        text = await asyncio.to_thread(scrape, app.bound.metrics_port if app.bound else None)
        by_limit = counter(text, "stellar_live_source_refusals_total", limit="max_streams_per_client")
        by_rate = counter(text, "stellar_live_source_refusals_total", limit="rate_limit")
        assert by_limit + by_rate == len(refused) and by_limit > 0 and by_rate > 0
        assert "greedy" not in text and "polite" not in text  # a client is never a metric label

        for call in held:
            call.cancel()
        await until(lambda: not app.door.open_calls, 5, "cancelled streams released")


@needs_testdata
async def test_a_client_without_a_key_is_its_ip_address():
    env = env_for(SHARED_LAKE, RATE_LIMIT_RPS=1, RATE_LIMIT_BURST=2)
    async with running_app(env) as (app, addr):
        codes = []
        for _ in range(3):  # a new channel each time: reconnecting does not escape the limit
            async with channel(addr) as ch:
                try:
                    await ch.unary_unary(api.RANGE_METHOD)(range_req(FIRST, FIRST + 2), timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
                    assert "RATE_LIMIT_RPS" in (err.details() or "") and retry_after(err) > 0
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert "127.0.0.1" in app.door.buckets._b


@needs_testdata
async def test_range_calls_count_against_the_stream_limits():
    env = env_for(SHARED_LAKE, MAX_CONCURRENT_STREAMS=1)
    async with running_app(env) as (app, addr), channel(addr) as ch:
        call = ch.unary_stream(api.STREAM_METHOD)(stream_req(LAST - 1), timeout=30)
        await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(api.RANGE_METHOD)(range_req(FIRST, FIRST + 2), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAX_CONCURRENT_STREAMS" in (err.value.details() or "") and retry_after(err.value) > 0
        call.cancel()
        await until(lambda: app.service.active == 0, 5, "the stream released")
        await ch.unary_unary(api.RANGE_METHOD)(range_req(FIRST, FIRST + 2), timeout=10)

    env = env_for(SHARED_LAKE, MAX_STREAMS_PER_CLIENT=1)
    async with running_app(env) as (app, addr), channel(addr) as ch:
        call = ch.unary_stream(api.STREAM_METHOD)(stream_req(LAST - 1), timeout=30)
        await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(api.RANGE_METHOD)(range_req(FIRST, FIRST + 2), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAX_STREAMS_PER_CLIENT" in (err.value.details() or "")
        call.cancel()


@needs_testdata
async def test_range_inflight_bytes_waits_then_proceeds():
    env = env_for(SHARED_LAKE, RANGE_INFLIGHT_BYTES="1MiB")
    async with running_app(env) as (app, addr), channel(addr) as ch:
        budget = app.service.range_budget
        await budget.acquire(budget.cap)  # someone else's responses fill the cap
        rng = ch.unary_unary(api.RANGE_METHOD, response_deserializer=api.GetLedgerRangeResponse.FromString)
        task = asyncio.ensure_future(rng(range_req(FIRST, FIRST + 10), timeout=20))
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting its turn
        with pytest.raises(grpc.aio.AioRpcError) as err:  # one that cannot wait long enough
            await rng(range_req(FIRST, FIRST + 10), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        budget.release(budget.cap)
        resp = await task
        assert len(resp.ledgers) == 10
        await until(lambda: budget.used == 0, 5, "the response's bytes released once sent")


@needs_testdata
async def test_pace_limit_per_stream():
    async with running_app(env_for(SHARED_LAKE, MAX_LEDGERS_PER_SECOND_PER_STREAM=100)) as (_, addr):
        async with channel(addr) as ch:
            began = time.monotonic()
            got = [m async for m in ch.unary_stream(api.STREAM_METHOD)(stream_req(FIRST, FIRST + 59), timeout=30)]
            took = time.monotonic() - began
    assert len(got) == 60
    assert took >= 0.45  # 60 ledgers at 100/s: about 0.6 s (a lower bound only)


@needs_testdata
async def test_malformed_requests_are_invalid_argument_without_a_traceback(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        for garbage in (b"\xff\xff\xff\xff", b"\x08", b"\x0a\x05ab"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in ch.unary_stream(api.STREAM_METHOD)(garbage, timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "StreamLedgersRequest" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary(api.RANGE_METHOD)(garbage, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "GetLedgerRangeRequest" in (err.value.details() or "")
        # a field out of bounds: named
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in ch.unary_stream(api.STREAM_METHOD)(stream_req(1), timeout=5):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "start_ledger" in (err.value.details() or "")
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]
    ours = [r for r in caplog.records if r.name.startswith("stellar_live_source") and "malformed" in r.getMessage()]
    assert len(ours) == 6 and all(r.levelno == logging.DEBUG for r in ours)  # once per call, at debug


@needs_testdata
async def test_start_too_far_ahead_is_out_of_range():
    async with running_app(env_for(SHARED_LAKE, MAX_START_AHEAD_LEDGERS=10)) as (app, addr):
        async with channel(addr) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in ch.unary_stream(api.STREAM_METHOD)(stream_req(LAST + 11), timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "MAX_START_AHEAD_LEDGERS" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:  # within reach: it waits at the tip
                async for _ in ch.unary_stream(api.STREAM_METHOD)(stream_req(LAST + 10), timeout=0.5):
                    pass
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@needs_testdata
async def test_new_limits_apply_to_new_calls(tmp_path):
    import dataclasses

    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        call = ch.unary_stream(api.STREAM_METHOD)(stream_req(LAST - 1), timeout=30)
        await call.read()
        config = app.config
        new = dataclasses.replace(config, limits=dataclasses.replace(config.limits, max_streams_per_client=1))
        app.door.update(new)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(api.RANGE_METHOD)(range_req(FIRST, FIRST + 2), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await call.read() != grpc.aio.EOF  # the open stream keeps going
        call.cancel()
