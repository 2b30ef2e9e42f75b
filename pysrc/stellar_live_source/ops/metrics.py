"""Prometheus metrics: a few narrow hooks the service calls; nothing here sits
on the path ledgers travel. Every metric is listed in docs/metrics.md (a test
holds the two equal).

Per object a stream does one ``run_sent`` (a few counter increments and one
histogram observation); the lake calls ``storage_request`` per storage call
and ``decoded`` per decoded object. Everything else (the lake's cache, slots
and newest ledger, the streams' lag and read-ahead) is read at scrape time
from what the observers are handed. Labels carry bounded values only: method
names of the ledger service, status codes, the error model's class names,
backend kinds, operations and outcomes; never ledgers, keys, peers or clients.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import grpc
import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import __version__
from ..core import BACKEND, index
from ..core import decode as core_decode
from ..core.zstd import ZSTD_VERSION
from .handlers import rewrapped
from .readiness import DRAINING, STARTING, STORAGE
from .sli import RollingSli, is_good

PREFIX = "stellar_live_source"

# No `_created` series beside every counter and histogram: they double the
# series count and nothing reads them.
prometheus_client.disable_created_metrics()

# Buckets, chosen for the ranges measured (docs/benchmarks.md, docs/capacity.md):
#: One storage call: 0.1-5 ms for a local folder, 10 ms to 1 s for S3/GCS,
#: up to STORAGE_TIMEOUT (10 s by default) when storage struggles.
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: One object's run of frames handed to gRPC: 20 us (a ledger) to a few ms
#: (64 ledgers of pubnet) unpaced; a paced stream spreads a run over seconds.
PROCESSING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0, 10.0)
#: A decode stage of one object: 10 us (a small testnet object's split) to
#: 50-100 ms (decompressing a large pubnet batch).
DECODE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
)
#: A unary call (GetLedgerRange): 1 ms from the cache to seconds with cold
#: storage reads; RANGE_INFLIGHT_BYTES waits last up to the call's deadline.
UNARY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Call start to first ledger handed to gRPC: ms from the cache, a storage
#: round trip cold, up to a ledger close (about 5 s) for a stream at the tip.
FIRST_LEDGER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DECODE_STAGES = ("decompress", "split", "frame")
STORAGE_OPERATIONS = ("get", "list", "head")
STORAGE_OUTCOMES = ("ok", "not_found", "error", "cancelled")


class Call:
    """What the service and the door tell about one call before it ends."""

    __slots__ = ("code", "error")

    def __init__(self) -> None:
        self.error: str | None = None  # the error model's class name (or a door's refusal)
        self.code: str | None = None  # the status the call ends with, when the service chose one


_call: ContextVar[Call | None] = ContextVar("stellar_live_source_call", default=None)


class StreamPosition:
    """One open stream's place: the next ledger it will send."""

    __slots__ = ("began", "first", "next")

    def __init__(self, start: int) -> None:
        self.next = start
        self.began = time.perf_counter()
        self.first = False  # whether its first ledger was handed to gRPC


def _ignore() -> int:
    return 0


class _Scraped(Collector):
    """Values read at scrape time from what the observers were handed."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Any]:
        m = self.m
        c = CounterMetricFamily(
            f"{PREFIX}_xdr_fallback_ledgers", "Ledgers delimited by the hash-chain fallback (a union arm too new)"
        )
        c.add_metric([], core_decode.Stats.fallback_ledgers)
        yield c
        lake = m.lake
        cache = lake.cache if lake is not None else None
        for name, attr, doc in (
            ("cache_hits", "hits", "Object reads served from the decoded-object cache"),
            ("cache_misses", "misses", "Object reads that started a fetch (not in the cache, none in flight)"),
            ("cache_shared", "shared", "Object reads that joined a fetch already in flight"),
            ("cache_evictions", "evictions", "Objects evicted from the cache to make room"),
        ):
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc)
            c.add_metric([], getattr(cache, attr, 0) if cache is not None else 0)
            yield c
        g = GaugeMetricFamily(f"{PREFIX}_cache_objects", "Decoded objects in the cache")
        g.add_metric([], len(cache) if cache is not None else 0)
        yield g
        backend = [m.backend] if lake is not None else None
        g = GaugeMetricFamily(
            f"{PREFIX}_storage_inflight_requests",
            "Storage reads holding a STORAGE_MAX_INFLIGHT slot now",
            labels=["backend"],
        )
        c = CounterMetricFamily(
            f"{PREFIX}_storage_inflight_limit_waits",
            "Storage reads that waited for a STORAGE_MAX_INFLIGHT slot",
            labels=["backend"],
        )
        if backend is not None:
            g.add_metric(backend, lake.slots.in_use)
            c.add_metric(backend, lake.slots.waits)
        yield g
        yield c
        newest = lake.newest_known if lake is not None else None
        behind = [max(0, newest - p.next + 1) for p in m.streams] if newest is not None else []
        g = GaugeMetricFamily(
            f"{PREFIX}_stream_lag_ledgers_max", "Ledgers the furthest-behind open stream is behind the lake's newest"
        )
        g.add_metric([], max(behind, default=0))
        yield g
        g = GaugeMetricFamily(
            f"{PREFIX}_stream_lag_ledgers_sum", "Ledgers every open stream is behind the lake's newest, summed"
        )
        g.add_metric([], sum(behind))
        yield g
        g = GaugeMetricFamily(
            f"{PREFIX}_readahead_bytes_held", "Bytes the open streams' read-ahead holds (READAHEAD_BYTES each at most)"
        )
        g.add_metric([], m.readahead_held())
        yield g


READINESS_REASONS = (STARTING, DRAINING, STORAGE)


class Metrics:
    def __init__(self, slo_availability: float = 0.999, slo_window: float = 3600.0) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.lake: Any = None
        self.backend = ""
        self.streams: set[StreamPosition] = set()
        self.readahead_held: Callable[[], int] = _ignore
        self.sli = RollingSli(slo_availability, slo_window)
        self.info = Info(f"{PREFIX}_build", "Version and loaded core backend", registry=r)
        self.info.info(
            {"version": __version__, "core_backend": BACKEND, "zstd": ZSTD_VERSION, "header_hash": index.SHA256}
        )
        self.streams_active = Gauge(f"{PREFIX}_streams_active", "Streams being served", registry=r)
        self.streams_started = Counter(f"{PREFIX}_streams_started", "Streams started", registry=r)
        self.streams_ended = Counter(f"{PREFIX}_streams_ended", "Streams ended, by gRPC status", ["code"], registry=r)
        self.ledgers_sent = Counter(f"{PREFIX}_ledgers_sent", "Ledgers handed to gRPC for clients", registry=r)
        self.bytes_sent = Counter(f"{PREFIX}_bytes_sent", "RawLedger bytes handed to gRPC for clients", registry=r)
        self.range_calls = Counter(
            f"{PREFIX}_range_calls", "GetLedgerRange calls, by gRPC status", ["code"], registry=r
        )
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures", "Calls refused for a missing or wrong API key, by reason", ["reason"], registry=r
        )
        self.refusals = Counter(
            f"{PREFIX}_refusals", "Calls refused by a limit (RESOURCE_EXHAUSTED), by limit", ["limit"], registry=r
        )
        self.newest_ledger = Gauge(
            f"{PREFIX}_lake_newest_ledger", "Newest ledger in the lake (0: not known yet, or empty)", registry=r
        )
        self.cache_bytes = Gauge(f"{PREFIX}_cache_bytes", "Bytes of decoded objects cached", registry=r)
        self.breaker_state = Gauge(
            f"{PREFIX}_breaker_state",
            "Storage circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            ["backend"],
            registry=r,
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 while the service is ready (/ready answers 200), else 0", registry=r)
        self.not_ready = Gauge(
            f"{PREFIX}_not_ready",
            "1 per reason that holds the service back now: starting, draining, storage",
            ["reason"],
            registry=r,
        )
        for reason in READINESS_REASONS:
            self.not_ready.labels(reason)
        self.tls_cert_expiry = Gauge(
            f"{PREFIX}_tls_cert_expiry_timestamp_seconds",
            "When the served TLS certificate expires, Unix seconds (0 with TLS off)",
            registry=r,
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads", "Configuration reloads, by result", ["result"], registry=r
        )
        for result in ("applied", "refused", "invalid"):
            self.config_reloads.labels(result)
        # -- calls --
        self.grpc_requests = Counter(
            f"{PREFIX}_grpc_requests",
            "Ledger-service calls ended, by method and gRPC status",
            ["method", "code"],
            registry=r,
        )
        self.grpc_duration = Histogram(
            f"{PREFIX}_grpc_request_duration_seconds",
            "Unary ledger-service calls: seconds from start to end, by method and gRPC status",
            ["method", "code"],
            buckets=UNARY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Calls that ended neither OK nor CANCELLED, by the error model's class",
            ["type"],
            registry=r,
        )
        self.first_ledger = Histogram(
            f"{PREFIX}_stream_time_to_first_ledger_seconds",
            "Seconds from a stream's start to its first ledger handed to gRPC",
            buckets=FIRST_LEDGER_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            f"{PREFIX}_processing_duration_seconds",
            "Per stream per object: seconds from the decoded object reaching the stream"
            " to its last frame handed to gRPC",
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        # -- storage and decoding --
        self.storage_requests = Counter(
            f"{PREFIX}_storage_requests",
            "Storage calls (each retry and probe is one), by backend, operation and outcome",
            ["backend", "operation", "outcome"],
            registry=r,
        )
        self.storage_duration = Histogram(
            f"{PREFIX}_storage_request_duration_seconds",
            "Seconds per storage call, by backend and operation",
            ["backend", "operation"],
            buckets=STORAGE_BUCKETS,
            registry=r,
        )
        self.decode_duration = Histogram(
            f"{PREFIX}_decode_duration_seconds",
            "Seconds decoding one object, by stage: decompress, split (walk the XDR), frame",
            ["stage"],
            buckets=DECODE_BUCKETS,
            registry=r,
        )
        self._stages = [self.decode_duration.labels(s) for s in DECODE_STAGES]
        self._storage: dict[tuple[str, str], tuple[Any, Any]] = {}
        # -- the instance's SLI --
        sli = self.sli
        Gauge(
            f"{PREFIX}_sli_availability",
            "Good calls over all calls in the last SLO_WINDOW, this instance since its start (1 with none)",
            registry=r,
        ).set_function(sli.availability)
        Gauge(
            f"{PREFIX}_sli_error_budget_remaining",
            "Error budget left in the last SLO_WINDOW: 1 untouched, 0 spent, below 0 overspent",
            registry=r,
        ).set_function(sli.budget_remaining)
        Gauge(f"{PREFIX}_slo_availability_objective", "SLO_AVAILABILITY", registry=r).set_function(
            lambda: sli.objective
        )
        r.register(_Scraped(self))

    # -- what observers are handed --
    def watch_lake(self, lake: Any) -> None:
        """Read the lake's counters at scrape time, and hear of its storage
        calls and decodes (handed the lake: ops imports none of it)."""
        self.lake = lake
        self.backend = backend = lake.storage.kind
        self.cache_bytes.set_function(lambda: lake.cache.bytes)
        self.newest_ledger.set_function(lambda: lake.newest_known or 0)
        breaker = lake.breaker
        self.breaker_state.labels(backend).set_function(lambda: breaker.state)
        for op in STORAGE_OPERATIONS:
            duration = self.storage_duration.labels(backend, op)
            for out in STORAGE_OUTCOMES:
                self._storage[op, out] = (self.storage_requests.labels(backend, op, out), duration)
        lake.on_storage_request = self.storage_request
        lake.on_decode = self.decoded

    def readiness_changed(self, reasons: Iterable[str]) -> None:
        """The readiness rule's reasons held now (``Readiness.reasons``)."""
        held = set(reasons)
        self.ready.set(0 if held else 1)
        for reason in READINESS_REASONS:
            self.not_ready.labels(reason).set(1 if reason in held else 0)

    def watch_readahead(self, held: Callable[[], int]) -> None:
        """``held()``: bytes every open stream's read-ahead holds, summed at scrape."""
        self.readahead_held = held

    # -- hooks --
    def storage_request(self, operation: str, outcome: str, seconds: float) -> None:
        count, duration = self._storage[operation, outcome]
        count.inc()
        duration.observe(seconds)

    def decoded(self, stages: Iterable[float]) -> None:
        for h, seconds in zip(self._stages, stages, strict=False):
            h.observe(seconds)

    def stream_opened(self, start: int) -> StreamPosition:
        pos = StreamPosition(start)
        self.streams.add(pos)
        return pos

    def stream_closed(self, pos: StreamPosition) -> None:
        self.streams.discard(pos)

    def run_sent(self, pos: StreamPosition, ledgers: int, nbytes: int, got: float) -> None:
        """One object's run of ``ledgers`` frames (``nbytes``) handed to gRPC;
        ``got``: ``time.perf_counter()`` when the stream had the object."""
        now = time.perf_counter()
        self.ledgers_sent.inc(ledgers)
        self.bytes_sent.inc(nbytes)
        self.processing.observe(now - got)
        if not pos.first:
            pos.first = True
            self.first_ledger.observe(now - pos.began)
        pos.next += ledgers

    def failed(self, error: BaseException | str, code: str | None = None) -> None:
        """The call being served ends with ``error`` (an exception of the error
        model, or a class name), and with ``code`` when it is known here."""
        call = _call.get()
        if call is not None:
            call.error = error if isinstance(error, str) else type(error).__name__
            if code is not None:
                call.code = code

    def call_ended(self, method: str, code: str, error: str | None, seconds: float | None) -> None:
        self.grpc_requests.labels(method, code).inc()
        if seconds is not None:
            self.grpc_duration.labels(method, code).observe(seconds)
        if code not in ("OK", "CANCELLED"):
            # The door's refusals name no class: the one named here is also what the SLI judges.
            error = error or _ERROR_OF_CODE.get(code, "Internal")
            self.errors.labels(error).inc()
        self.sli.record(is_good(code, error))


#: The type of a call that ended with no class named: a door's refusal, or grpc's own end.
_ERROR_OF_CODE = {
    "UNAUTHENTICATED": "Unauthenticated",
    "RESOURCE_EXHAUSTED": "ClientLimit",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "INVALID_ARGUMENT": "BadRequest",
}


class CallObserver(grpc.aio.ServerInterceptor):
    """The outermost interceptor: counts every call of ``service`` as it ends,
    with its status and (from what the service and the door told ``Metrics``)
    its error class, times unary calls, and feeds the SLI. Its ``method``
    label is the method's name, after ``label`` (one observer per service)."""

    def __init__(self, metrics: Metrics, service: str, label: str = "") -> None:
        self.metrics = metrics
        self.prefix = f"/{service}/"
        self.label = label

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or not method.startswith(self.prefix):
            return handler  # health, reflection, and unknown methods (grpc answers UNIMPLEMENTED)
        name = self.label + method[len(self.prefix) :]

        def observed(behavior: Any, streams: bool) -> Any:
            if streams and inspect.isasyncgenfunction(behavior):
                return None  # the service's streams are coroutines writing with context.write
            return self._observed(behavior, name, not streams)

        return rewrapped(handler, observed)

    def _observed(self, behavior: Any, method: str, unary: bool) -> Any:
        metrics = self.metrics

        async def call(request: Any, context: Any) -> Any:
            record = Call()
            token = _call.set(record)
            began = time.perf_counter()
            code = "UNKNOWN"
            try:
                result = await behavior(request, context)
                code = "OK"
                return result
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = record.code or _code_of(context)
                raise
            except Exception:
                if context.cancelled():
                    code = "CANCELLED"
                elif record.error is None:
                    record.error = "Internal"
                raise
            finally:
                _call.reset(token)
                metrics.call_ended(method, code, record.error, time.perf_counter() - began if unary else None)

        return call


def _code_of(context: Any) -> str:
    try:
        code = context.code()
    except Exception:
        return "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if code is None else str(code)
