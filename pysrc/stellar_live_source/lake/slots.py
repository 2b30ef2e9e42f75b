"""The lake's storage-read slots: at most ``limit`` reads at once for the
whole lake, every stream together. Read-ahead may hold at most ``limit -
RESERVED`` of them, and a freed slot goes to a waiting needed read before any
read-ahead, so the read a stream needs next (or the tip watcher's) never
waits behind other streams' read-ahead. Acquiring and releasing take
constant time.
"""

from __future__ import annotations

import asyncio
from collections import deque

# Slots read-ahead can never take: the needed reads of this many streams at once.
RESERVED = 8


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ahead_limit = max(1, limit - RESERVED)
        self.in_use = 0  # reads holding a slot now
        self.ahead_in_use = 0  # of which read-ahead
        self.waits = 0  # acquisitions that had to wait for a slot
        self._needed: deque[asyncio.Future[None]] = deque()
        self._ahead: deque[asyncio.Future[None]] = deque()

    async def acquire(self, ahead: bool = False) -> None:
        """Wait for a slot (FIFO within each kind); ``release(ahead)`` gives it back."""
        if (
            self.in_use < self.limit
            and not self._needed
            and (not ahead or (self.ahead_in_use < self.ahead_limit and not self._ahead))
        ):
            self._take(ahead)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._ahead if ahead else self._needed).append(fut)
        self._grant()  # the queues may have held only waiters that were cancelled
        if fut.done():
            return
        self.waits += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled before it ran: pass it on
                self.release(ahead)
            raise

    def release(self, ahead: bool = False) -> None:
        self.in_use -= 1
        if ahead:
            self.ahead_in_use -= 1
        if self._needed or self._ahead:
            self._grant()

    def _take(self, ahead: bool) -> None:
        self.in_use += 1
        if ahead:
            self.ahead_in_use += 1

    def _grant(self) -> None:
        """Free slots to waiters, needed reads first; a waiter cancelled
        meanwhile is dropped when its turn comes (never searched for)."""
        while self.in_use < self.limit:
            if self._needed:
                fut, ahead = self._needed.popleft(), False
            elif self._ahead and self.ahead_in_use < self.ahead_limit:
                fut, ahead = self._ahead.popleft(), True
            else:
                return
            if not fut.done():
                self._take(ahead)
                fut.set_result(None)
