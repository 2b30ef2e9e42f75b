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
