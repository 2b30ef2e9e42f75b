"""One readiness rule for every observer: ``/ready``, the gRPC health status
(the ``""`` service and the ledger service) and any control plane.

The service is ready while no reason holds it back. A part that cannot serve
yet (or any more) holds a reason and releases it later: the application holds
"starting" until the lake was reached and its newest ledger looked up, and
"draining" from a shutdown on, and "storage" while the storage's circuit
breaker is open or probing (liveness, ``/health``, is not affected). Observers are told of every change and read the
state back; none keeps a rule of its own.
"""

from __future__ import annotations

from collections.abc import Callable

STARTING = "starting"
DRAINING = "draining"
STORAGE = "storage"  # held while the storage's circuit breaker is not closed

# The control planes' health (flowctl.v1.HealthStatus without its prefix), by the same rule.
STATUS_STARTING = "STARTING"
STATUS_HEALTHY = "HEALTHY"
STATUS_DEGRADED = "DEGRADED"
STATUS_STOPPING = "STOPPING"


class Readiness:
    def __init__(self) -> None:
        self._reasons: dict[str, str] = {STARTING: "the lake's newest ledger is not known yet"}
        self._watchers: list[Callable[[], None]] = []

    @property
    def ready(self) -> bool:
        return not self._reasons

    @property
    def reasons(self) -> dict[str, str]:
        """What holds the service back: reason -> a sentence for people."""
        return dict(self._reasons)

    @property
    def status(self) -> str:
        """The readiness rule as a control plane's health status: STOPPING while
        draining, STARTING before the newest ledger is known, DEGRADED while
        the storage breaker is not closed, else HEALTHY."""
        for reason, status in ((DRAINING, STATUS_STOPPING), (STARTING, STATUS_STARTING), (STORAGE, STATUS_DEGRADED)):
            if reason in self._reasons:
                return status
        return STATUS_HEALTHY

    def hold(self, reason: str, detail: str) -> None:
        changed = reason not in self._reasons
        self._reasons[reason] = detail
        if changed:
            self._tell()

    def release(self, reason: str) -> None:
        if self._reasons.pop(reason, None) is not None:
            self._tell()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every change (it reads ``ready`` itself)."""
        self._watchers.append(callback)

    def _tell(self) -> None:
        for callback in self._watchers:
            callback()
