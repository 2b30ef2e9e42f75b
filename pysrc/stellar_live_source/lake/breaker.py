"""A circuit breaker per storage backend, around the lake's retries.

One *operation* is one call of ``lake.retrying``: a storage call with all its
retries. An operation that failed after all its retries (RetriesExhausted) is
one failure; ``threshold`` consecutive failures open the breaker. While open,
operations fail at once with StorageUnavailable naming the last failure, so
that an outage is not retried by every stream at once. ``reset_timeout``
after opening, the next operation is the half-open probe (one at a time; the
others fail at once meanwhile): its success closes the breaker, its failure
opens it again for another ``reset_timeout``.

Not failures: an object that is not there yet (ObjectNotFound: storage
answered, so it counts as a success) and a caller cancelling (neither: the Go
original counted cancels, opened after five and never closed again). Other
errors (bad data, a closed storage) say nothing about storage's health and
are neither either.

The breaker keeps no exception, only its message: a failed object's buffers
are never held by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import ObjectNotFound, RetriesExhausted, StorageUnavailable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker"]

log = logging.getLogger("stellar_live_source.breaker")

T = TypeVar("T")

# States, numbered as the state gauge exports them.
CLOSED, HALF_OPEN, OPEN = 0, 1, 2
NAMES = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}


class Breaker:
    def __init__(
        self,
        backend: str,
        threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.threshold = max(1, threshold)
        self.reset_timeout = reset_timeout
        self._clock = clock
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.cause: str | None = None  # the last failure's message
        self.opened_at = 0.0
        self.opens = 0  # times opened, for observers
        self._probing = False
        self._watchers: list[Callable[[Breaker], None]] = []

    # -- settings (live: the reload applies them at once) --
    def configure(self, threshold: int | None = None, reset_timeout: float | None = None) -> None:
        """New settings, taking effect for the next operation; the state is kept
        (an open breaker whose count is now under the threshold stays open until its probe)."""
        if threshold is not None:
            self.threshold = max(1, threshold)
        if reset_timeout is not None:
            self.reset_timeout = reset_timeout

    def update(self, config: object) -> None:
        """``configure`` from a Config's ``resilience`` section."""
        r = getattr(config, "resilience")  # noqa: B009 - lake imports no ops.config
        self.configure(r.breaker_failure_threshold, r.breaker_reset_timeout)

    # -- observers --
    @property
    def state_name(self) -> str:
        return NAMES[self.state]

    def watch(self, callback: Callable[[Breaker], None]) -> None:
        """Call ``callback(breaker)`` after every change of state."""
        self._watchers.append(callback)

    def _set(self, state: int) -> None:
        if state == self.state:
            return
        self.state = state
        if state == OPEN:
            self.opens += 1
            log.warning("storage %s: circuit breaker open: %s", self.backend, self.cause)
        elif state == CLOSED:
            log.warning("storage %s: circuit breaker closed: storage answers again", self.backend)
        for callback in self._watchers:
            try:
                callback(self)
            except Exception:  # an observer's bug must not break storage calls
                log.exception("breaker watcher failed")

    # -- operations --
    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` through the breaker (StorageUnavailable while open)."""
        probe = self._admit()
        try:
            result = await call()
        except RetriesExhausted as exc:
            self._failed(str(exc), probe)
            raise
        except ObjectNotFound:
            self._succeeded(probe)
            raise
        except BaseException:  # cancels, bad data, bugs: no news of storage
            if probe:
                self._probing = False
            raise
        self._succeeded(probe)
        return result

    def _admit(self) -> bool:
        """Whether this operation is the half-open probe; raises while open."""
        if self.state == CLOSED:
            return False
        if not self._probing:
            waited = self._clock() - self.opened_at
            if self.state == HALF_OPEN or waited >= self.reset_timeout:
                self._probing = True
                self._set(HALF_OPEN)
                return True
        left = max(0.0, self.reset_timeout - (self._clock() - self.opened_at))
        when = "a probe is under way" if self._probing else f"next try in {left:.1f}s"
        raise StorageUnavailable(
            f"storage {self.backend} is unavailable (circuit breaker open after "
            f"{self.failures} failed operations; {when}): {self.cause}"
        )

    def _failed(self, cause: str, probe: bool) -> None:
        self.cause = cause
        self.failures += 1
        if probe:
            self._probing = False
            self.opened_at = self._clock()
            self._set(OPEN)
        elif self.state == CLOSED and self.failures >= self.threshold:
            self.opened_at = self._clock()
            self._set(OPEN)

    def _succeeded(self, probe: bool) -> None:
        if self.state == CLOSED:
            self.failures = 0
        elif probe:  # an operation begun before the breaker opened does not close it
            self._probing = False
            self.failures = 0
            self._set(CLOSED)

    def __repr__(self) -> str:
        return f"<Breaker {self.backend} {self.state_name} failures={self.failures}>"
