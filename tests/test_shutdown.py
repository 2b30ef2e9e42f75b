"""Shutdown checked from the clients' side (issue 13, lifecycle): streams at
the tip, bounded streams and a client that never reads each get every ledger
up to their last, then UNAVAILABLE; none hangs; the server exits 0 within
GRACEFUL_SHUTDOWN_TIMEOUT; a second signal exits at once with status 1."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import grpc
import pytest

from stellar_live_source import api

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, env_for, server_process, wait_for_health

pytestmark = needs_testdata

FIRST, LAST = 1410048, 1410367


def stream_call(addr: str, start: int, end: int, **options: Any) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.insecure_channel(addr, options=[("grpc.max_receive_message_length", -1), *options.items()])
    method = channel.unary_stream(
        api.STREAM_METHOD,
        request_serializer=api.StreamLedgersRequest.SerializeToString,
        response_deserializer=api.RawLedger.FromString,
    )
    return channel, method(api.StreamLedgersRequest(start_ledger=start, end_ledger=end), timeout=60)


async def read_all(call: Any, received: list[int], pause: float = 0.0) -> grpc.StatusCode:
    """Read until the server ends the call; its status."""
    try:
        while (msg := await call.read()) is not grpc.aio.EOF:
            received.append(msg.sequence)
            if pause:
                await asyncio.sleep(pause)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def wait_exit(proc: Any, timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < timeout:
        await asyncio.sleep(0.02)
    return proc.poll(), time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_live_bounded_and_slow_reader_streams_then_exits_0_within_the_grace(sig):
    grace = 2.0
    with server_process(env_for(SHARED_LAKE, GRACEFUL_SHUTDOWN_TIMEOUT=f"{grace}s")) as srv:

        async def scenario() -> None:
            live: list[int] = []
            bounded: list[int] = []
            slow: list[int] = []
            live_channel, live_call = stream_call(srv.addr, LAST - 2, 0)
            # No BDP probing: the window stays small, so the server's writes wait for the reader.
            bounded_channel, bounded_call = stream_call(srv.addr, FIRST, LAST, **{"grpc.http2.bdp_probe": 0})
            slow_channel, slow_call = stream_call(srv.addr, FIRST, 0, **{"grpc.http2.bdp_probe": 0})
            live_task = asyncio.create_task(read_all(live_call, live))
            bounded_task = asyncio.create_task(read_all(bounded_call, bounded, pause=0.05))
            slow.append((await slow_call.read()).sequence)  # then it reads nothing more until the end
            await asyncio.sleep(1.0)
            assert wait_for_health(srv, lambda h: h["active_streams"] == 3)
            assert live == [LAST - 2, LAST - 1, LAST] and 0 < len(bounded) < 100

            srv.proc.send_signal(sig)
            code, took = await wait_exit(srv.proc, grace + 10)
            assert code == 0 and took < grace + 1.5, (code, took)

            slow_code = await asyncio.wait_for(read_all(slow_call, slow), 10)
            codes = await asyncio.wait_for(asyncio.gather(live_task, bounded_task), 10)
            for channel in (live_channel, bounded_channel, slow_channel):
                await channel.close()
            assert [*codes, slow_code] == [grpc.StatusCode.UNAVAILABLE] * 3
            assert live == [LAST - 2, LAST - 1, LAST]
            for got in (bounded, slow):  # every ledger up to its last, none skipped or repeated
                assert got == list(range(FIRST, FIRST + len(got)))
            assert len(bounded) < LAST - FIRST + 1

        asyncio.run(scenario())
        assert srv.proc.stdout is not None
        assert "signal received: draining" in srv.proc.stdout.read()


def test_a_second_signal_exits_at_once_with_status_1():
    """A drain held by a client that never reads (30 s grace) is cut short by a second signal."""
    with server_process(env_for(SHARED_LAKE, GRACEFUL_SHUTDOWN_TIMEOUT="30s")) as srv:

        async def scenario() -> None:
            channel, call = stream_call(srv.addr, FIRST, 0, **{"grpc.http2.bdp_probe": 0})
            await call.read()
            await asyncio.sleep(1.0)
            srv.proc.send_signal(signal.SIGTERM)
            code, _ = await wait_exit(srv.proc, 1.0)
            assert code is None  # draining: the stream holds it
            srv.proc.send_signal(signal.SIGINT)
            code, took = await wait_exit(srv.proc, 5)
            assert code == 1 and took < 1.0, (code, took)
            call.cancel()
            await channel.close()

        asyncio.run(scenario())
        assert srv.proc.stdout is not None
        out = srv.proc.stdout.read()
        assert "signal received: draining" in out and "SIGINT again: exiting now, without draining" in out, out
