"""The gRPC service: ``raw_ledger_service.RawLedgerService``.

Handlers are registered generically with no response serializer: they send
finished protobuf bytes (frames built once per object and shared by every
stream), so no protobuf object is built per ledger. The stream handler is a
coroutine writing each frame itself, not an async generator grpc iterates:
one generator step less per ledger.

How a call ends comes from the error model: ``errors.outcome`` names the
status of every error a stream or a range can end with.

Limits of issue 13 kept here: ``MAX_CONCURRENT_STREAMS`` (streams and range
calls together), the per-stream pace ``MAX_LEDGERS_PER_SECOND_PER_STREAM``,
``RANGE_INFLIGHT_BYTES`` held by range responses being built and sent, and
``MAX_START_AHEAD_LEDGERS``. Each call keeps the limits it started with;
``update(config)`` sets them for new calls. A request that does not parse is
INVALID_ARGUMENT, logged at debug level only (a client can cause it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, cast

import grpc

from .. import api
from ..errors import Draining, LiveSourceError, OutOfRange, TooManyStreams, Unavailable, outcome
from ..lake.lake import Lake
from ..ops.metrics import Metrics
from .door import RETRY_AFTER, ByteBudget, client_name
from .stream import Shape, StreamSettings, check_start, ledger_range, stream_frames
from .traced import request_attrs, traced

log = logging.getLogger("stellar_live_source.server")

STARTING = "the server is starting: its lake is not open yet; retry shortly"


#: Statuses a client causes by what it asks: logged at debug level, never louder.
CLIENT_CAUSED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
RETRY_AFTER_MS = "1000"  # a slot frees when some stream ends: no better guess


def status_of(exc: LiveSourceError) -> grpc.StatusCode:
    return grpc.StatusCode[outcome(exc).status]


class Malformed:
    """What a request that does not parse is deserialized to: the handler ends
    the call with INVALID_ARGUMENT (grpc would end it UNKNOWN with a traceback)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _on_done(context: grpc.aio.ServicerContext[Any, Any], fn: Callable[[], None]) -> None:
    """``fn()`` when the call is over, however it ends (its response sent, or not)."""
    context.add_done_callback(cast(Any, lambda _ctx: fn()))  # the stubs type the callback as a private class


def _parser(cls: Any) -> Any:
    name = cls.DESCRIPTOR.name

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception:
            return Malformed(f"the request is not a valid {name} message")

    return parse


class RawLedgerService:
    def __init__(self, settings: StreamSettings, metrics: Metrics, max_streams: int) -> None:
        self.lake: Lake | None = None  # set once the lake is open
        self.settings = settings
        self.metrics = metrics
        self.max_streams = max_streams
        self.active = 0  # streams open
        self.ranges = 0  # range calls open (they count against max_streams too)
        self.pace = 0  # ledgers a second per stream, 0: no pace
        self.max_start_ahead = 0  # 0: a stream may start any distance past the tip
        self.progress_every = 10_000  # LOG_PROGRESS_LEDGERS: a progress line per this many ledgers a stream sends
        self.range_budget = ByteBudget(0)
        self.draining = asyncio.Event()

    def update(self, config: Any) -> None:
        """Limits for new calls (open calls keep theirs)."""
        lim = config.limits
        self.max_streams = config.server.max_concurrent_streams
        self.pace = lim.max_ledgers_per_second_per_stream
        self.max_start_ahead = lim.max_start_ahead_ledgers
        self.progress_every = max(1, config.monitoring.log_progress_ledgers)
        self.range_budget.cap = lim.range_inflight_bytes
        self.range_budget.release(0)  # a larger cap may let waiters in

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], exc: LiveSourceError) -> NoReturn:
        code = status_of(exc)
        trailing: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, TooManyStreams):
            self.metrics.refusals.labels("max_concurrent_streams").inc()
            trailing = ((RETRY_AFTER, RETRY_AFTER_MS),)
        self.metrics.failed(exc, code.name)
        await context.abort(code, str(exc), trailing_metadata=trailing)

    async def _malformed(self, context: grpc.aio.ServicerContext[Any, Any], request: Malformed) -> NoReturn:
        log.debug("malformed request from %s: %s", client_name.get(), request.message)
        self.metrics.failed("BadRequest", "INVALID_ARGUMENT")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

    def _check_slot(self) -> None:
        if self.active + self.ranges >= self.max_streams:
            raise TooManyStreams(
                f"MAX_CONCURRENT_STREAMS: the server serves at most {self.max_streams} streams and range calls at once"
            )

    async def _check_ahead(self, lake: Lake, start: int, end: int, most: int) -> None:
        check_start(start, end)
        if not most:
            return
        newest = await lake.newest()
        if newest is not None and start > newest + most:
            raise OutOfRange(
                f"start_ledger {start} is more than MAX_START_AHEAD_LEDGERS={most} ledgers"
                f" beyond the lake's newest ledger {newest}"
            )

    def _lake(self) -> Lake:
        if self.draining.is_set():
            raise Draining("the server is shutting down; retry on another instance")
        if self.lake is None:
            raise Unavailable(STARTING)
        return self.lake

    async def stream_raw_ledgers(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if isinstance(request, Malformed):
            await self._malformed(context, request)
        await self.stream(context, request.start_ledger, request.end_ledger)

    async def stream(
        self, context: grpc.aio.ServicerContext[Any, Any], start: int, end: int, shape: Shape | None = None
    ) -> None:
        """One stream of either service (``shape``: see ``stream_frames``)."""
        try:
            lake = self._lake()
            self._check_slot()
        except LiveSourceError as exc:
            await self._refuse(context, exc)
        pace, most_ahead, every = self.pace, self.max_start_ahead, self.progress_every  # this stream keeps these
        self.active += 1
        self.metrics.streams_active.inc()
        self.metrics.streams_started.inc()
        sent = count = 0
        pos = self.metrics.stream_opened(start)  # its lag is read at scrape
        progress = every  # the count at which the next progress line is written
        try:
            await self._check_ahead(lake, start, end, most_ahead)
            runs = stream_frames(lake, start, end, self.settings, self.draining, shape)
            loop = asyncio.get_running_loop()
            began = loop.time()
            async with contextlib.aclosing(runs):
                async for run in runs:
                    got, before = time.perf_counter(), sent
                    for frame in run:
                        await context.write(frame)
                        sent += len(frame)
                        count += 1
                        if pace:  # frames come in runs (an object's worth): spread them out
                            early = count / pace - (loop.time() - began)
                            if early > 0:
                                await asyncio.sleep(early)
                    self.metrics.run_sent(pos, len(run), sent - before, got)  # once per object's run
                    if count >= progress:  # checked once per run: never a line per ledger
                        log.info("stream from %d: %d ledgers sent", start, count)
                        progress = (count // every + 1) * every
            code, msg = grpc.StatusCode.OK, ""
        except LiveSourceError as exc:
            code, msg = status_of(exc), str(exc)
            self.metrics.failed(exc, code.name)
        finally:
            # A client that went away (CancelledError) passes through here too:
            # not a failure, no error metric.
            self.active -= 1
            self.metrics.streams_active.dec()
            self.metrics.stream_closed(pos)
        self.metrics.streams_ended.labels(code.name).inc()
        if code != grpc.StatusCode.OK:
            log.log(
                logging.DEBUG if code in CLIENT_CAUSED else logging.INFO,
                "stream of %s from %d ended after %d ledgers: %s %s",
                client_name.get(),
                start,
                count,
                code.name,
                msg,
            )
            await context.abort(code, msg)

    async def get_ledger_range(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if isinstance(request, Malformed):
            await self._malformed(context, request)
        return await self.ledger_range(context, request.start_ledger, request.end_ledger)

    async def ledger_range(
        self, context: grpc.aio.ServicerContext[Any, Any], start: int, end: int, shape: Shape | None = None
    ) -> bytes:
        """One range call of either service (``shape``: see ``stream_frames``)."""
        try:
            lake = self._lake()
            self._check_slot()
        except LiveSourceError as exc:
            self.metrics.range_calls.labels(status_of(exc).name).inc()
            await self._refuse(context, exc)
        budget = self.range_budget
        held = min(self.settings.range_max_bytes, budget.cap) if budget.cap else 0
        self.ranges += 1
        try:
            if held:  # wait for room, up to the call's deadline
                async with asyncio.timeout(context.time_remaining()):
                    await budget.acquire(held)
                _on_done(context, lambda: budget.release(held))  # held until sent, however it ends
            out = await ledger_range(lake, start, end, self.settings, shape)
        except TimeoutError:
            self.metrics.range_calls.labels("DEADLINE_EXCEEDED").inc()
            self.metrics.failed("DeadlineExceeded", "DEADLINE_EXCEEDED")
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "RANGE_INFLIGHT_BYTES: no room before the deadline")
        except LiveSourceError as exc:
            code = status_of(exc)
            self.metrics.range_calls.labels(code.name).inc()
            self.metrics.failed(exc, code.name)
            await context.abort(code, str(exc))
        finally:
            self.ranges -= 1
        if held and len(out) > held:
            extra = len(out) - held
            budget.grow(extra)
            _on_done(context, lambda: budget.release(extra))
        self.metrics.range_calls.labels("OK").inc()
        return out

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            api.SERVICE,
            {
                "StreamRawLedgers": grpc.unary_stream_rpc_method_handler(
                    traced(api.STREAM_METHOD, self.stream_raw_ledgers, True, request_attrs),
                    request_deserializer=_parser(api.StreamLedgersRequest),
                ),
                "GetLedgerRange": grpc.unary_unary_rpc_method_handler(
                    traced(api.RANGE_METHOD, self.get_ledger_range, False, request_attrs),
                    request_deserializer=_parser(api.GetLedgerRangeRequest),
                ),
            },
        )
