"""The application around the stream: one readiness rule for /ready and gRPC
health, liveness on /health, the HTTP listeners (aiohttp), metrics,
reflection, and listeners on ports the kernel picks."""

from __future__ import annotations

import asyncio
import json
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stellar_live_source import api, parts
from stellar_live_source.client import Client
from stellar_live_source.core import BACKEND, index
from stellar_live_source.ops.config import load
from stellar_live_source.ops.readiness import DRAINING
from stellar_live_source.server.app import App

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, collect, env_for, http_get, running_app, server_process

pytestmark = needs_testdata

FIRST, LAST = 1410048, 1410367
SERVICES = ("", api.SERVICE)


async def _get(port: int | None, path: str) -> tuple[int, dict]:
    assert port is not None, f"no listener to ask for {path}"
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}{path}", 5)
    return status, json.loads(body) if path != "/metrics" else {"text": body.decode()}


async def _grpc_health(addr: str) -> list[int]:
    async with grpc.aio.insecure_channel(addr) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        return [(await check(health_pb2.HealthCheckRequest(service=s), timeout=5)).status for s in SERVICES]


async def _until_grpc_health(addr: str, status: int) -> None:
    for _ in range(200):
        if await _grpc_health(addr) == [status, status]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gRPC health never became {status}: {await _grpc_health(addr)}")


SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def test_one_readiness_rule_for_ready_and_grpc_health_while_health_stays_live():
    """Listening but the lake not open: alive, not ready, and gRPC health says
    NOT_SERVING for "" too (grpcio's servicer would say SERVING); streams are
    told to retry. Lake open and its newest ledger known: ready everywhere.
    Any reason held (here: draining): not ready everywhere, still alive."""
    app = App(parts.build(load(env_for(SHARED_LAKE))))
    bound = await app.listen()
    addr = f"127.0.0.1:{bound.grpc_port}"
    try:
        status, report = await _get(bound.health_port, "/health")
        assert status == 200 and report["ready"] is False and "starting" in report["reasons"]
        assert report["newest_ledger"] is None
        assert (await _get(bound.health_port, "/ready"))[0] == 503
        assert await _grpc_health(addr) == [NOT_SERVING, NOT_SERVING]
        async with Client(addr, max_retries=0) as client:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await anext(client.stream(FIRST, FIRST))
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "starting" in (exc.value.details() or "")

        await app.open()
        status, report = await _get(bound.health_port, "/ready")
        assert status == 200 and report["ready"] is True and report["reasons"] == {}
        assert report["newest_ledger"] == LAST
        await _until_grpc_health(addr, SERVING)

        app.readiness.hold(DRAINING, "the server is shutting down")
        assert (await _get(bound.health_port, "/ready"))[0] == 503
        status, report = await _get(bound.health_port, "/health")
        assert status == 200 and report["reasons"] == {DRAINING: "the server is shutting down"}
        await _until_grpc_health(addr, NOT_SERVING)
        app.readiness.release(DRAINING)
        await _until_grpc_health(addr, SERVING)
    finally:
        await app.stop(1.0)


async def test_health_reflection_and_metrics():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        assert app.bound is not None  # listening
        assert await _grpc_health(addr) == [SERVING, SERVING]
        async with grpc.aio.insecure_channel(addr) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
            names = {s.name for s in responses[0].list_services_response.service}
            assert {api.SERVICE, "grpc.health.v1.Health"} <= names
        port = app.bound.health_port
        _, report = await _get(port, "/health")
        assert (report["oldest_ledger"], report["newest_ledger"]) == (FIRST, LAST)  # before any stream asked
        await collect(addr, FIRST, FIRST + 9)
        _, report = await _get(port, "/health")
        assert report["status"] == "SERVING" and report["core_backend"] == BACKEND
        assert report["header_hash"] == index.SHA256 and report["active_streams"] == 0
        metrics = (await _get(app.bound.metrics_port, "/metrics"))[1]["text"]
        assert "stellar_live_source_ledgers_sent_total 10.0" in metrics
        assert f'core_backend="{BACKEND}"' in metrics and f'header_hash="{index.SHA256}"' in metrics
        assert (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/nope"))[0] == 404


def _raw_http(port: int, data: bytes) -> bytes:
    """What the server answers to these bytes, up to when it closes (5 s at most)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


async def test_malformed_huge_and_slow_requests_get_the_librarys_answer_and_stall_nothing(caplog):
    caplog.set_level("INFO")
    async with running_app(env_for(SHARED_LAKE)) as (app, addr):
        assert app.bound is not None and app.bound.health_port is not None  # listening
        port = app.bound.health_port
        # A client that sends half a request and then nothing holds only its own connection.
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            for s in slow:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
                answer = await asyncio.to_thread(_raw_http, port, garbage)  # not HTTP; a TLS handshake
                assert answer.split(b" ", 2)[1] == b"400", answer[:100]
            huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
            answer = await asyncio.to_thread(_raw_http, port, huge)
            assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:100]
            many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 1000 + b"\r\n"
            assert (await asyncio.to_thread(_raw_http, port, many)).split(b" ", 2)[1] in (b"400", b"431")
            # Meanwhile everything else answers: probes, metrics, streams.
            assert (await _get(port, "/health"))[0] == 200
            assert (await _get(app.bound.metrics_port, "/metrics"))[0] == 200
            assert len(await collect(addr, FIRST, FIRST + 3)) == 4
            # Nothing of theirs in the log above debug: bad clients cannot flood it.
            assert [r.getMessage() for r in caplog.records if "bad request" in r.getMessage() or r.exc_info] == []
        finally:
            for s in slow:
                s.close()


@pytest.mark.parametrize(("health", "metrics"), [("false", "true"), ("true", "false"), ("false", "false")])
async def test_listeners_can_be_switched_off(health, metrics):
    env = env_for(SHARED_LAKE, HEALTH_ENABLED=health, METRICS_ENABLED=metrics)
    async with running_app(env) as (app, addr):
        assert app.bound is not None  # listening
        assert (app.bound.health_port is not None) == (health == "true")
        assert (app.bound.metrics_port is not None) == (metrics == "true")
        assert len(await collect(addr, FIRST, FIRST)) == 1


def test_serve_binds_port_0_and_reports_the_ports_in_a_file_and_one_log_line():
    with server_process(env_for(SHARED_LAKE)) as srv:
        ports = srv.ports
        assert set(ports) == {"grpc", "health", "metrics"}
        assert len({ports["grpc"], ports["health"], ports["metrics"]}) == 3 and 0 not in ports.values()
        assert http_get(srv.url("/ready"))[0] == 200
        assert http_get(srv.url("/metrics"))[0] == 200
        got = asyncio.run(collect(srv.addr, FIRST, FIRST + 1))
        assert [s for s, _ in got] == [FIRST, FIRST + 1]


async def test_the_ports_bound_are_logged_in_one_line(caplog):
    caplog.set_level("INFO", logger="stellar_live_source.server")
    async with running_app(env_for(SHARED_LAKE)) as (app, _):
        b = app.bound
        assert b is not None  # listening
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listening on")]
        assert lines == [
            f"listening on 127.0.0.1: grpc {b.grpc_port}, health {b.health_port}, metrics {b.metrics_port}"
        ]


async def test_a_port_in_use_is_a_configuration_error_naming_the_setting():
    from stellar_live_source.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for setting in ("SERVER_PORT", "HEALTH_PORT", "METRICS_PORT"):
            app = App(parts.build(load(env_for(SHARED_LAKE, **{setting: port}))))
            with pytest.raises(ConfigError, match=f"^{setting}={port}: cannot listen"):
                await app.listen()


async def test_stop_ends_a_background_task_that_swallowed_its_cancellation():
    """Python 3.11's asyncio.wait_for can swallow a cancellation that lands as
    what it awaits finishes: the task then runs on. ``cancelled`` cancels again
    until the task has ended, so ``stop`` cannot wait for it forever."""
    from stellar_live_source.server.app import cancelled

    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(cancelled(task), 10)
    assert task.cancelled() and swallowed == 3
