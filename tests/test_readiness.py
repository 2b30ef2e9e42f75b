"""The readiness rule as a control plane's health status."""

from stellar_live_source.ops.readiness import DRAINING, STARTING, STORAGE, Readiness


def test_status_follows_the_readiness_rule_in_order_of_precedence() -> None:
    r = Readiness()
    assert r.status == "STARTING"  # held from construction until the lake's newest ledger is known
    r.hold(STORAGE, "breaker open")
    assert r.status == "STARTING"
    r.release(STARTING)
    assert r.status == "DEGRADED"
    r.hold(DRAINING, "shutting down")
    assert r.status == "STOPPING"
    r.release(DRAINING)
    r.release(STORAGE)
    assert (r.status, r.ready) == ("HEALTHY", True)
