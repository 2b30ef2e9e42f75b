"""flowctl registration (ENABLE_FLOWCTL=true) against a control plane built in
the tests from the same definitions (tests/support/controlplane.py), both
APIs: what is registered, what heartbeats carry, re-registration after the
control plane forgot the service, and that no control plane trouble (down,
failing, never answering) holds the service back or delays its shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest

from stellar_live_source import __version__, parts
from stellar_live_source.core import BACKEND
from stellar_live_source.ops.config import load
from stellar_live_source.ops.readiness import STORAGE
from stellar_live_source.server.app import App

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, collect, env_for, running_app, until
from .support.controlplane import control_plane, free_port, silent_endpoint

pytestmark = needs_testdata

FIRST = 1410048
TESTNET = "Test SDF Network ; September 2015"


def flowctl_env(endpoint: str, api: str = "v1", **extra: object) -> dict[str, str]:
    settings: dict[str, object] = {
        "ENABLE_FLOWCTL": "true",
        "FLOWCTL_ENDPOINT": endpoint,
        "FLOWCTL_API": api,
        "FLOWCTL_HEARTBEAT_INTERVAL": "100ms",
        "FLOWCTL_ADVERTISE_HOST": "source.test",
    }
    return env_for(SHARED_LAKE, **(settings | extra))


async def test_v1_registers_the_component_and_heartbeats_with_the_id_returned():
    async with control_plane("v1") as cp:
        env = flowctl_env(cp.address, FLOWCTL_COMPONENT_ID="stellar-source", FLOWCTL_SERVICE_ID="svc-7")
        async with running_app(env) as (app, _):
            await until(cp.settled, 5, "registered with the lake open and heartbeating")
            last = cp.registrations[-1]
            c = last.component
            assert last.component_id == "stellar-source"
            assert (c.id, c.name, c.version) == ("svc-7", "stellar-live-source", __version__)
            assert c.description
            assert c.type == 1  # COMPONENT_TYPE_SOURCE
            assert list(c.input_event_types) == []
            assert list(c.output_event_types) == ["raw_ledger_service.RawLedgerChunk"]
            assert app.bound is not None
            assert c.endpoint == f"source.test:{app.bound.grpc_port}"
            assert c.metadata["network"] == TESTNET
            assert c.metadata["storage_type"] == "FS"
            assert c.metadata["lake"] == app.lake.storage.description  # type: ignore[union-attr]
            assert (c.metadata["version"], c.metadata["core_backend"]) == (__version__, BACKEND)
            # The ID the control plane chose, not the one asked for.
            assert cp.heartbeats[-1].service_id == cp.issued[-1] == f"cp-svc-7-{len(cp.registrations)}"
            assert cp.status_of(cp.heartbeats[-1]) == "HEALTHY"
            assert set(cp.heartbeats[-1].metrics) == {
                "ledgers_sent",
                "errors",
                "bytes_sent",
                "active_streams",
                "newest_ledger",
            }


async def test_the_endpoint_is_pod_ip_without_an_advertise_host(monkeypatch):
    monkeypatch.setenv("POD_IP", "10.9.8.7")
    async with control_plane("v1") as cp:
        env = flowctl_env(cp.address, FLOWCTL_ADVERTISE_HOST="")
        async with running_app(env) as (app, _):
            await until(lambda: bool(cp.registrations), 5, "a registration")
            assert app.bound is not None
            assert cp.registrations[-1].component.endpoint == f"10.9.8.7:{app.bound.grpc_port}"
            assert cp.registrations[-1].component_id == ""


async def test_v1_heartbeats_follow_streams_and_the_readiness_rule_then_unregister_at_shutdown():
    async with control_plane("v1") as cp:
        async with running_app(flowctl_env(cp.address)) as (app, addr):
            await until(cp.settled, 5, "registered with the lake open and heartbeating")
            before = cp.heartbeats[-1].metrics
            assert (before["ledgers_sent"], before["bytes_sent"]) == ("0", "0")
            assert before["newest_ledger"] == str(app.lake.newest_known)  # type: ignore[union-attr]
            got = await collect(addr, FIRST, FIRST + 9)
            assert len(got) == 10
            await until(lambda: cp.heartbeats[-1].metrics["ledgers_sent"] == "10", 5, "ledgers_sent 10")
            assert int(cp.heartbeats[-1].metrics["bytes_sent"]) >= sum(len(x[1]) for x in got)
            assert cp.heartbeats[-1].metrics["active_streams"] == "0"
            assert cp.status_of(cp.heartbeats[-1]) == "HEALTHY"

            app.readiness.hold(STORAGE, "storage circuit breaker open: test")
            seen = len(cp.heartbeats)
            await until(lambda: cp.status_of(cp.heartbeats[-1]) == "DEGRADED", 5, "a DEGRADED heartbeat")
            assert len(cp.heartbeats) > seen
            app.readiness.release(STORAGE)
            await until(lambda: cp.status_of(cp.heartbeats[-1]) == "HEALTHY", 5, "HEALTHY again")
            service_id = cp.heartbeats[-1].service_id
            assert service_id not in {u.service_id for u in cp.unregistrations}  # the current one stays
        # running_app stopped the app: a last heartbeat STOPPING, then unregistered.
        assert cp.status_of(cp.heartbeats[-1]) == "STOPPING"
        assert cp.unregistrations[-1].service_id == service_id
        # Every ID it was given is unregistered: re-registering under a new one left no stale entry.
        assert {u.service_id for u in cp.unregistrations} == set(cp.issued) and not cp.known


async def test_before_the_lake_is_open_it_registers_starting_then_again_with_the_lake():
    async with control_plane("v1") as cp:
        app = App(parts.build(load(flowctl_env(cp.address))))
        try:
            await app.listen()
            await until(lambda: bool(cp.heartbeats), 5, "a heartbeat before the lake is open")
            assert cp.status_of(cp.heartbeats[-1]) == "STARTING"
            assert cp.registrations[0].component.metadata["network"] == ""
            await app.open()
            await until(cp.settled, 5, "registered again with the lake open")
            assert cp.registrations[-1].component.metadata["network"] == TESTNET
            assert cp.status_of(cp.heartbeats[-1]) == "HEALTHY"
            assert cp.heartbeats[-1].service_id == f"cp-stellar-live-source-{len(cp.registrations)}"
            assert [u.service_id for u in cp.unregistrations] == cp.issued[:-1]  # the STARTING entry is gone
        finally:
            await app.stop(1.0)


async def test_legacy_registers_service_info_and_heartbeats_numbers_with_a_timestamp():
    async with control_plane("legacy") as cp:
        env = flowctl_env(
            cp.address, "legacy", FLOWCTL_SERVICE_ID="ledgers-1", FLOWCTL_COMPONENT_ID="src", MAX_CONCURRENT_STREAMS=7
        )
        async with running_app(env) as (app, addr):
            await until(cp.settled, 5, "registered with the lake open and heartbeating")
            info = cp.registrations[-1]
            assert (info.service_id, info.component_id, info.service_type) == ("ledgers-1", "src", 1)  # SOURCE
            assert list(info.output_event_types) == ["raw_ledger_service.RawLedgerChunk"]
            assert list(info.input_event_types) == []
            assert app.bound is not None
            assert info.health_endpoint == f"http://source.test:{app.bound.health_port}/health"
            assert info.max_inflight == 7
            assert info.metadata["network"] == TESTNET
            assert info.metadata["storage_type"] == "FS"
            assert cp.heartbeats[-1].service_id == cp.issued[-1] == f"ledgers-1-ack{len(cp.registrations)}"
            got = await collect(addr, FIRST, FIRST + 4)
            await until(lambda: cp.heartbeats[-1].metrics["ledgers_sent"] == 5.0, 5, "ledgers_sent 5")
            beat = cp.heartbeats[-1]
            assert beat.metrics["bytes_sent"] >= sum(len(x[1]) for x in got)
            assert beat.metrics["newest_ledger"] == float(app.lake.newest_known or -1)  # type: ignore[union-attr]
            assert (beat.metrics["errors"], beat.metrics["active_streams"]) == (0.0, 0.0)
            assert abs(beat.timestamp.ToDatetime().timestamp() - time.time()) < 5
            assert beat.timestamp.seconds > 0


@pytest.mark.parametrize("kind", ["v1", "legacy"])
async def test_a_control_plane_that_forgot_the_service_gets_it_registered_again(kind):
    async with control_plane(kind) as cp:
        async with running_app(flowctl_env(cp.address, kind)):
            await until(cp.settled, 5, "registered and heartbeating")
            first = cp.heartbeats[-1].service_id
            n = len(cp.registrations)
            cp.restart()
            await until(lambda: len(cp.registrations) > n, 5, "registered again")
            await until(lambda: cp.heartbeats[-1].service_id != first, 5, "heartbeats with the new ID")
            assert cp.heartbeats[-1].service_id == cp.issued[-1]
            assert cp.heartbeats[-1].service_id in cp.known


async def test_a_control_plane_that_forgets_at_once_is_not_flooded_with_registrations(caplog):
    caplog.set_level(logging.INFO, logger="stellar_live_source.flowctl")
    async with control_plane("v1") as cp:
        cp.amnesiac = True
        async with running_app(flowctl_env(cp.address)) as (app, _):
            await asyncio.sleep(1.5)
            assert app.readiness.ready
            # Backed off like a failure (doubling from 100 ms), not one registration per round trip.
            assert 2 <= len(cp.registrations) <= 8, len(cp.registrations)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_a_control_plane_down_at_start_is_registered_with_when_it_comes_up():
    port = free_port()
    async with running_app(flowctl_env(f"127.0.0.1:{port}")) as (app, addr):
        await asyncio.sleep(0.5)  # a few failed attempts
        assert app.readiness.ready
        assert len(await collect(addr, FIRST, FIRST + 2)) == 3
        async with control_plane("v1", port) as cp:
            await until(lambda: bool(cp.heartbeats), 8, "registered once the control plane is up")
            assert cp.status_of(cp.heartbeats[-1]) == "HEALTHY"


async def test_failures_back_off_and_are_logged_on_change_not_each_time(caplog):
    caplog.set_level(logging.INFO, logger="stellar_live_source.flowctl")
    async with control_plane("v1") as cp:
        cp.fail = grpc.StatusCode.UNAVAILABLE
        async with running_app(flowctl_env(cp.address)):
            await asyncio.sleep(1.5)
            # Doubling from 100 ms with jitter: a handful of attempts, not one per 100 ms.
            assert 2 <= cp.calls <= 8, cp.calls
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "flowctl" in r.getMessage()]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            cp.fail = None
            await until(lambda: bool(cp.heartbeats), 8, "registered once the failures stop")
        assert any("registered with" in r.getMessage() for r in caplog.records)


async def test_an_endpoint_that_never_answers_holds_nothing_back(caplog):
    caplog.set_level(logging.INFO, logger="stellar_live_source.flowctl")
    async with silent_endpoint() as (address, accepted):
        started = time.monotonic()
        env = flowctl_env(address)
        async with running_app(env) as (app, addr):
            assert time.monotonic() - started < 5
            assert app.readiness.ready
            assert len(await collect(addr, FIRST, FIRST + 2)) == 3
            await until(lambda: bool(accepted), 5, "the registrar dialled the endpoint")
            await asyncio.sleep(1.5)  # at least one call's deadline (1 s) passed
            registrar = app.registrar
            assert registrar is not None and registrar.service_id is None
            # Failed, said once, tried again in the background.
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "registration with" in warnings[0], warnings
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 3


async def test_a_control_plane_that_stops_answering_cannot_pile_up_calls_or_delay_shutdown(caplog):
    caplog.set_level(logging.INFO, logger="stellar_live_source.flowctl")
    async with control_plane("v1") as cp:
        async with running_app(flowctl_env(cp.address)) as (app, addr):
            await until(lambda: bool(cp.heartbeats), 5, "a heartbeat")
            cp.hang = True  # the next heartbeat, the last one and UnregisterComponent never answered
            calls = cp.calls
            await until(lambda: "DEADLINE_EXCEEDED" in caplog.text, 4, "a heartbeat ended by its deadline")
            assert cp.most_in_flight == 1  # one call at a time, each ended by its deadline (1 s)
            assert cp.calls - calls <= 3
            assert app.readiness.ready
            assert len(await collect(addr, FIRST, FIRST + 2)) == 3
            stopping = time.monotonic()
        # The last heartbeat and UnregisterComponent together are bounded (1 s, each call's
        # deadline alone would be 2 s) and run beside the drain.
        assert time.monotonic() - stopping < 1.7
        assert not cp.unregistrations


async def test_disabled_by_default_nothing_is_dialled():
    async with control_plane("v1") as cp:
        env = env_for(SHARED_LAKE, FLOWCTL_ENDPOINT=cp.address, FLOWCTL_HEARTBEAT_INTERVAL="100ms")
        async with running_app(env) as (app, _):
            await asyncio.sleep(0.3)
            assert app.registrar is None
        assert cp.calls == 0
