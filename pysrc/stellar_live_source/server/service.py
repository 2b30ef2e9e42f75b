"""The gRPC service: ``raw_ledger_service.RawLedgerService``.

Handlers are registered generically with no response serializer: they send
finished protobuf bytes (frames built once per object and shared by every
stream), so no protobuf object is built per ledger. The stream handler is a
coroutine writing each frame itself, not an async generator grpc iterates:
one generator step less per ledger.

How a call ends comes from the error model: ``errors.outcome`` names the
status of every error a stream or a range can end with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from .. import api
from ..errors import Draining, LiveSourceError, TooManyStreams, Unavailable, outcome
from ..lake.lake import Lake
from ..ops.metrics import Metrics
from .stream import StreamSettings, ledger_range, stream_frames

log = logging.getLogger("stellar_live_source.server")

STARTING = "the server is starting: its lake is not open yet; retry shortly"


def status_of(exc: LiveSourceError) -> grpc.StatusCode:
    return grpc.StatusCode[outcome(exc).status]


class RawLedgerService:
    def __init__(self, settings: StreamSettings, metrics: Metrics, max_streams: int) -> None:
        self.lake: Lake | None = None  # set once the lake is open
        self.settings = settings
        self.metrics = metrics
        self.max_streams = max_streams
        self.active = 0
        self.draining = asyncio.Event()

    def _lake(self) -> Lake:
        if self.draining.is_set():
            raise Draining("the server is shutting down; retry on another instance")
        if self.lake is None:
            raise Unavailable(STARTING)
        return self.lake

    async def stream_raw_ledgers(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            lake = self._lake()
            if self.active >= self.max_streams:
                raise TooManyStreams(f"the server serves at most {self.max_streams} streams at once")
        except LiveSourceError as exc:
            await context.abort(status_of(exc), str(exc))
        self.active += 1
        self.metrics.streams_active.inc()
        self.metrics.streams_started.inc()
        sent = count = 0
        try:
            runs = stream_frames(lake, request.start_ledger, request.end_ledger, self.settings, self.draining)
            async with contextlib.aclosing(runs):
                async for run in runs:
                    for frame in run:
                        await context.write(frame)
                        sent += len(frame)
                        count += 1
            code, msg = grpc.StatusCode.OK, ""
        except LiveSourceError as exc:
            code, msg = status_of(exc), str(exc)
        finally:
            # A client that went away (CancelledError) passes through here too:
            # not a failure, no error metric.
            self.active -= 1
            self.metrics.streams_active.dec()
            self.metrics.ledgers_sent.inc(count)
            self.metrics.bytes_sent.inc(sent)
        self.metrics.streams_ended.labels(code.name).inc()
        if code != grpc.StatusCode.OK:
            log.info("stream from %d ended after %d ledgers: %s %s", request.start_ledger, count, code.name, msg)
            await context.abort(code, msg)

    async def get_ledger_range(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            out = await ledger_range(self._lake(), request.start_ledger, request.end_ledger, self.settings)
        except LiveSourceError as exc:
            code = status_of(exc)
            self.metrics.range_calls.labels(code.name).inc()
            await context.abort(code, str(exc))
        self.metrics.range_calls.labels("OK").inc()
        return out

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            api.SERVICE,
            {
                "StreamRawLedgers": grpc.unary_stream_rpc_method_handler(
                    self.stream_raw_ledgers, request_deserializer=api.StreamLedgersRequest.FromString
                ),
                "GetLedgerRange": grpc.unary_unary_rpc_method_handler(
                    self.get_ledger_range, request_deserializer=api.GetLedgerRangeRequest.FromString
                ),
            },
        )
