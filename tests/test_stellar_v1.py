"""``stellar.v1.RawLedgerService`` served beside ``raw_ledger_service`` (issue 15):
the core's v1 frames (both twins, against protobuf's parser and the stellar-sdk's
decoding of closeTime), the cache counting them, and real grpc.aio clients over
loopback against the app: ledgers byte-exact, the network field, GetInfo,
HealthCheck, and the limits, keys, metrics and reflection the two services share."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stellar_live_source import api
from stellar_live_source.errors import BadRequest
from stellar_live_source.lake.objects import LakeObject, ObjectCache
from stellar_live_source.ops.readiness import DRAINING, STORAGE
from stellar_live_source.server.v1 import FUTURENET, PUBNET, TESTNET, check_network

from .conftest import LEDGERS, needs_testdata, outcome
from .service_support import SHARED_LAKE, env_for, index_by_seq, running_app, sha, until

FIRST, LAST = 1410048, 1410367
V1 = f"/{api.V1_SERVICE}/"
RawLedger = api.message("stellar.v1.RawLedger")
StreamReq = api.message("stellar.v1.StreamLedgersRequest")
RangeReq = api.message("stellar.v1.GetLedgerRangeRequest")
RangeResp = api.message("stellar.v1.GetLedgerRangeResponse")
ComponentInfo = api.message("flowctl.v1.ComponentInfo")
HealthReq = api.message("flowctl.v1.HealthCheckRequest")
HealthResp = api.message("flowctl.v1.HealthCheckResponse")
STATUS = api.POOL.FindEnumTypeByName("flowctl.v1.HealthStatus").values_by_name
KEY = "sk-v1-test-key-aaaaaaaaaaaa"

#: Real ledgers of every LedgerCloseMeta arm, one LedgerCloseMeta per file.
RAW_FILES = sorted((LEDGERS / "testnet" / "rpc_fixtures").glob("*.xdr")) + sorted((LEDGERS / "pubnet").glob("*_v0.xdr"))


def close_time(ledger: bytes) -> int:
    """scpValue.closeTime as the stellar-sdk decodes it."""
    from stellar_sdk import xdr

    lcm = xdr.LedgerCloseMeta.from_xdr_bytes(ledger)
    arm = {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}[lcm.v]
    assert arm is not None
    return int(arm.ledger_header.header.scp_value.close_time.time_point.uint64)


# -- the core's v1 frames --
@needs_testdata
def test_v1_frames_of_real_ledgers_match_protobuf_and_the_sdk_on_both_twins(twins):
    c, py = twins
    ledgers = [f.read_bytes() for f in RAW_FILES] + [
        f.read_bytes() for f in sorted((LEDGERS / "testnet" / "lighthorizon_1410048-1410367").iterdir())[:5]
    ]
    assert len(ledgers) >= 10
    frames = [c.frame.raw_ledger_frame(1000 + i, data, 0, len(data)) for i, data in enumerate(ledgers)]
    for network in (TESTNET, PUBNET, "", "ünïcode network"):
        got = c.index.v1_frames(frames, network)
        assert got == py.index.v1_frames(frames, network)  # the twins agree, byte for byte
        assert got[1] == sum(len(f) for f in got[0])
        for i, (frame, data) in enumerate(zip(got[0], ledgers, strict=True)):
            msg = RawLedger.FromString(frame)
            assert (msg.sequence, msg.ledger_close_meta_xdr, msg.network) == (1000 + i, data, network)
            assert msg.closed_at == close_time(data) > 1_400_000_000
            assert frame == msg.SerializeToString(deterministic=True)  # canonical: field order, defaults omitted
            assert frame.startswith(frames[i])  # the RawLedger frame, then fields 3 and 4


def test_v1_frames_refuse_what_is_not_a_raw_ledger_frame_alike(twins):
    c, py = twins
    ledger = RAW_FILES[0].read_bytes() if RAW_FILES else b""
    good = c.frame.raw_ledger_frame(7, ledger, 0, len(ledger))
    cases: list[tuple[Any, Any]] = [
        ([b""], TESTNET),
        ([b"\x08\x07"], TESTNET),  # no ledger
        ([b"\x08\x07\x12\x05abc"], TESTNET),  # a length past the end
        ([b"\x08\x07\x12\x02abc"], TESTNET),  # bytes after the ledger
        ([b"\x08\xff\xff\xff\xff\x7f\x12\x00"], TESTNET),  # a sequence over uint32
        ([b"\x12\x0a" + b"\x00" * 10], TESTNET),  # a ledger too short for a header
        ([good, good[:-40] if ledger else b"x"], TESTNET),
        ([good], None),
        ([good], b"testnet"),
    ]
    for frames, network in cases:
        expected = outcome(c.index.v1_frames, frames, network)
        assert expected == outcome(py.index.v1_frames, frames, network), (frames[:1], network)
        assert expected[0] is not "ok", (frames[:1], network)  # noqa: F632 - the outcome's tag


# -- the cache --
def _object(start: int, size: int) -> LakeObject:
    data = RAW_FILES[0].read_bytes()
    from stellar_live_source.core import frame

    frames = [frame.raw_ledger_frame(start, data, 0, len(data))]
    return LakeObject(f"k{start}", start, start, frames, b"", b"", size)


@needs_testdata
def test_v1_frames_are_built_once_and_counted_by_the_cache():
    one = _object(64, 10_000)
    cache = ObjectCache(31_000)
    cache.put(64, one)
    cache.put(128, _object(128, 10_000))
    assert cache.bytes == 20_000
    built = cache.v1_frames(64, one, TESTNET)
    extra = len(built[0])
    assert extra > len(one.frames[0]) > 1_000 and cache.bytes == 20_000 + extra  # the v1 frames count too
    assert cache.v1_frames(64, one, TESTNET) is built  # built once, shared
    assert cache.bytes == 20_000 + extra and one.held == 10_000 + extra
    cache.put(192, _object(192, 10_000))  # past the cap: the least recently used goes, not the one just used
    assert cache.peek(128) is None and cache.peek(64) is one and cache.bytes == 20_000 + extra
    cache.drop(64)
    assert cache.bytes == 10_000
    # An object its v1 frames push past the cap leaves the cache; its callers keep it.
    small = ObjectCache(10_000 + 10)
    big = _object(256, 10_000)
    small.put(256, big)
    assert small.v1_frames(256, big, TESTNET)[0].startswith(big.frames[0])
    assert small.peek(256) is None and small.bytes == 0
    small.put(256, big)  # never cached again at its full size
    assert small.bytes == 0


def test_the_network_check():
    for asked in ("", "testnet", "TestNet", TESTNET):
        check_network(asked, TESTNET)
    for asked in ("pubnet", "mainnet", PUBNET):
        check_network(asked, PUBNET)
    check_network("futurenet", FUTURENET)
    for asked, served in (("pubnet", TESTNET), ("futurenet", PUBNET), ("nope", TESTNET), (PUBNET, TESTNET)):
        with pytest.raises(BadRequest, match=r"^network "):
            check_network(asked, served)
    with pytest.raises(BadRequest, match="NETWORK_PASSPHRASE"):
        check_network("testnet", "")
    check_network("", "")


# -- over loopback --
def _channel(addr: str) -> Any:
    return grpc.aio.insecure_channel(addr)


async def _stream(ch: Any, start: int, n: int, network: str = "", metadata: Any = ()) -> list[Any]:
    call = ch.unary_stream(V1 + "StreamRawLedgers")(
        StreamReq(start_ledger=start, network=network).SerializeToString(), metadata=metadata, timeout=20
    )
    out = []
    async for frame in call:
        out.append(RawLedger.FromString(frame))
        if len(out) == n:
            call.cancel()
            break
    return out


async def _code(aw: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await aw
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _unary(ch: Any, method: str, request: Any, reply: Any, metadata: Any = ()) -> Any:
    return reply.FromString(await ch.unary_unary(V1 + method)(request.SerializeToString(), metadata=metadata))


@needs_testdata
async def test_stream_and_range_are_byte_exact_with_network_and_close_time():
    rows = index_by_seq()
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), _channel(addr) as ch:
        got = await _stream(ch, FIRST + 60, 10)  # across the first object's end (64 per object)
        assert [m.sequence for m in got] == list(range(FIRST + 60, FIRST + 70))
        for m in got:
            assert sha(m.ledger_close_meta_xdr) == rows[m.sequence]["sha256"]
            assert m.network == TESTNET and m.closed_at == close_time(m.ledger_close_meta_xdr)
        assert got[-1].closed_at > got[0].closed_at
        # The same lake's raw_ledger_service frames are untouched by the v1 ones the cache now holds.
        raw = ch.unary_stream(api.STREAM_METHOD)(
            api.StreamLedgersRequest(start_ledger=FIRST + 60, end_ledger=FIRST + 69).SerializeToString(), timeout=20
        )
        raw_frames = [f async for f in raw]
        assert raw_frames == [
            api.RawLedger(sequence=m.sequence, ledger_close_meta_xdr=m.ledger_close_meta_xdr).SerializeToString()
            for m in got
        ]
        # GetLedgerRange: end exclusive, the newest ledger beside.
        reply = await _unary(ch, "GetLedgerRange", RangeReq(start_ledger=FIRST, end_ledger=FIRST + 3), RangeResp)
        assert [m.sequence for m in reply.ledgers] == [FIRST, FIRST + 1, FIRST + 2] and reply.latest_ledger == LAST
        for m in reply.ledgers:
            assert sha(m.ledger_close_meta_xdr) == rows[m.sequence]["sha256"] and m.network == TESTNET
            assert m.closed_at == close_time(m.ledger_close_meta_xdr)
        assert app.lake is not None and app.lake.cache.bytes == sum(o.held for o in app.lake.cache._items.values())


@needs_testdata
async def test_network_names_and_passphrases(tmp_path: Path):
    async with running_app(env_for(SHARED_LAKE)) as (_, addr), _channel(addr) as ch:
        for network in ("testnet", TESTNET):
            assert [m.sequence for m in await _stream(ch, FIRST, 2, network)] == [FIRST, FIRST + 1]
            reply = await _unary(
                ch, "GetLedgerRange", RangeReq(start_ledger=FIRST, end_ledger=FIRST + 1, network=network), RangeResp
            )
            assert len(reply.ledgers) == 1
        for network in ("pubnet", "mainnet", "futurenet", PUBNET, "Test SDF Network"):
            code, details = await _code(_stream(ch, FIRST, 1, network))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("network "), details
            call = ch.unary_unary(V1 + "GetLedgerRange")(
                RangeReq(start_ledger=FIRST, end_ledger=FIRST + 1, network=network).SerializeToString()
            )
            code, details = await _code(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("network "), details
    # A pubnet lake (no manifest; NETWORK_PASSPHRASE names it): its names are accepted.
    lake = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, lake)
    (lake / ".config.json").unlink()
    env = env_for(lake, LEDGERS_PER_FILE=64, FILES_PER_PARTITION=10)
    async with running_app(env | {"NETWORK_PASSPHRASE": PUBNET}) as (_, addr), _channel(addr) as ch:
        for network in ("pubnet", "mainnet", PUBNET, ""):
            assert [m.network for m in await _stream(ch, FIRST, 1, network)] == [PUBNET]
        code, _ = await _code(_stream(ch, FIRST, 1, "testnet"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    # A lake whose network is not known: the field is empty, and naming one says what to set.
    async with running_app(env) as (_, addr), _channel(addr) as ch:
        got = await _stream(ch, FIRST, 1)
        assert got[0].network == "" and got[0].closed_at == close_time(got[0].ledger_close_meta_xdr)
        code, details = await _code(_stream(ch, FIRST, 1, "testnet"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "NETWORK_PASSPHRASE" in details


@needs_testdata
async def test_get_info_and_health_check():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), _channel(addr) as ch:
        assert app.bound is not None
        info = await _unary(ch, "GetInfo", empty_pb2.Empty(), ComponentInfo)
        assert (
            info.type
            == api.POOL.FindEnumTypeByName("flowctl.v1.ComponentType").values_by_name["COMPONENT_TYPE_SOURCE"].number
        )
        assert info.endpoint.endswith(f":{app.bound.grpc_port}") and info.name and info.version
        assert info.metadata["network"] == TESTNET and "raw_ledger_service.RawLedgerChunk" in info.output_event_types

        await _stream(ch, FIRST + 60, 5)  # the first object's run (4 ledgers) sent whole, so counted
        reply = await _unary(ch, "HealthCheck", HealthReq(), HealthResp)
        assert reply.status == STATUS["HEALTH_STATUS_HEALTHY"].number and reply.message == ""
        assert reply.metrics["newest_ledger"] == str(LAST) and int(reply.metrics["ledgers_sent"]) >= 4
        assert {"ledgers_sent", "errors", "bytes_sent", "active_streams"} <= set(reply.metrics)
        assert not reply.components  # only with include_details

        app.readiness.hold(STORAGE, "storage circuit breaker open: test")
        reply = await _unary(ch, "HealthCheck", HealthReq(include_details=True), HealthResp)
        assert reply.status == STATUS["HEALTH_STATUS_DEGRADED"].number and "circuit breaker open" in reply.message
        parts = {c.component_name: c for c in reply.components}
        assert {"lake", "storage", "grpc"} <= set(parts)
        assert parts["grpc"].status == STATUS["HEALTH_STATUS_HEALTHY"].number
        app.readiness.release(STORAGE)

        app.readiness.hold(DRAINING, "the server is shutting down")
        reply = await _unary(ch, "HealthCheck", HealthReq(), HealthResp)
        assert reply.status == STATUS["HEALTH_STATUS_STOPPING"].number and "shutting down" in reply.message
        app.readiness.release(DRAINING)
        reply = await _unary(ch, "HealthCheck", HealthReq(), HealthResp)
        assert reply.status == STATUS["HEALTH_STATUS_HEALTHY"].number


@needs_testdata
async def test_limits_keys_metrics_health_and_reflection_are_shared(tmp_path: Path):
    async with running_app(env_for(SHARED_LAKE, MAX_CONCURRENT_STREAMS=1)) as (app, addr), _channel(addr) as ch:
        # One stream open on either service: the other service refuses the next.
        raw = ch.unary_stream(api.STREAM_METHOD)(api.StreamLedgersRequest(start_ledger=LAST - 1).SerializeToString())
        await raw.read()
        code, details = await _code(_stream(ch, FIRST, 1))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "MAX_CONCURRENT_STREAMS" in details
        raw.cancel()
        await until(lambda: app.service.active == 0, 5, "the raw stream released")
        v1 = ch.unary_stream(V1 + "StreamRawLedgers")(StreamReq(start_ledger=LAST - 1).SerializeToString())
        await v1.read()
        code, _ = await _code(
            ch.unary_unary(api.RANGE_METHOD)(
                api.GetLedgerRangeRequest(start_ledger=FIRST, end_ledger=FIRST + 1).SerializeToString()
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        v1.cancel()
        await until(lambda: app.service.active == 0, 5, "the v1 stream released")
        # Malformed requests: INVALID_ARGUMENT, counted under the v1 method labels.
        code, _ = await _code(ch.unary_unary(V1 + "GetLedgerRange")(b"\xff\xff\xff"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _ = await _code(_stream_bytes(ch, b"\x0a\x05ab"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        requests = app.metrics.registry.get_sample_value
        name = "stellar_live_source_grpc_requests_total"
        assert requests(name, {"method": "stellar.v1.GetLedgerRange", "code": "INVALID_ARGUMENT"}) == 1
        assert requests(name, {"method": "stellar.v1.StreamRawLedgers", "code": "RESOURCE_EXHAUSTED"}) == 1
        # gRPC health and reflection name the service.
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=api.V1_SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([listing]))]
        assert api.V1_SERVICE in {s.name for s in responses[0].list_services_response.service}

    keys = tmp_path / "keys"
    keys.write_text(f"alice:{KEY}\n")
    env = env_for(SHARED_LAKE, API_KEY_REQUIRED="true", API_KEYS_FILE=str(keys), ALLOW_INSECURE_API_KEYS="true")
    async with running_app(env) as (_, addr), _channel(addr) as ch:
        for method, request, reply in (
            ("GetInfo", empty_pb2.Empty(), ComponentInfo),
            ("HealthCheck", HealthReq(), HealthResp),
            ("GetLedgerRange", RangeReq(start_ledger=FIRST, end_ledger=FIRST + 1), RangeResp),
        ):
            code, _ = await _code(_unary(ch, method, request, reply))
            assert code == grpc.StatusCode.UNAUTHENTICATED, method
            await _unary(ch, method, request, reply, (("x-api-key", KEY),))
        code, _ = await _code(_stream(ch, FIRST, 1))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert len(await _stream(ch, FIRST, 2, metadata=(("x-api-key", KEY),))) == 2


async def _stream_bytes(ch: Any, request: bytes) -> list[bytes]:
    return [f async for f in ch.unary_stream(V1 + "StreamRawLedgers")(request, timeout=10)]


@needs_testdata
async def test_draining_ends_v1_streams_with_unavailable():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), _channel(addr) as ch:
        call = ch.unary_stream(V1 + "StreamRawLedgers")(StreamReq(start_ledger=LAST).SerializeToString(), timeout=20)
        assert RawLedger.FromString(await call.read()).sequence == LAST  # now waiting at the tip
        app.service.draining.set()
        code, details = await _code(call.read())
        assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
        app.service.draining.clear()


@needs_testdata
async def test_large_objects_v1_frames_are_built_off_the_loop_once_for_every_caller(monkeypatch):
    """Over INLINE_DECODE_BYTES the second copy of every ledger is made on the
    decode threads, not the event loop; callers share one build, and one
    caller going away does not cancel it for the others."""
    import asyncio
    import threading

    from stellar_live_source.core import index
    from stellar_live_source.lake import lake as lake_module
    from stellar_live_source.lake.lake import INLINE_DECODE_BYTES, Lake

    from .service_support import lake_settings, storage_for

    builds: list[str] = []
    real = index.v1_frames

    def counted(frames: list[bytes], network: str) -> tuple[list[bytes], int]:
        builds.append(threading.current_thread().name)
        return real(frames, network)

    monkeypatch.setattr(lake_module.index, "v1_frames", counted)
    lake = await Lake.open(storage_for("FS", bucket=str(SHARED_LAKE)), lake_settings())
    try:
        obj = await lake.object(lake.file_start(FIRST))
        assert obj is not None
        big = LakeObject(
            obj.key, obj.start, obj.end, obj.frames, obj.first_prev, obj.last_hash, INLINE_DECODE_BYTES + 1
        )
        leaving = asyncio.ensure_future(lake.v1_frames(big, TESTNET))
        await asyncio.sleep(0)
        staying = [asyncio.ensure_future(lake.v1_frames(big, TESTNET)) for _ in range(3)]
        leaving.cancel()
        got = await asyncio.gather(*staying)
        assert all(g is got[0] for g in got) and len(got[0]) == obj.end - obj.start + 1
        assert len(builds) == 1 and builds[0].startswith("decode"), builds  # one build, on a decode thread
        assert [RawLedger.FromString(f).sequence for f in got[0][:2]] == [obj.start, obj.start + 1]
        small = await lake.v1_frames(obj, TESTNET)  # the real object (small): built on the loop
        assert builds[1] == threading.current_thread().name and small[0] == got[0][0]
    finally:
        await lake.close()
