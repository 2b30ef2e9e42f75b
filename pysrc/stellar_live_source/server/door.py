"""The door: one interceptor in front of every RPC of every ledger service on
the gRPC port (services added later are covered by the same rule); gRPC health
and reflection stay open.

For each call, before the handler runs (so before any storage work):

1. authentication, when ``API_KEY_REQUIRED``: ``authorization: Bearer KEY`` or
   ``x-api-key: KEY``; a missing or wrong key is ``UNAUTHENTICATED``;
2. the client: the key's name, else the peer's IP address without the port
   (reconnecting does not escape a limit);
3. limits: a token bucket on new calls per client (``RATE_LIMIT_RPS``,
   ``RATE_LIMIT_BURST``) and ``MAX_STREAMS_PER_CLIENT`` calls open at once.
   A refusal is ``RESOURCE_EXHAUSTED`` naming the limit, with a
   ``retry-after-ms`` trailing metadata entry.

The client's name is in ``client_name`` (a context variable) for the
service's logs; it is never a metric label. Every call (refused ones too)
gets a correlation ID in ``request_id`` (``ops.logs.request_id_of``: the
client's valid ``x-request-id``, else a new UUID4), sent back first thing in
the initial metadata as ``x-request-id``. ``update(config)`` applies new
limits to new calls; calls already open keep what they started with.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ..ops import logs
from ..ops.context import client_name, request_id
from ..ops.handlers import rewrapped
from ..ops.metrics import Metrics
from .keys import ApiKeys

log = logging.getLogger("stellar_live_source.server")

#: Services the door leaves open: probes and tooling.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
RETRY_AFTER = "retry-after-ms"
BUCKET_IDLE = 600.0  # seconds a client's bucket is kept unused
BUCKETS_MAX = 10_000


def peer_ip(peer: str | None) -> str:
    """``ipv4:1.2.3.4:5`` -> ``1.2.3.4``; ``ipv6:[::1]:5`` -> ``::1``; else the peer as given."""
    if not peer:
        return "unknown"
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        if rest.startswith("["):
            return rest[1:].partition("]")[0]
        return rest.rpartition(":")[0] or rest
    return peer  # unix:..., anything else: the whole string


def presented_key(metadata: Any) -> str | None:
    """The key a call presents, from either header form, or None."""
    for k, v in metadata or ():
        if k == "authorization":
            scheme, _, token = str(v).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif k == "x-api-key" and str(v).strip():
            return str(v).strip()
    return None


class TokenBuckets:
    """One token bucket per client, least recently used first; buckets unused
    for ``idle`` seconds are dropped and at most ``most`` are kept."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, idle: float = BUCKET_IDLE, most: int = BUCKETS_MAX
    ) -> None:
        self.clock = clock
        self.idle = idle
        self.most = most
        self._b: collections.OrderedDict[str, list[float]] = collections.OrderedDict()  # client -> [tokens, last]

    def __len__(self) -> int:
        return len(self._b)

    def take(self, client: str, rate: float, burst: int) -> float:
        """0 if ``client`` may start a call now (a token taken), else seconds until it may."""
        now = self.clock()
        burst = max(1, burst)
        b = self._b.pop(client, None)
        if b is None:
            b = [float(burst), now]
        else:
            b[0] = min(float(burst), b[0] + (now - b[1]) * rate)
            b[1] = now
        self._b[client] = b  # most recently used last
        self._evict(now)
        if b[0] >= 1.0:
            b[0] -= 1.0
            return 0.0
        return (1.0 - b[0]) / rate

    def _evict(self, now: float) -> None:
        b = self._b
        while b:
            oldest = next(iter(b.values()))
            if len(b) > self.most or now - oldest[1] > self.idle:
                b.popitem(last=False)
            else:
                break


class ByteBudget:
    """Bytes held by range responses being built and sent, at most ``cap``
    (0: no cap); first come, first served. One call larger than the cap still
    runs, alone."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, n: int) -> bool:
        return not self.cap or self.used == 0 or self.used + n <= self.cap

    async def acquire(self, n: int) -> None:
        if not self._waiters and self._fits(n):
            self.used += n
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted as it was cancelled: hand it on
            else:
                self._waiters.remove((n, fut))
                self._wake()
            raise

    def grow(self, n: int) -> None:
        """Count ``n`` more bytes for a call already holding some (never waits)."""
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if not self._fits(n):
                break
            self._waiters.popleft()
            self.used += n
            fut.set_result(None)


@dataclass(frozen=True, slots=True)
class DoorLimits:
    """What the door enforces, as one snapshot: a call keeps the one it started with."""

    api_key_required: bool
    max_streams_per_client: int
    rate_limit_rps: float
    rate_limit_burst: int

    @classmethod
    def of(cls, config: Any) -> DoorLimits:
        lim = config.limits
        return cls(
            config.security.api_key_required,
            lim.max_streams_per_client,
            lim.rate_limit_rps,
            lim.rate_limit_burst,
        )


class Refused:
    """A call the door turns away: the gRPC status it ends with (a value, not an exception)."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_ms: int | None = None) -> None:
        self.code = code
        self.message = message
        self.retry_ms = retry_ms


async def _identify(context: Any, metadata: Any) -> None:
    """The call's correlation ID: set for its log lines, sent in its initial metadata."""
    rid = logs.request_id_of(metadata)
    request_id.set(rid)  # each call runs in its own task: its own context
    await context.send_initial_metadata(((logs.REQUEST_ID, rid),))


class Door(grpc.aio.ServerInterceptor):
    def __init__(self, config: Any, keys: ApiKeys, metrics: Metrics, clock: Callable[[], float] = time.monotonic):
        self.keys = keys
        self.metrics = metrics
        self.limits = DoorLimits.of(config)
        self.buckets = TokenBuckets(clock)
        self.open_calls: dict[str, int] = {}  # client -> calls open now
        self._updates: list[Callable[[Any], None]] = []

    def on_update(self, fn: Callable[[Any], None]) -> None:
        """Also call ``fn(config)`` on ``update`` (the service's own limits)."""
        self._updates.append(fn)

    def update(self, config: Any) -> None:
        """A reload: new limits and API_KEY_REQUIRED for new calls; the keys file
        path for the keys; open calls keep theirs."""
        self.limits = DoorLimits.of(config)
        self.keys.update(config)
        for fn in self._updates:
            fn(config)

    # -- the checks --
    def _admit(self, metadata: Any, peer: str | None, lim: DoorLimits) -> str | Refused:
        """The client's name, or why the call is refused."""
        name = None
        if lim.api_key_required:
            key = presented_key(metadata)
            if key is None:
                self.metrics.auth_failures.labels("missing").inc()
                return Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "an API key is required: send 'authorization: Bearer KEY' or 'x-api-key: KEY'",
                )
            name = self.keys.name_of(key)
            if name is None:
                self.metrics.auth_failures.labels("wrong").inc()
                return Refused(grpc.StatusCode.UNAUTHENTICATED, "the API key is not valid")
        else:
            key = presented_key(metadata)
            if key is not None and self.keys.names:
                name = self.keys.name_of(key)  # identified if it is a key we know; never refused
        client = name or peer_ip(peer)
        if lim.rate_limit_rps > 0:
            wait = self.buckets.take(client, lim.rate_limit_rps, lim.rate_limit_burst)
            if wait > 0:
                return self._refuse(
                    "rate_limit",
                    f"RATE_LIMIT_RPS: at most {lim.rate_limit_rps:g} new calls a second per client"
                    f" (bursts of {max(1, lim.rate_limit_burst)})",
                    wait,
                )
        if lim.max_streams_per_client and self.open_calls.get(client, 0) >= lim.max_streams_per_client:
            return self._refuse(
                "max_streams_per_client",
                f"MAX_STREAMS_PER_CLIENT: at most {lim.max_streams_per_client} calls open at once per client",
                1.0,
            )
        return client

    def _refuse(self, limit: str, message: str, wait: float) -> Refused:
        self.metrics.refusals.labels(limit).inc()
        return Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, message, max(1, math.ceil(wait * 1000)))

    def _enter(self, client: str) -> None:
        self.open_calls[client] = self.open_calls.get(client, 0) + 1

    def _leave(self, client: str) -> None:
        n = self.open_calls.get(client, 0) - 1
        if n > 0:
            self.open_calls[client] = n
        else:
            self.open_calls.pop(client, None)

    async def _refused(self, context: Any, r: Refused) -> None:
        log.debug("call refused: %s %s", r.code.name, r.message)
        trailing = ((RETRY_AFTER, str(r.retry_ms)),) if r.retry_ms is not None else ()
        await context.abort(r.code, r.message, trailing_metadata=trailing)

    # -- the interceptor --
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        return rewrapped(
            handler, lambda behavior, streams: (self._streaming if streams else self._unary)(behavior, metadata)
        )

    def _unary(self, behavior: Any, metadata: Any) -> Any:
        async def call(request: Any, context: Any) -> Any:
            await _identify(context, metadata)
            lim = self.limits
            client = self._admit(metadata, context.peer(), lim)
            if isinstance(client, Refused):
                await self._refused(context, client)
                return None
            self._enter(client)
            token = client_name.set(client)
            try:
                return await behavior(request, context)
            finally:
                client_name.reset(token)
                self._leave(client)

        return call

    def _streaming(self, behavior: Any, metadata: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def generate(request: Any, context: Any) -> Any:
                await _identify(context, metadata)
                lim = self.limits
                client = self._admit(metadata, context.peer(), lim)
                if isinstance(client, Refused):
                    await self._refused(context, client)
                    return
                self._enter(client)
                client_name.set(client)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    self._leave(client)

            return generate
        return self._unary(behavior, metadata)  # a coroutine writing with context.write
