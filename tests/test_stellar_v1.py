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
    assert one.frames is not None and extra > len(one.frames[0]) > 1_000
    assert cache.bytes == 20_000 + extra  # the v1 frames count too
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
    assert big.frames is not None and small.v1_frames(256, big, TESTNET)[0].startswith(big.frames[0])
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


# -- one copy per ledger: objects decoded for a v1 call (issue 15's speed) --
def _lake_objects() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SHARED_LAKE.rglob("*.zst*"))]


@needs_testdata
def test_frame_ledgers_builds_v1_frames_from_the_buffer_and_raw_frames_cut_back_out_on_both_twins(twins):
    from stellar_live_source.core import walk, zstd

    c, py = twins
    objects = _lake_objects()
    assert len(objects) == 5
    for raw in objects:
        data = zstd.decompress(raw, 1 << 30)
        start, end, spans = walk.split_batch(data)
        framed = c.index.frame_ledgers(data, spans, start, end)
        for network in (TESTNET, PUBNET, "", "ünïcode network"):
            v1 = c.index.frame_ledgers(data, spans, start, end, True, network)
            assert v1 == py.index.frame_ledgers(data, spans, start, end, True, network)  # twins agree
            # What v1_frames makes of the RawLedger frames, byte for byte, and the same chain facts.
            assert (v1[0], v1[3]) == c.index.v1_frames(framed[0], network)
            assert v1[1:3] == framed[1:3] and v1[4] == framed[4] and v1[3] > framed[3]
            back = c.index.raw_frames(v1[0])
            assert back == py.index.raw_frames(v1[0]) == (framed[0], framed[3])  # the decode's RawLedger frames
        msg = RawLedger.FromString(v1[0][-1])
        assert msg.sequence == end and msg.closed_at == close_time(msg.ledger_close_meta_xdr)


def test_raw_frames_and_frame_ledgers_network_refuse_alike(twins):
    c, py = twins
    cases: list[Any] = [
        [b""],
        [b"\x08\x07"],  # no ledger
        [b"\x08\x07\x12\x05abc"],  # a length past the end
        [b"\x12\x02ab"],  # no sequence
        [b"\x08\xff\xff\xff\xff\x7f\x12\x00"],  # a sequence over uint32
        [b"\x08\x07\x12\x02ab\x1a\x01x", 5],
        [b"\x08\x07\x12\x02ab", b"\x08\x07\x13\x00"],  # the second frame is not one
    ]
    for frames in cases:
        expected = outcome(c.index.raw_frames, frames)
        assert expected == outcome(py.index.raw_frames, frames), frames
        assert expected[0] is not "ok", frames  # noqa: F632 - the outcome's tag
    assert outcome(c.index.raw_frames, [b"\x08\x07\x12\x02ab\x1a\x01x \x05"])[1] == ([b"\x08\x07\x12\x02ab"], 6)
    for network in (5, b"testnet"):
        expected = outcome(c.index.frame_ledgers, b"", [], 1, 0, True, network)
        assert expected == outcome(py.index.frame_ledgers, b"", [], 1, 0, True, network)
        assert "network must be a str" in str(expected)


def _v1_object(start: int, size: int) -> LakeObject:
    """An object as a v1 call decodes it: v1 frames, no RawLedger frames (``size``: what they count for)."""
    from stellar_live_source.core import frame, index

    data = RAW_FILES[0].read_bytes()
    obj = LakeObject(f"k{start}", start, start, None, b"", b"", 0)
    obj.v1[TESTNET] = (index.v1_frames([frame.raw_ledger_frame(start, data, 0, len(data))], TESTNET)[0], size)
    return obj


@needs_testdata
def test_raw_frames_of_a_v1_decoded_object_are_built_once_and_counted_by_the_cache():
    one = _v1_object(64, 10_000)
    cache = ObjectCache(31_000)
    cache.put(64, one)
    cache.put(128, _v1_object(128, 10_000))
    assert cache.bytes == 20_000 and one.held == 10_000 and one.frames is None
    built = cache.raw_frames(64, one)
    extra = len(built[0])
    assert one.nbytes == extra and cache.bytes == 20_000 + extra and one.held == 10_000 + extra
    assert cache.raw_frames(64, one) is built  # built once, shared
    assert cache.v1_frames(64, one, TESTNET) is one.v1[TESTNET][0]  # the v1 frames were there all along
    assert cache.bytes == 20_000 + extra
    assert one.v1[TESTNET][0][0].startswith(built[0]) and RawLedger.FromString(one.v1[TESTNET][0][0]).network
    cache.put(192, _v1_object(192, 10_000))  # past the cap: the least recently used goes
    assert cache.peek(128) is None and cache.peek(64) is one and cache.bytes == 20_000 + extra
    cache.drop(64)
    assert cache.bytes == 10_000
    small = ObjectCache(10_000 + 10)  # RawLedger frames that push it past the cap: out of the cache
    big = _v1_object(256, 10_000)
    small.put(256, big)
    assert small.bytes == 10_000
    small.raw_frames(256, big)
    assert small.peek(256) is None and small.bytes == 0 and big.frames is not None


def _held_bytes(obj: LakeObject) -> int:
    """Bytes of every frame list ``obj`` holds, counted from the frames themselves."""
    return sum(len(f) for f in obj.frames or []) + sum(len(f) for frames, _ in obj.v1.values() for f in frames)


def _check_cache(app: Any) -> list[LakeObject]:
    cache = app.lake.cache
    cached = list(cache._items.values())
    assert cached and cache.bytes == sum(_held_bytes(o) for o in cached) == sum(o.held for o in cached)
    return cached


async def _raw_stream(ch: Any, start: int, end: int) -> list[bytes]:
    call = ch.unary_stream(api.STREAM_METHOD)(
        api.StreamLedgersRequest(start_ledger=start, end_ledger=end).SerializeToString(), timeout=20
    )
    return [f async for f in call]


def _count_builds(monkeypatch: Any) -> dict[str, list[int]]:
    """Calls of the core's builders of a second shape, by name: the first ledger of each object built."""
    from stellar_live_source.core import index

    calls: dict[str, list[int]] = {"v1_frames": [], "raw_frames": []}

    def counting(name: str) -> Any:
        real = getattr(index, name)

        def counted(*args: Any) -> Any:
            calls[name].append(api.RawLedger.FromString(args[0][0]).sequence)
            return real(*args)

        return counted

    for name in calls:
        monkeypatch.setattr(index, name, counting(name))
    return calls


@needs_testdata
@pytest.mark.parametrize("v1_first", [True, False], ids=["v1-then-raw", "raw-then-v1"])
async def test_either_shape_first_then_the_other_is_byte_exact_with_one_copy_and_exact_cache_bytes(
    v1_first: bool, monkeypatch: Any
):
    """A cold v1 stream decodes its objects straight into v1 frames: no
    RawLedger frames exist until a raw call asks, then they are cut out once;
    the other way round, v1 frames are built from the RawLedger ones. Both
    orders byte-exact against INDEX, the cache counting every frame list."""
    rows = index_by_seq()
    calls = _count_builds(monkeypatch)
    start, n = FIRST + 1, 126  # across the first two objects (64 per object), not the tip's
    seqs = list(range(start, start + n))
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), _channel(addr) as ch:
        assert app.lake is not None
        tip = app.lake._tip  # read raw at start-up, to learn the newest ledger
        assert tip is not None and tip.start > start + n
        if v1_first:
            got = await _stream(ch, start, n)
            # One copy per ledger, the decode's: v1 frames built from RawLedger ones only for the tip.
            assert set(calls["v1_frames"]) <= {tip.start} and calls["raw_frames"] == []
            for file_start in (FIRST, FIRST + 64):
                obj = app.lake.cache.peek(file_start)
                assert obj is not None and obj.frames is None and obj.nbytes == 0 and list(obj.v1) == [TESTNET]
            _check_cache(app)
            raw = await _raw_stream(ch, start, start + n - 1)
            assert calls["raw_frames"] == [FIRST, FIRST + 64]  # cut out once per object, on demand
        else:
            raw = await _raw_stream(ch, start, start + n - 1)
            assert calls == {"v1_frames": [], "raw_frames": []}
            got = await _stream(ch, start, n)
            assert calls["v1_frames"][:2] == [FIRST, FIRST + 64] and calls["raw_frames"] == []
        assert [m.sequence for m in got] == seqs
        for m in got:
            assert sha(m.ledger_close_meta_xdr) == rows[m.sequence]["sha256"]
            assert m.network == TESTNET and m.closed_at == close_time(m.ledger_close_meta_xdr)
        assert [api.RawLedger.FromString(f).sequence for f in raw] == seqs
        for f, seq in zip(raw, seqs, strict=True):
            assert sha(api.RawLedger.FromString(f).ledger_close_meta_xdr) == rows[seq]["sha256"]
        # raw_ledger_service frames byte-identical to those of a raw decode, whichever came first.
        assert raw == [
            api.RawLedger(sequence=m.sequence, ledger_close_meta_xdr=m.ledger_close_meta_xdr).SerializeToString()
            for m in got
        ]
        for file_start in (FIRST, FIRST + 64):
            obj = app.lake.cache.peek(file_start)
            assert obj is not None and obj.frames is not None and TESTNET in obj.v1
            assert obj.held == obj.nbytes + obj.v1[TESTNET][1] == _held_bytes(obj)
        _check_cache(app)


@needs_testdata
async def test_large_v1_decoded_objects_raw_frames_are_cut_out_off_the_loop_once_for_every_caller(monkeypatch):
    import asyncio
    import threading

    from stellar_live_source.core import index
    from stellar_live_source.lake.lake import INLINE_DECODE_BYTES, Lake

    from .service_support import lake_settings, storage_for

    builds: list[str] = []
    real = index.raw_frames

    def counted(frames: list[bytes]) -> tuple[list[bytes], int]:
        builds.append(threading.current_thread().name)
        return real(frames)

    monkeypatch.setattr(index, "raw_frames", counted)
    lake = await Lake.open(storage_for("FS", bucket=str(SHARED_LAKE)), lake_settings())
    try:
        raw_obj = await lake._fetch(lake.file_start(FIRST))
        obj = await lake.object(lake.file_start(FIRST), network=TESTNET)  # a cold v1 fetch
        assert raw_obj is not None and obj is not None and obj.frames is None and not builds
        assert obj.v1[TESTNET][0] == index.v1_frames(raw_obj.frames, TESTNET)[0]
        big = LakeObject(obj.key, obj.start, obj.end, None, obj.first_prev, obj.last_hash, 0)
        big.v1[TESTNET] = (obj.v1[TESTNET][0], INLINE_DECODE_BYTES + 1)
        leaving = asyncio.ensure_future(lake.raw_frames(big))
        await asyncio.sleep(0)
        staying = [asyncio.ensure_future(lake.raw_frames(big)) for _ in range(3)]
        leaving.cancel()
        got = await asyncio.gather(*staying)
        assert all(g is got[0] for g in got) and got[0] == raw_obj.frames  # byte-identical to a raw decode
        assert len(builds) == 1 and builds[0].startswith("decode"), builds  # one build, on a decode thread
        assert big.frames is got[0] and big.nbytes == raw_obj.nbytes and big.raw_building is None
        assert lake.prepare_raw(big) is None  # built: nothing to start
        small = await lake.raw_frames(obj)  # the real object (small): cut out on the loop
        assert builds[1] == threading.current_thread().name and small == raw_obj.frames
        cached = lake.cache.peek(lake.file_start(FIRST))
        assert cached is obj and lake.cache.bytes == obj.held == _held_bytes(obj)
    finally:
        await lake.close()
