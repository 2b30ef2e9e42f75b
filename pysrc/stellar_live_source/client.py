"""A small async client for Python consumers of the service.

    async with Client("localhost:50052") as client:
        async for seq, xdr in client.stream(1000, 2000):
            ...

``stream`` resumes by itself after ``UNAVAILABLE`` (storage down, a server
draining) from the last ledger it delivered + 1, so a consumer sees every
ledger exactly once, in order. Other statuses are raised as ``grpc.aio.AioRpcError``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc

from . import api
from .core.frame import parse_raw_ledger

# Real ledgers pass 4 MiB: clients must lift gRPC's default receive limit.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


class OutOfOrder(Exception):
    """The server sent a ledger other than the next one (never expected)."""


class Client:
    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        resume_backoff: float = 0.5,
        resume_backoff_max: float = 10.0,
        max_resumes: int | None = None,
    ):
        self.target = target
        self.channel = (
            grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS)
            if credentials
            else grpc.aio.insecure_channel(target, CHANNEL_OPTIONS)
        )
        self._stream = self.channel.unary_stream(
            api.STREAM_METHOD, request_serializer=api.StreamLedgersRequest.SerializeToString, response_deserializer=None
        )
        self._range = self.channel.unary_unary(
            api.RANGE_METHOD,
            request_serializer=api.GetLedgerRangeRequest.SerializeToString,
            response_deserializer=api.GetLedgerRangeResponse.FromString,
        )
        self.resume_backoff = resume_backoff
        self.resume_backoff_max = resume_backoff_max
        self.max_resumes = max_resumes
        self.resumes = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def stream(
        self, start: int, end: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(sequence, LedgerCloseMeta XDR) from ``start`` to ``end`` inclusive (0: follow the tip forever)."""
        seq = start
        failures = 0
        while True:
            call = self._stream(api.StreamLedgersRequest(start_ledger=seq, end_ledger=end), timeout=timeout)
            try:
                async for raw in call:
                    got, xdr = parse_raw_ledger(raw)
                    if got != seq:
                        call.cancel()
                        raise OutOfOrder(f"expected ledger {seq}, the server sent {got}")
                    failures = 0
                    yield got, xdr
                    seq += 1
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or (
                    self.max_resumes is not None and self.resumes >= self.max_resumes
                ):
                    raise
                self.resumes += 1
                failures += 1
                await asyncio.sleep(random.uniform(0, min(self.resume_backoff_max, self.resume_backoff * 2**failures)))
            finally:
                call.cancel()

    async def ledger_range(self, start: int, end: int, *, timeout: float | None = None):
        """``(ledgers, latest)``: what GetLedgerRange returns for [start, end)."""
        resp = await self._range(api.GetLedgerRangeRequest(start_ledger=start, end_ledger=end), timeout=timeout)
        return [(x.sequence, x.ledger_close_meta_xdr) for x in resp.ledgers], resp.latest_ledger
