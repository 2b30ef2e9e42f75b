"""Tracing (issue 14): spans over OTLP to a receiver running inside the test.

The real server (``stellar-live-source serve``) exports to a gRPC
``TraceService`` bound here; a stream carrying a W3C ``traceparent`` gets a
span in the consumer's trace, with its attributes, and child spans for the
storage reads and decodes it caused. Spans are flushed at SIGTERM. Tracing off
(the default, or ``OTEL_SDK_DISABLED=true``) exports nothing. Splitting long
streams, the cap on child spans and links between calls sharing a fetch are
checked in-process with an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stellar_live_source import api
from stellar_live_source.ops import tracing

from .conftest import LEDGERS
from .service_support import SHARED_LAKE, env_for, running_app, server_process

pytestmark = [
    pytest.mark.skipif(not (LEDGERS / "INDEX.jsonl").exists(), reason="shared test data not present"),
    pytest.mark.timeout(60),
]

FIRST, LAST = 1410048, 1410367  # the shared lake: 5 objects of 64 ledgers
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
STREAM = "raw_ledger_service.RawLedgerService/StreamRawLedgers"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the service's method name)
        with self.lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list[Any]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


@contextlib.contextmanager
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    rec = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(rec, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield rec, port
    finally:
        server.stop(0)


def traced_env(port: int, **extra: object) -> dict[str, str]:
    return env_for(
        SHARED_LAKE,
        TRACING_ENABLED="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_TRACES_SAMPLER="parentbased_always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SDK_DISABLED="false",
        **extra,
    )


def stream(addr: str, start: int, end: int, metadata: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    with grpc.insecure_channel(addr) as channel:
        call: Any = channel.unary_stream(
            api.STREAM_METHOD, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None
        )
        request = api.StreamLedgersRequest(start_ledger=start, end_ledger=end)
        return list(call(request, metadata=metadata, timeout=30))


def finished_spans(memory: InMemorySpanExporter) -> list[Any]:
    return list(memory.get_finished_spans())


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def test_a_traced_stream_exports_its_span_in_the_consumers_trace_with_children_flushed_at_sigterm() -> None:
    with receiver() as (rec, port):
        with server_process(traced_env(port)) as srv:
            frames = stream(srv.addr, FIRST, FIRST + 99, (("traceparent", TRACEPARENT), ("x-request-id", "trace-1")))
            assert len(frames) == 100
            srv.proc.terminate()  # SIGTERM: the last spans are flushed on the way out
            assert srv.proc.wait(15) == 0
        calls = rec.named(STREAM)
        assert len(calls) == 1, [s.name for s in rec.spans]
        call = calls[0]
        assert call.trace_id.hex() == TRACE_ID
        assert call.parent_span_id.hex() == PARENT_ID
        a = attrs(call)
        assert a["rpc.system"] == "grpc"
        assert a["rpc.method"] == "StreamRawLedgers"
        assert a["stellar.start_ledger"] == FIRST
        assert a["stellar.end_ledger"] == FIRST + 99
        assert a["stellar.ledgers_sent"] == 100
        assert a["stellar.bytes_sent"] == sum(len(f) for f in frames)
        assert a["stellar.status"] == "OK"
        assert a["rpc.grpc.status_code"] == 0
        assert a["stellar.request_id"] == "trace-1"
        assert "stellar.client" in a  # the peer's address: no key configured
        # The first object was read at start-up (the oldest ledger's lookup, no call): the second
        # was read and decoded for this stream, under its span.
        children = [s for s in rec.spans if s.parent_span_id == call.span_id]
        names = {s.name for s in children}
        assert {"lake.fetch", "lake.decode"} <= names, names
        assert all(s.trace_id.hex() == TRACE_ID for s in children)
        keys = {attrs(s)["stellar.object"] for s in children}
        assert any("1410112" in k for k in keys), keys


def test_a_call_without_traceparent_starts_a_trace_of_its_own() -> None:
    with receiver() as (rec, port):
        with server_process(traced_env(port)) as srv:
            stream(srv.addr, FIRST, FIRST + 9)
        (call,) = rec.named(STREAM)
        assert call.parent_span_id == b""
        assert call.trace_id.hex() != TRACE_ID


@pytest.mark.parametrize("off", [{"TRACING_ENABLED": "false"}, {"OTEL_SDK_DISABLED": "true"}], ids=["setting", "sdk"])
def test_tracing_off_exports_nothing(off: dict[str, str]) -> None:
    with receiver() as (rec, port):
        with server_process(traced_env(port) | off) as srv:
            stream(srv.addr, FIRST, FIRST + 99, (("traceparent", TRACEPARENT),))
            srv.proc.terminate()
            srv.proc.wait(15)
        time.sleep(0.3)
        assert rec.spans == []


# -- in-process: splitting, the cap on children, shared fetches --


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "_exporter", lambda: exporter)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    return exporter


async def _stream_async(addr: str, start: int, end: int, metadata: tuple[tuple[str, str], ...] = ()) -> int:
    async with grpc.aio.insecure_channel(addr) as channel:
        call: Any = channel.unary_stream(
            api.STREAM_METHOD, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None
        )
        request = api.StreamLedgersRequest(start_ledger=start, end_ledger=end)
        return len([x async for x in call(request, metadata=metadata, timeout=30)])


def test_a_long_stream_is_split_into_linked_spans(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "SPLIT_LEDGERS", 100)
    monkeypatch.setattr(tracing, "MAX_CHILDREN", 3)

    async def go() -> None:
        async with running_app(env_for(SHARED_LAKE, TRACING_ENABLED="true")) as (_app, addr):
            assert await _stream_async(addr, FIRST, LAST, (("traceparent", TRACEPARENT),)) == LAST - FIRST + 1

    asyncio.run(go())
    spans = [s for s in finished_spans(memory) if s.name == STREAM]
    spans.sort(key=lambda s: s.attributes["stellar.segment"])
    assert [s.attributes["stellar.ledgers_sent"] for s in spans] == [100, 100, 100, 20]
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in spans)
    assert all(format(s.parent.span_id, "016x") == PARENT_ID for s in spans)
    for before, after in zip(spans, spans[1:], strict=False):
        assert [link.context.span_id for link in after.links] == [before.context.span_id]
        assert before.attributes["stellar.continued"] is True
    assert spans[-1].attributes["stellar.total_ledgers_sent"] == LAST - FIRST + 1
    assert spans[-1].attributes["stellar.status"] == "OK"
    ids = {s.context.span_id for s in spans}
    per_parent: dict[int, int] = {}
    for s in finished_spans(memory):
        if s.parent is not None and s.parent.span_id in ids:
            per_parent[s.parent.span_id] = per_parent.get(s.parent.span_id, 0) + 1
    assert per_parent and max(per_parent.values()) <= 3


def test_a_fetch_shared_by_two_calls_is_a_child_of_one_and_linked_from_the_other(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        async with running_app(env_for(SHARED_LAKE, TRACING_ENABLED="true")) as (app, addr):
            assert app.lake is not None
            real = app.lake.storage.get
            release = asyncio.Event()

            async def slow_get(key: str, on_size: Any = None) -> bytes:
                await release.wait()
                return await real(key, on_size)

            app.lake.storage.get = slow_get  # type: ignore[method-assign]
            a = asyncio.ensure_future(_stream_async(addr, FIRST + 64 * 3, FIRST + 64 * 3 + 9))
            await asyncio.sleep(0.2)
            b = asyncio.ensure_future(_stream_async(addr, FIRST + 64 * 3, FIRST + 64 * 3 + 9))
            await asyncio.sleep(0.2)
            release.set()
            assert await a == await b == 10

    asyncio.run(go())
    finished = finished_spans(memory)
    calls = [s for s in finished if s.name == STREAM]
    assert len(calls) == 2
    fetches = [s for s in finished if s.name == "lake.fetch" and "1410240" in str(s.attributes["stellar.object"])]
    assert len(fetches) == 1  # one read for both
    fetch = fetches[0]
    (owner,) = [c for c in calls if c.context.span_id == fetch.parent.span_id]
    (other,) = [c for c in calls if c is not owner]
    linked = {link.context.span_id for link in other.links}
    assert fetch.context.span_id in linked


def test_the_span_carries_how_the_call_ended(memory: InMemorySpanExporter) -> None:
    async def go() -> None:
        async with running_app(env_for(SHARED_LAKE, TRACING_ENABLED="true")) as (_app, addr):
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await _stream_async(addr, FIRST + 10, FIRST)  # ends before it starts
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(go())
    (span,) = [s for s in finished_spans(memory) if s.name == STREAM]
    assert span.attributes["stellar.status"] == "INVALID_ARGUMENT"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.attributes["stellar.ledgers_sent"] == 0
    assert span.status.is_unset  # a client's bad request is not the server's error


def test_current_trace_id_is_the_calls_when_tracing_is_on(memory: InMemorySpanExporter) -> None:
    assert tracing.current_trace_id() is None  # off: nothing set up
    assert tracing.setup(True)
    try:
        assert tracing.current_trace_id() is None  # on, outside any call
        call = tracing.start_call(api.STREAM_METHOD, [("traceparent", TRACEPARENT)], {})
        assert call is not None
        assert tracing.current_trace_id() == TRACE_ID
        call.end("OK", 0)
        assert tracing.current_trace_id() is None
    finally:
        tracing.shutdown()
    assert tracing.TRACER is None
