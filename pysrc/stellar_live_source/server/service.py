"""The gRPC service: ``raw_ledger_service.RawLedgerService``.

Handlers are registered generically with no response serializer: they return
finished protobuf bytes (frames built once per object and shared by every
stream), so no protobuf object is built per ledger.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from .. import api
from ..lake.lake import Corrupt, Lake, Unavailable
from ..ops.metrics import Metrics
from .stream import StreamError, StreamSettings, ledger_range, stream_frames

log = logging.getLogger("stellar_live_source.server")


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
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the server serves at most {self.max_streams} streams at once")
        self.active += 1
        self.metrics.streams_active.inc()
        self.metrics.streams_started.inc()
        sent = 0
        try:
            frames = stream_frames(self.lake, request.start_ledger, request.end_ledger, self.settings, self.draining)
            async for frame in frames:
                yield frame
                sent += len(frame)
                self.metrics.ledgers_sent.inc()
            self.metrics.bytes_sent.inc(sent)
            self._end(grpc.StatusCode.OK)
            return
        except asyncio.CancelledError:
            # The client went away: not a failure, no error metric, nothing left behind.
            self.metrics.bytes_sent.inc(sent)
            raise
        except StreamError as exc:
            code, msg = exc.code, exc.message
        except Unavailable as exc:
            code, msg = grpc.StatusCode.UNAVAILABLE, str(exc)
        except Corrupt as exc:
            code, msg = grpc.StatusCode.DATA_LOSS, str(exc)
        finally:
            self.active -= 1
            self.metrics.streams_active.dec()
        self.metrics.bytes_sent.inc(sent)
        self._end(code)
        log.info("stream from %d ended: %s %s", request.start_ledger, code.name, msg)
        await context.abort(code, msg)

    async def get_ledger_range(self, request, context: grpc.aio.ServicerContext) -> bytes:
        try:
            out = await ledger_range(self.lake, request.start_ledger, request.end_ledger, self.settings)
            self.metrics.range_calls.labels("OK").inc()
            return out
        except StreamError as exc:
            code, msg = exc.code, exc.message
        except Unavailable as exc:
            code, msg = grpc.StatusCode.UNAVAILABLE, str(exc)
        except Corrupt as exc:
            code, msg = grpc.StatusCode.DATA_LOSS, str(exc)
        self.metrics.range_calls.labels(code.name).inc()
        await context.abort(code, msg)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(api.SERVICE, {
            "StreamRawLedgers": grpc.unary_stream_rpc_method_handler(
                self.stream_raw_ledgers, request_deserializer=api.StreamLedgersRequest.FromString),
            "GetLedgerRange": grpc.unary_unary_rpc_method_handler(
                self.get_ledger_range, request_deserializer=api.GetLedgerRangeRequest.FromString),
        })
