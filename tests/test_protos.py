"""The descriptor sets the package loads are exactly what ``proto/`` compiles to,
and each API keeps the names and field numbers its peers use."""

from __future__ import annotations

from pathlib import Path

import pytest

from stellar_live_source import api
from stellar_live_source.api import build

ROOT = Path(__file__).resolve().parents[1]


def test_descriptor_sets_match_the_protos(tmp_path: Path) -> None:
    for path in build.build(tmp_path, ROOT / "proto"):
        shipped = api.HERE / path.name
        assert path.read_bytes() == shipped.read_bytes(), f"{shipped.name} is stale: run `make protos`"


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("stellar.v1.RawLedger", {"sequence": 1, "ledger_close_meta_xdr": 2, "network": 3, "closed_at": 4}),
        ("stellar.v1.StreamLedgersRequest", {"start_ledger": 1, "network": 2}),
        ("stellar.v1.GetLedgerRangeRequest", {"start_ledger": 1, "end_ledger": 2, "network": 3}),
        ("stellar.v1.GetLedgerRangeResponse", {"ledgers": 1, "latest_ledger": 2}),
        (
            "flowctl.v1.ComponentInfo",
            {
                "id": 1,
                "name": 2,
                "description": 3,
                "version": 4,
                "type": 5,
                "input_event_types": 6,
                "output_event_types": 7,
                "endpoint": 8,
                "metadata": 9,
            },
        ),
        ("flowctl.v1.HealthCheckResponse", {"status": 1, "metrics": 2, "components": 3, "message": 4}),
        ("flowctl.v1.RegisterRequest", {"component": 1, "component_id": 2}),
        ("flowctl.v1.RegisterResponse", {"service_id": 1, "assigned_topics": 2, "connection_info": 3}),
        ("flowctl.v1.HeartbeatRequest", {"service_id": 1, "status": 2, "metrics": 3}),
        (
            "flowctl.ServiceInfo",
            {
                "service_id": 1,
                "service_type": 2,
                "input_event_types": 3,
                "output_event_types": 4,
                "health_endpoint": 5,
                "max_inflight": 6,
                "metadata": 7,
                "component_id": 8,
            },
        ),
        ("flowctl.RegistrationAck", {"service_id": 1, "topic_names": 2, "connection_info": 3}),
        ("flowctl.ServiceHeartbeat", {"service_id": 1, "timestamp": 2, "metrics": 3}),
    ],
)
def test_field_numbers_are_upstreams(message: str, fields: dict[str, int]) -> None:
    descriptor = api.POOL.FindMessageTypeByName(message)
    assert {f.name: f.number for f in descriptor.fields} == fields


@pytest.mark.parametrize(
    ("service", "methods"),
    [
        (api.SERVICE, ["StreamRawLedgers", "GetLedgerRange"]),
        (api.V1_SERVICE, ["GetInfo", "HealthCheck", "StreamRawLedgers", "GetLedgerRange"]),
        (api.FLOWCTL_V1_SERVICE, ["RegisterComponent", "UnregisterComponent", "Heartbeat"]),
        (api.FLOWCTL_LEGACY_SERVICE, ["Register", "Heartbeat"]),
    ],
)
def test_services_have_upstreams_methods(service: str, methods: list[str]) -> None:
    assert [m.name for m in api.POOL.FindServiceByName(service).methods] == methods


def test_health_status_numbers() -> None:
    enum = api.POOL.FindEnumTypeByName("flowctl.v1.HealthStatus")
    assert {v.name: v.number for v in enum.values} == {
        "HEALTH_STATUS_UNKNOWN": 0,
        "HEALTH_STATUS_STARTING": 1,
        "HEALTH_STATUS_HEALTHY": 2,
        "HEALTH_STATUS_DEGRADED": 3,
        "HEALTH_STATUS_UNHEALTHY": 4,
        "HEALTH_STATUS_STOPPING": 5,
    }
