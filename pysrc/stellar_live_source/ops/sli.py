"""One instance's service level indicator: the share of good calls over a
rolling window, and what is left of the error budget the objective allows.

Calls are counted in a ring of buckets (``BUCKETS`` of them across the
window, so memory is bounded whatever the traffic); a bucket older than the
window is cleared when its slot comes round again. The view is the
instance's own and starts afresh on restart: the fleet's objective is
computed in Prometheus from ``grpc_requests_total``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

#: Buckets across the window: 10 s each for the default hour.
BUCKETS = 360

#: Statuses that are good whatever error led to them: the call was served,
#: or the client caused the end (by what it asked, its deadline, its key).
GOOD_CODES = frozenset({"OK", "CANCELLED", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "OUT_OF_RANGE", "UNAUTHENTICATED"})
#: Error classes that make an otherwise bad status good: a client's own limit
#: (the door's refusals carry no class of the error model) and a drain.
GOOD_ERRORS = {"RESOURCE_EXHAUSTED": frozenset({"ClientLimit"}), "UNAVAILABLE": frozenset({"Draining"})}


def is_good(code: str, error: str | None) -> bool:
    """Whether a call that ended with ``code`` (a grpc.StatusCode name) after
    ``error`` (the error model's class name, or None) counts as good. Bad:
    storage UNAVAILABLE, DATA_LOSS, NOT_FOUND, INTERNAL, UNKNOWN, and
    RESOURCE_EXHAUSTED of the server's MAX_CONCURRENT_STREAMS (TooManyStreams)."""
    if code in GOOD_CODES:
        return True
    return error is not None and error in GOOD_ERRORS.get(code, ())


class RollingSli:
    def __init__(self, objective: float, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.objective = objective
        self.window = window
        self.step = max(window / BUCKETS, 1.0)
        self._n = max(1, math.ceil(window / self.step))
        self._clock = clock
        self._stamp = [-1] * self._n  # which step each slot counts, -1: none
        self._good = [0] * self._n
        self._bad = [0] * self._n

    def record(self, good: bool) -> None:
        i = int(self._clock() / self.step)
        slot = i % self._n
        if self._stamp[slot] != i:
            self._stamp[slot], self._good[slot], self._bad[slot] = i, 0, 0
        if good:
            self._good[slot] += 1
        else:
            self._bad[slot] += 1

    def totals(self) -> tuple[int, int]:
        """(good, bad) calls in the window."""
        oldest = int(self._clock() / self.step) - self._n
        good = bad = 0
        for stamp, g, b in zip(self._stamp, self._good, self._bad, strict=True):
            if stamp > oldest:
                good += g
                bad += b
        return good, bad

    def availability(self) -> float:
        """Good calls over all calls in the window; 1 with none."""
        good, bad = self.totals()
        return good / (good + bad) if good + bad else 1.0

    def budget_remaining(self) -> float:
        """1 - bad calls / the bad calls the objective allows in the window:
        1 untouched, 0 spent, below 0 overspent. 1 with no calls."""
        good, bad = self.totals()
        total = good + bad
        if not total:
            return 1.0
        allowed = (1.0 - self.objective) * total
        if allowed <= 0:
            return 0.0 if bad else 1.0
        return 1.0 - bad / allowed
