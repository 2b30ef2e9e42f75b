"""The importable client against real gRPC peers over loopback: a server of
this test that ends streams the way a draining or failing server does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from stellar_live_source import api
from stellar_live_source.client import Client
from stellar_live_source.core.frame import raw_ledger_frame


@contextlib.asynccontextmanager
async def peer(per_call: int) -> AsyncIterator[tuple[str, list[tuple[int, int]]]]:
    """A StreamRawLedgers server that sends up to ``per_call`` ledgers from the
    start asked for (never past the end), then ends the call UNAVAILABLE, and
    answers a start past the end with INVALID_ARGUMENT, as the service does.
    Yields its address and the (start, end) of every request."""
    requests: list[tuple[int, int]] = []

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        start, end = request.start_ledger, request.end_ledger
        requests.append((start, end))
        if end and end < start:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"end_ledger {end} is before start_ledger {start}")
        last = start + per_call - 1 if not end else min(end, start + per_call - 1)
        for seq in range(start, last + 1):
            await context.write(raw_ledger_frame(seq, seq.to_bytes(4, "big"), 0, 4))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[Any, bytes] = grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=api.StreamLedgersRequest.FromString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(api.SERVICE, {"StreamRawLedgers": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", requests
    finally:
        await server.stop(None)


async def test_a_bounded_stream_that_delivered_its_last_ledger_is_complete():
    """The server ends with UNAVAILABLE right after the last ledger asked for:
    the client is done, rather than asking again from end + 1 (which the
    server refuses with INVALID_ARGUMENT)."""
    async with peer(per_call=3) as (addr, requests), Client(addr, max_retries=0) as client:
        got = [(seq, xdr) async for seq, xdr in client.stream(5, 7)]
    assert got == [(s, s.to_bytes(4, "big")) for s in (5, 6, 7)]
    assert requests == [(5, 7)] and client.retries == 0


async def test_retries_count_tries_without_progress_and_resume_where_the_stream_stopped():
    """One ledger per call, then UNAVAILABLE: each call makes progress, so two
    retries allowed in a row suffice for a stream of any length."""
    async with peer(per_call=1) as (addr, requests), Client(addr, max_retries=2, retry_backoff=0.001) as client:
        got = [seq async for seq, _ in client.stream(10, 15)]
    assert got == list(range(10, 16))
    assert requests == [(s, 15) for s in range(10, 16)] and client.retries == 5


async def test_an_unreachable_server_is_retried_max_retries_times_then_the_error_is_raised():
    seen: list[tuple[grpc.StatusCode, int]] = []

    def on_retry(exc: grpc.aio.AioRpcError, attempt: int, wait: float) -> None:
        assert 0 <= wait <= 0.005 * 2 ** (attempt - 1)  # full jitter under a doubling from retry_backoff
        seen.append((exc.code(), attempt))

    async with Client("127.0.0.1:1", retry_backoff=0.005, on_retry=on_retry) as client:  # the default: 5 retries
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in client.stream(2, 3):
                pass
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert seen == [(grpc.StatusCode.UNAVAILABLE, n) for n in range(1, 6)] and client.retries == 5


async def test_a_stream_to_the_tip_keeps_resuming_as_long_as_each_call_makes_progress():
    async with peer(per_call=2) as (addr, requests), Client(addr, max_retries=1, retry_backoff=0.001) as client:
        got = []
        async for seq, _ in client.stream(100):
            got.append(seq)
            if len(got) == 9:
                break
    assert got == list(range(100, 109)) and [s for s, _ in requests] == [100, 102, 104, 106, 108]
