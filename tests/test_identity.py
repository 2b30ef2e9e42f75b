"""The service's identity and numbers, as GetInfo, HealthCheck and flowctl report them."""

from __future__ import annotations

from types import SimpleNamespace

from stellar_live_source import __version__
from stellar_live_source.control.identity import advertise_host, as_strings, identity, numbers
from stellar_live_source.ops.config import load
from stellar_live_source.ops.metrics import Metrics


def test_advertise_host_prefers_the_setting_then_pod_ip_then_the_host_name():
    import socket

    assert advertise_host(load({"FLOWCTL_ADVERTISE_HOST": "src.lake"}), {"POD_IP": "10.0.0.7"}) == "src.lake"
    assert advertise_host(load({}), {"POD_IP": "10.0.0.7"}) == "10.0.0.7"
    assert advertise_host(load({}), {}) == socket.gethostname()


def test_identity_names_endpoints_types_and_metadata():
    config = load(
        {
            "FLOWCTL_SERVICE_ID": "svc-9",
            "FLOWCTL_COMPONENT_ID": "stellar-source",
            "FLOWCTL_OUTPUT_EVENT_TYPES": "raw_ledger_service.RawLedgerChunk, stellar.v1.RawLedger",
        }
    )
    lake = SimpleNamespace(
        network="Test SDF Network ; September 2015",
        exporter_version="v1.2",
        storage=SimpleNamespace(description="/lake/"),
    )
    me = identity(config, lake, 50052, 8088, {"POD_IP": "fd00::7"})
    assert (me.service_id, me.component_id, me.version) == ("svc-9", "stellar-source", __version__)
    assert me.output_event_types == ("raw_ledger_service.RawLedgerChunk", "stellar.v1.RawLedger")
    assert (me.endpoint, me.health_endpoint) == ("[fd00::7]:50052", "http://[fd00::7]:8088/health")
    assert me.metadata["network"] == "Test SDF Network ; September 2015"
    assert (me.metadata["lake"], me.metadata["exporter_version"], me.metadata["storage_type"]) == (
        "/lake/",
        "v1.2",
        "FS",
    )
    assert identity(config, None, 1, None, {"POD_IP": "10.1.1.1"}).health_endpoint == ""


def test_numbers_read_the_metrics_and_format_as_strings():
    m = Metrics()
    m.ledgers_sent.inc(7)
    m.bytes_sent.inc(700)
    m.call_ended("/raw_ledger_service.RawLedgerService/StreamRawLedgers", "UNAVAILABLE", "StorageError", None)
    m.call_ended("/raw_ledger_service.RawLedgerService/StreamRawLedgers", "OUT_OF_RANGE", "OutOfRange", None)
    m.call_ended("/raw_ledger_service.RawLedgerService/StreamRawLedgers", "CANCELLED", None, None)  # not an error
    got = numbers(m, 3, SimpleNamespace(newest_known=1234))
    assert got == {"ledgers_sent": 7, "errors": 2, "bytes_sent": 700, "active_streams": 3, "newest_ledger": 1234}
    assert as_strings(got) == {
        "ledgers_sent": "7",
        "errors": "2",
        "bytes_sent": "700",
        "active_streams": "3",
        "newest_ledger": "1234",
    }
    assert as_strings({"x": 0.5}) == {"x": "0.5"}
