"""The gRPC service: ``raw_ledger_service.RawLedgerService``.

Handlers are registered generically with no response serializer: they send
finished protobuf bytes (frames built once per object and shared by every
stream), so no protobuf object is built per ledger. The stream handler is a
coroutine writing each frame itself, not an async generator grpc iterates:
one generator step less per ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from .. import api
from ..lake.lake import Corrupt, Lake, Unavailable
from ..lake.storage import StorageError
from ..ops.metrics import Metrics
from .stream import StreamError, StreamSettings, ledger_range, stream_frames

log = logging.getLogger("stellar_live_source.server")


# StorageError reaches here only if a storage call escaped the lake's retries.
ENDINGS = (StreamError, Unavailable, Corrupt, StorageError)


def _status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status an ending tells the client."""
    if isinstance(exc, StreamError):
        return exc.code, exc.message
    if isinstance(exc, (Unavailable, StorageError)):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    return grpc.StatusCode.DATA_LOSS, str(exc)


class RawLedgerService:
    def __init__(self, lake: Lake, settings: StreamSettings, metrics: Metrics, max_streams: int):
        self.lake = lake
        self.settings = settings
        self.metrics = metrics
        self.max_streams = max_streams
        self.active = 0
        self.draining = asyncio.Event()

    def _end(self, code: grpc.StatusCode) -> None:
        self.metrics.streams_ended.labels(code.name).inc()

    async def stream_raw_ledgers(self, request, context: grpc.aio.ServicerContext):
        if self.draining.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another instance")
        if self.active >= self.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"the server serves at most {self.max_streams} streams at once"
            )
        self.active += 1
        self.metrics.streams_active.inc()
        self.metrics.streams_started.inc()
        sent = count = 0
        try:
            runs = stream_frames(self.lake, request.start_ledger, request.end_ledger, self.settings, self.draining)
            async with contextlib.aclosing(runs):
                async for run in runs:
                    for frame in run:
                        await context.write(frame)
                        sent += len(frame)
                        count += 1
            code, msg = grpc.StatusCode.OK, ""
        except ENDINGS as exc:
            code, msg = _status(exc)
        finally:
            # A client that went away (CancelledError) passes through here too:
            # not a failure, no error metric.
            self.active -= 1
            self.metrics.streams_active.dec()
            self.metrics.ledgers_sent.inc(count)
            self.metrics.bytes_sent.inc(sent)
        self._end(code)
        if code != grpc.StatusCode.OK:
            log.info("stream from %d ended after %d ledgers: %s %s", request.start_ledger, count, code.name, msg)
            await context.abort(code, msg)

    async def get_ledger_range(self, request, context: grpc.aio.ServicerContext) -> bytes:
        try:
            out = await ledger_range(self.lake, request.start_ledger, request.end_ledger, self.settings)
        except ENDINGS as exc:
            code, msg = _status(exc)
            self.metrics.range_calls.labels(code.name).inc()
            await context.abort(code, msg)
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
