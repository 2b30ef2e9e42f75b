"""/metrics of a running server, parsed with prometheus-client's parser, read
while real gRPC clients stream: counts equal to what was sent while a tip
stream is still open, the lake's newest ledger, errors by type, the SLI, the
storage calls, the streams' lag; labels with bounded values only; and the
exported set of metric families equal to docs/metrics.md."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stellar_live_source import api
from stellar_live_source.core.keys import Layout
from stellar_live_source.ops.metrics import Metrics
from stellar_live_source.ops.sli import RollingSli, is_good
from stellar_live_source.server.app import App

from .conftest import ROOT, needs_testdata
from .service_support import SHARED_LAKE, env_for, http_get, running_app, until

FIRST, LAST = 1410048, 1410367
LAYOUT = Layout(64, 10)
P = "stellar_live_source_"
DOC = ROOT / "docs" / "metrics.md"
KEY = "sk-metrics-0123456789abcdef"


def copy_lake(tmp_path: Path, keep: set[int] | None = None) -> Path:
    dst = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, dst)
    if keep is not None:
        for p in dst.rglob("*.xdr.zst"):
            if LAYOUT.parse_key(str(p.relative_to(dst)))[0] not in keep:
                p.unlink()
    return dst


class Scrape:
    """One /metrics page, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))

    def value(self, sample: str, **labels: str) -> float:
        """The sample's value (0 if absent), summed over labels not given."""
        total = 0.0
        for fam in self.families:
            for s in fam.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


async def scrape(app: App) -> Scrape:
    assert app.bound is not None and app.bound.metrics_port
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{app.bound.metrics_port}/metrics")
    assert status == 200
    return Scrape(body.decode())


@contextlib.asynccontextmanager
async def channel(addr: str) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(addr)
    try:
        yield ch
    finally:
        await ch.close()


def raw_stream(ch: grpc.aio.Channel, start: int, end: int = 0, metadata: Any = None) -> Any:
    """The stream's RawLedger frames as sent (bytes, no deserializer)."""
    call = ch.unary_stream(api.STREAM_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(api.StreamLedgersRequest(start_ledger=start, end_ledger=end).SerializeToString(), metadata=metadata)


async def stream_status(ch: grpc.aio.Channel, start: int, end: int = 0, metadata: Any = None) -> grpc.StatusCode:
    try:
        async for _ in raw_stream(ch, start, end, metadata):
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def range_status(ch: grpc.aio.Channel, start: int, end: int) -> grpc.StatusCode:
    call = ch.unary_unary(api.RANGE_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        await call(api.GetLedgerRangeRequest(start_ledger=start, end_ledger=end).SerializeToString())
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@needs_testdata
async def test_counts_equal_what_was_streamed_while_a_tip_stream_is_open():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        before = await scrape(app)
        assert before.value(P + "lake_newest_ledger") == LAST  # what /health shows
        call = raw_stream(ch, FIRST)  # no end: it waits at the tip once it has sent every ledger
        frames: list[bytes] = []
        async for frame in call:
            frames.append(frame)
            if len(frames) == LAST - FIRST + 1:
                break
        now = await scrape(app)
        assert now.value(P + "ledgers_sent_total") - before.value(P + "ledgers_sent_total") == len(frames)
        assert now.value(P + "bytes_sent_total") - before.value(P + "bytes_sent_total") == sum(map(len, frames))
        assert now.value(P + "streams_active") == 1
        assert now.value(P + "stream_lag_ledgers_max") == now.value(P + "stream_lag_ledgers_sum") == 0  # at the tip
        assert now.value(P + "stream_time_to_first_ledger_seconds_count") == 1
        assert now.value(P + "processing_duration_seconds_count") == 5  # one per object's run
        assert now.value(P + "grpc_requests_total") == before.value(P + "grpc_requests_total")  # not ended yet
        call.cancel()
        await until(lambda: app.service.active == 0, what="the stream ends")
        ended = await scrape(app)
        assert ended.value(P + "grpc_requests_total", method="StreamRawLedgers", code="CANCELLED") == 1
        assert ended.value(P + "errors_total") == 0  # a client going away is no error
        assert ended.value(P + "sli_availability") == 1


@needs_testdata
async def test_lake_newest_ledger_follows_the_lake_with_no_stream_at_the_tip(tmp_path):
    full = SHARED_LAKE
    lake = copy_lake(tmp_path, keep={FIRST, 1410112})
    async with running_app(env_for(lake)) as (app, _):
        assert (await scrape(app)).value(P + "lake_newest_ledger") == 1410175
        for p in sorted(full.rglob("*.xdr.zst")):
            dst = lake / p.relative_to(full)
            if not dst.exists():
                tmp = dst.with_suffix(".tmp")
                tmp.write_bytes(p.read_bytes())
                tmp.rename(dst)
        assert app.lake is not None and not app.lake.watching  # nobody waits at the tip
        await until(lambda: app.health_report()["newest_ledger"] == LAST, what="/health's newest ledger")
        assert (await scrape(app)).value(P + "lake_newest_ledger") == LAST


def corrupt(path: Path) -> None:
    import zstandard

    raw = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()))
    raw[5000] ^= 0xFF
    path.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))


@needs_testdata
async def test_errors_of_each_type_move_errors_total_and_the_sli(tmp_path):
    # A gap at 1410176 (later objects exist) and a corrupt object at 1410112.
    lake = copy_lake(tmp_path, keep={FIRST, 1410112, 1410240, 1410304})
    corrupt(lake / LAYOUT.object_key(1410112))
    env = env_for(lake, MISSING_OBJECT_WAIT="300ms")
    async with running_app(env) as (app, addr), channel(addr) as ch:
        s = await scrape(app)
        assert s.value(P + "errors_total") == 0
        assert (s.value(P + "sli_availability"), s.value(P + "sli_error_budget_remaining")) == (1, 1)

        # Errors a client causes: counted by type, good calls to the SLI.
        assert await stream_status(ch, 1) == grpc.StatusCode.INVALID_ARGUMENT
        assert await stream_status(ch, 100) == grpc.StatusCode.OUT_OF_RANGE
        assert await range_status(ch, FIRST + 5, FIRST) == grpc.StatusCode.INVALID_ARGUMENT
        s = await scrape(app)
        assert s.value(P + "errors_total", type="BadRequest") == 2
        assert s.value(P + "errors_total", type="OutOfRange") == 1
        assert s.value(P + "grpc_requests_total", method="StreamRawLedgers", code="INVALID_ARGUMENT") == 1
        assert s.value(P + "grpc_requests_total", method="GetLedgerRange", code="INVALID_ARGUMENT") == 1
        assert s.value(P + "grpc_request_duration_seconds_count", method="GetLedgerRange") == 1  # unary: timed
        assert s.value(P + "grpc_request_duration_seconds_count", method="StreamRawLedgers") == 0
        assert (s.value(P + "sli_availability"), s.value(P + "sli_error_budget_remaining")) == (1, 1)

        # Errors of the lake: bad calls.
        assert await stream_status(ch, 1410176) == grpc.StatusCode.NOT_FOUND  # the gap
        assert await stream_status(ch, FIRST) == grpc.StatusCode.DATA_LOSS  # reaches the corrupt object
        s = await scrape(app)
        assert s.value(P + "errors_total", type="LedgerMissing") == 1
        assert s.value(P + "errors_total", type="CorruptObject") == 1
        assert s.value(P + "errors_total") == 5
        assert s.value(P + "sli_availability") == pytest.approx(3 / 5)
        assert s.value(P + "sli_error_budget_remaining") < 0  # 2 bad of 5: far past 0.1% of them
        assert s.value(P + "slo_availability_objective") == pytest.approx(0.999)


@needs_testdata
async def test_door_refusals_count_as_unauthenticated_and_stay_good(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{KEY}\n")
    env = env_for(SHARED_LAKE, API_KEY_REQUIRED="true", ALLOW_INSECURE_API_KEYS="true", API_KEYS_FILE=str(keys))
    async with running_app(env) as (app, addr), channel(addr) as ch:
        assert await stream_status(ch, FIRST, FIRST) == grpc.StatusCode.UNAUTHENTICATED
        assert await stream_status(ch, FIRST, FIRST, (("x-api-key", KEY),)) == grpc.StatusCode.OK
        s = await scrape(app)
        assert s.value(P + "grpc_requests_total", code="UNAUTHENTICATED") == 1
        assert s.value(P + "grpc_requests_total", code="OK") == 1
        assert s.value(P + "errors_total", type="Unauthenticated") == 1
        assert s.value(P + "auth_failures_total", reason="missing") == 1
        assert s.value(P + "sli_availability") == 1
        assert KEY not in s.text and "alice" not in s.text


@needs_testdata
async def test_storage_requests_count_gets_and_lists():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        assert app.lake is not None
        before, fetches = await scrape(app), app.lake.fetches
        assert before.value(P + "storage_requests_total", operation="list") > 0  # the newest and oldest lookups
        assert await stream_status(ch, FIRST, LAST) == grpc.StatusCode.OK
        s = await scrape(app)
        gets = s.value(P + "storage_requests_total", operation="get") - before.value(
            P + "storage_requests_total", operation="get"
        )
        assert gets == app.lake.fetches - fetches > 0  # each get once, as the lake counts them
        assert s.value(P + "storage_requests_total", backend="FS", operation="get", outcome="ok") >= gets
        for op in ("get", "list"):
            assert s.value(P + "storage_request_duration_seconds_count", backend="FS", operation=op) == s.value(
                P + "storage_requests_total", backend="FS", operation=op
            )
        assert s.value(P + "storage_inflight_requests", backend="FS") == 0
        assert "stellar_live_source_storage_fetches" not in s.text  # replaced
        for stage in ("decompress", "split", "frame"):
            assert s.value(P + "decode_duration_seconds_count", stage=stage) > 0
        assert s.value(P + "cache_misses_total") > 0


@needs_testdata
async def test_lag_of_a_stream_behind_the_tip():
    env = env_for(SHARED_LAKE, MAX_LEDGERS_PER_SECOND_PER_STREAM="40")  # 64 ledgers take 1.6 s
    async with running_app(env) as (app, addr), channel(addr) as ch:
        call = raw_stream(ch, FIRST)
        got = 0
        async for _ in call:
            got += 1
            if got == 70:  # the first object's run is counted; the second's is on its way
                break
        s = await scrape(app)
        sent = s.value(P + "ledgers_sent_total")
        assert sent == 64
        behind = s.value(P + "stream_lag_ledgers_max")
        assert behind == LAST - FIRST + 1 - sent  # the ledgers after those handed to gRPC
        assert s.value(P + "stream_lag_ledgers_sum") == behind
        assert s.value(P + "readahead_bytes_held") > 0  # the paced stream reads ahead
        call.cancel()
        await until(lambda: app.service.active == 0, what="the stream ends")
        s = await scrape(app)
        assert s.value(P + "stream_lag_ledgers_max") == s.value(P + "stream_lag_ledgers_sum") == 0
        assert s.value(P + "readahead_bytes_held") == 0


#: Label names the service's metrics may carry, each with bounded values.
LABELS = {"backend", "operation", "outcome", "method", "code", "type", "stage", "le", "reason", "limit", "result"}


@needs_testdata
async def test_no_label_carries_a_ledger_key_peer_or_client(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{KEY}\n")
    env = env_for(SHARED_LAKE, API_KEYS_FILE=str(keys))
    async with running_app(env) as (app, addr), channel(addr) as ch:
        assert await stream_status(ch, FIRST, LAST, (("x-api-key", KEY),)) == grpc.StatusCode.OK
        assert await stream_status(ch, 5) == grpc.StatusCode.OUT_OF_RANGE
        assert await range_status(ch, FIRST, FIRST + 10) == grpc.StatusCode.OK
        s = await scrape(app)
    for fam in s.families:
        if not fam.name.startswith(P) or fam.name == P + "build_info":  # the version, bounded
            continue
        for sample in fam.samples:
            assert set(sample.labels) <= LABELS, sample
            for name, value in sample.labels.items():
                if name == "le":
                    continue
                assert not re.search(r"\d{3,}", value), sample  # no ledger numbers, ports, sizes
                assert "127.0.0.1" not in value and "/" not in value and "--" not in value, sample
                assert value not in ("alice", KEY), sample


def documented() -> set[str]:
    """The series names docs/metrics.md lists: the first cell of each table row."""
    return set(re.findall(r"^\| `([a-z_:]+)`", DOC.read_text(), re.M))


def exported(s: Scrape) -> set[str]:
    """The names operators query: counters with ``_total``, info with ``_info``."""
    suffix = {"counter": "_total", "info": "_info"}
    return {fam.name + suffix.get(fam.type, "") for fam in s.families}


@needs_testdata
async def test_the_exported_metrics_are_the_documented_ones():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        assert await stream_status(ch, FIRST, FIRST + 70) == grpc.StatusCode.OK
        s = await scrape(app)
    names, doc = exported(s), documented()
    assert not names - doc, f"exported but not in docs/metrics.md: {sorted(names - doc)}"
    assert not doc - names, f"in docs/metrics.md but not exported: {sorted(doc - names)}"


def test_the_sli_window_rolls_and_the_split_of_good_and_bad():
    now = [0.0]
    sli = RollingSli(0.99, 100.0, clock=lambda: now[0])
    assert (sli.availability(), sli.budget_remaining()) == (1.0, 1.0)
    for _ in range(99):
        sli.record(True)
    sli.record(False)
    assert sli.availability() == pytest.approx(0.99)
    assert sli.budget_remaining() == pytest.approx(0.0)  # 1 bad of 100 at 99%: spent
    now[0] = 101.0  # the window has passed: nothing left of those calls
    assert (sli.availability(), sli.budget_remaining()) == (1.0, 1.0)
    assert len(sli._good) == 100  # bounded: one slot per step whatever the traffic
    good = ["OK", "CANCELLED", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "OUT_OF_RANGE", "UNAUTHENTICATED"]
    assert all(is_good(c, None) for c in good)
    assert is_good("RESOURCE_EXHAUSTED", "ClientLimit") and not is_good("RESOURCE_EXHAUSTED", "TooManyStreams")
    assert is_good("UNAVAILABLE", "Draining") and not is_good("UNAVAILABLE", "RetriesExhausted")
    for bad in ("DATA_LOSS", "NOT_FOUND", "INTERNAL", "UNKNOWN"):
        assert not is_good(bad, None)


def test_a_doors_refusal_without_a_class_is_a_client_limit_to_the_sli_too():
    """The door's per-client refusals end RESOURCE_EXHAUSTED naming no class:
    errors_total calls them ClientLimit, and the SLI must count them good as
    docs/metrics.md says (the fleet's recording rules split the same way)."""
    m = Metrics()
    m.call_ended("/raw_ledger_service.RawLedgerService/StreamRawLedgers", "RESOURCE_EXHAUSTED", None, None)
    m.call_ended("/raw_ledger_service.RawLedgerService/StreamRawLedgers", "UNAVAILABLE", None, None)
    assert m.registry.get_sample_value(P + "errors_total", {"type": "ClientLimit"}) == 1
    assert m.registry.get_sample_value(P + "errors_total", {"type": "Internal"}) == 1
    assert m.sli.availability() == pytest.approx(0.5)


async def test_readiness_is_exported_with_the_reasons_that_hold_it():
    from stellar_live_source.ops.readiness import STORAGE

    async with running_app(env_for(SHARED_LAKE)) as (app, _addr):
        registry = app.metrics.registry
        assert registry.get_sample_value(P + "ready") == 1
        assert registry.get_sample_value(P + "not_ready", {"reason": "starting"}) == 0
        app.readiness.hold(STORAGE, "storage circuit breaker open: test")
        assert registry.get_sample_value(P + "ready") == 0
        assert registry.get_sample_value(P + "not_ready", {"reason": "storage"}) == 1
        app.readiness.release(STORAGE)
        assert registry.get_sample_value(P + "ready") == 1
