"""OpenTelemetry tracing over OTLP, when ``TRACING_ENABLED`` is true.

Off (the default, or ``OTEL_SDK_DISABLED=true``): nothing is set up,
``TRACER`` stays None and every hook is one check of it.

On: a ``TracerProvider`` whose exporter and sampler follow the standard
``OTEL_*`` environment variables, read by OpenTelemetry itself (the one place
where a library reads the environment): ``OTEL_EXPORTER_OTLP_PROTOCOL``
(``grpc`` or ``http/protobuf``, the default), ``OTEL_EXPORTER_OTLP_ENDPOINT``
and the rest of the exporter's variables, ``OTEL_SERVICE_NAME`` (default
``stellar-live-source``), ``OTEL_TRACES_SAMPLER`` (default
``parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG`` as its ratio,
default 0.1) and the batch processor's ``OTEL_BSP_*``. Spans are flushed when
the application stops (``shutdown``).

Spans: one per call (``CallTrace``), a child of the consumer's trace when the
call's metadata carries a W3C ``traceparent``. A stream's span ends and a
linked successor starts every ``SPLIT_LEDGERS`` ledgers or ``SPLIT_SECONDS``
seconds, so a stream at the tip exports as it goes. Storage reads and object
decodes are child spans of the call that caused them (``child``), at most
``MAX_CHILDREN`` per call span; a read shared by several calls is the child
of the one that started it and the others link to it (``collect``, ``link``).

This module is handed what it observes: it imports neither the server nor the
lake. The call's client name and correlation ID come from ``ops.context``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..errors import ConfigError
from .context import client_name, request_id

log = logging.getLogger("stellar_live_source.tracing")

#: The tracer when tracing is on; None when off (every hook checks this first).
TRACER: Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider, shut down at stop

DEFAULT_SERVICE_NAME = "stellar-live-source"
DEFAULT_RATIO = 0.1
#: A stream's span ends and a linked successor starts after this many ledgers or seconds.
SPLIT_LEDGERS = 10_000
SPLIT_SECONDS = 300.0
#: Child spans (and links) one call span holds at most.
MAX_CHILDREN = 100

_propagator = TraceContextTextMapPropagator()
#: The statuses that mark a server span as an error (OpenTelemetry's gRPC conventions):
#: the others (OK, CANCELLED, a client's bad request, ...) leave its status unset.
SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})


def _exporter() -> Any:
    """The OTLP exporter ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` names; it reads its other variables itself."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip().lower() or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: expected grpc or http/protobuf")


def _sampler() -> Any:
    """``OTEL_TRACES_SAMPLER`` when set (the SDK reads it, None here); else the parent's
    decision, or a ratio of new traces (``OTEL_TRACES_SAMPLER_ARG``, default 0.1)."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip():
        return None
    arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(arg) if arg else DEFAULT_RATIO
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number: the ratio is %s", arg, DEFAULT_RATIO)
        ratio = DEFAULT_RATIO
    return ParentBased(TraceIdRatioBased(ratio))


def disabled_by_sdk() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def setup(enabled: bool) -> bool:
    """Tracing on when ``enabled`` and not ``OTEL_SDK_DISABLED=true``; True when on."""
    global TRACER, _provider
    if not enabled or disabled_by_sdk() or TRACER is not None:
        return TRACER is not None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .. import __version__

    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    resource = Resource.create({SERVICE_NAME: name, "service.version": __version__})
    provider = TracerProvider(resource=resource, sampler=_sampler())
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    _provider = provider
    TRACER = provider.get_tracer("stellar_live_source", __version__)
    log.info("tracing on: OTLP spans of service %s", name)
    return True


def shutdown(timeout_ms: int = 5000) -> None:
    """Export what is left and stop: tracing off again."""
    global TRACER, _provider
    provider, _provider, TRACER = _provider, None, None
    if provider is not None:
        try:
            provider.force_flush(timeout_ms)
        finally:
            provider.shutdown()


def current_trace_id() -> str | None:
    """The trace ID (32 hex digits) of the call being served, when tracing is on
    and the call is sampled; None otherwise. For log lines."""
    if TRACER is None:
        return None
    call = _call.get()
    if call is None:
        return None
    ctx = call.span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid and ctx.trace_flags.sampled else None


# -- the call's span --

_call: ContextVar[CallTrace | None] = ContextVar("trace_call", default=None)
_shared: ContextVar[list[SpanContext] | None] = ContextVar("trace_shared", default=None)


class CallTrace:
    """The span of one call, split into linked successors on a long stream.

    ``wrote(nbytes)`` per message sent; ``end(code_name, code_value)`` once.
    """

    __slots__ = (
        "tracer",
        "name",
        "parent",
        "attrs",
        "span",
        "children",
        "segment",
        "ledgers",
        "bytes",
        "seg_ledgers",
        "seg_bytes",
        "seg_began",
        "token",
    )

    def __init__(self, tracer: Tracer, name: str, metadata: Sequence[tuple[str, Any]] | None, attrs: dict[str, Any]):
        self.tracer = tracer
        self.name = name
        carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
        self.parent = _propagator.extract(carrier) if "traceparent" in carrier else None
        client = client_name.get()
        if client != "-":
            attrs["stellar.client"] = client
        rid = request_id.get()
        if rid:
            attrs["stellar.request_id"] = rid
        self.attrs = attrs
        self.segment = 0
        self.ledgers = self.bytes = 0
        self.span = self._start(())
        self.token = _call.set(self)

    def _start(self, links: Sequence[Link]) -> trace.Span:
        self.children = 0
        self.seg_ledgers = self.seg_bytes = 0
        self.seg_began = time.monotonic()
        attrs = dict(self.attrs)
        attrs["stellar.segment"] = self.segment
        return self.tracer.start_span(
            self.name, context=self.parent, kind=SpanKind.SERVER, attributes=attrs, links=links
        )

    def annotate(self, key: str, value: Any) -> None:
        """An attribute on this call's span and on its successors."""
        self.attrs[key] = value
        self.span.set_attribute(key, value)

    def wrote(self, nbytes: int, ledgers: int = 1) -> None:
        self.seg_ledgers += ledgers
        self.seg_bytes += nbytes
        if self.seg_ledgers >= SPLIT_LEDGERS or time.monotonic() - self.seg_began >= SPLIT_SECONDS:
            self._split()

    def _close_segment(self) -> None:
        self.ledgers += self.seg_ledgers
        self.bytes += self.seg_bytes
        self.span.set_attribute("stellar.ledgers_sent", self.seg_ledgers)
        self.span.set_attribute("stellar.bytes_sent", self.seg_bytes)

    def _split(self) -> None:
        self._close_segment()
        self.span.set_attribute("stellar.continued", True)
        before = self.span
        before.end()
        self.segment += 1
        self.span = self._start((Link(before.get_span_context(), {"stellar.predecessor": True}),))

    def end(self, code_name: str, code_value: int, message: str = "") -> None:
        self._close_segment()
        span = self.span
        span.set_attribute("rpc.grpc.status_code", code_value)
        span.set_attribute("stellar.status", code_name)
        span.set_attribute("stellar.total_ledgers_sent", self.ledgers)
        span.set_attribute("stellar.total_bytes_sent", self.bytes)
        if code_name in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, f"{code_name}: {message}" if message else code_name))
        span.end()
        try:
            _call.reset(self.token)
        except ValueError:  # ended in another context than it started in: nothing to restore
            pass


def start_call(
    method: str, metadata: Sequence[tuple[str, Any]] | None, attrs: dict[str, Any] | None = None
) -> CallTrace | None:
    """The span of a call now starting (None when tracing is off)."""
    tracer = TRACER
    if tracer is None:
        return None
    service, _, name = method.lstrip("/").rpartition("/")
    base: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    return CallTrace(tracer, method.lstrip("/"), metadata, base | (attrs or {}))


def annotate(key: str, value: Any) -> None:
    """An attribute on the span of the call being served (nothing when tracing is off or outside a call)."""
    if TRACER is None:
        return
    call = _call.get()
    if call is not None:
        call.annotate(key, value)


# -- child spans: storage reads and decodes, narrow hooks in the lake --


class _Child:
    """A child span, ended (an error status on an exception) when its block ends."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is not None:
            self.span.set_status(Status(StatusCode.ERROR, kind.__name__))
        self.span.end()


_NO_CHILD = contextlib.nullcontext()


def child(name: str, key: str, stored: int | None = None) -> contextlib.AbstractContextManager[None]:
    """A child span of the call being served, over a ``with`` block: none
    outside a call, or past ``MAX_CHILDREN`` for the call's current span (then
    nothing is built). ``key``: the object's; ``stored``: its stored bytes.
    Callers check ``TRACER is not None`` first."""
    call = _call.get()
    tracer = TRACER
    if call is None or tracer is None or call.children >= MAX_CHILDREN:
        return _NO_CHILD
    call.children += 1
    attrs: dict[str, Any] = {"stellar.object": key}
    if stored is not None:
        attrs["stellar.stored_bytes"] = stored
    span = tracer.start_span(name, context=trace.set_span_in_context(call.span), attributes=attrs)
    shared = _shared.get()
    if shared is not None:
        shared.append(span.get_span_context())
    return _Child(span)


def collect() -> list[SpanContext]:
    """In a shared fetch's own task: the spans its reads and decodes start,
    gathered for the other calls that share it (``link``)."""
    spans: list[SpanContext] = []
    _shared.set(spans)
    return spans


def link(spans: Sequence[SpanContext]) -> None:
    """Link the current call's span to a shared fetch's spans (within ``MAX_CHILDREN``)."""
    call = _call.get()
    if call is None:
        return
    for ctx in spans:
        if call.children >= MAX_CHILDREN:
            return
        call.children += 1
        call.span.add_link(ctx, {"stellar.shared": True})
