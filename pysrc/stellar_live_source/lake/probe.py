"""The ends of a lake that cannot be listed (an HTTP lake), found by asking
whether computed keys exist.

Objects are numbered by file: object ``i`` holds ledgers from
``i * ledgers_per_file``. The exporter writes a contiguous run of them, so
from one object the lake holds (the anchor), the newest is found by
galloping up (i+1, i+2, i+4, ...) until one is missing, then bisecting
between the last found and that one; the oldest the same way downwards.
That is about 2 log2(distance) requests: a few dozen even for 60 million
ledgers. A gap in the run can make the search stop short of the true end.

The anchor: ``search_from`` (HTTP_SEARCH_FROM) when set, else the file of
ledger 2 (the first an exporter from genesis writes), then those of the
powers of two up to 2^31, which find any lake whose newest ledger is at least
twice its oldest. Each is asked under both extensions: the one found is the
lake's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..core.keys import EXTENSIONS, Layout

_MAX = 0xFFFFFFFF

Exists = Callable[[str], Awaitable[bool]]


def anchors(layout: Layout, search_from: int) -> list[int]:
    """The file starts to try, in order, for one object the lake holds."""
    seqs = [search_from] if search_from else [2, *(1 << k for k in range(2, 32))]
    return list(dict.fromkeys(layout.file_start(s) for s in seqs))


async def find_anchor(layout: Layout, exists: Exists, search_from: int = 0) -> tuple[int, str] | None:
    """(file start, extension) of the first of ``anchors`` the lake holds under
    either extension (both asked at once), or None."""
    order = (layout.extension, *(e for e in EXTENSIONS if e != layout.extension))
    for start in anchors(layout, search_from):
        found = await asyncio.gather(*(exists(layout.object_key(start, e)) for e in order))
        for ext, there in zip(order, found, strict=True):
            if there:
                return start, ext
    return None


class KeyProbe:
    """The newest and oldest objects of a lake, by existence checks only.
    ``newest``/``oldest`` are file indexes known to be held; each search
    starts from them."""

    def __init__(self, layout: Layout, exists: Exists, anchor_start: int) -> None:
        self.layout = layout
        self._exists = exists
        self._per = layout.ledgers_per_file
        self.floor = layout.file_start(2) // self._per  # the first file that holds a ledger with meta
        self.ceiling = _MAX // self._per
        self.newest = self.oldest = anchor_start // self._per
        self.requests = 0  # existence checks asked

    def key(self, i: int) -> str:
        return self.layout.object_key(i * self._per)

    async def has(self, i: int) -> bool:
        if not self.floor <= i <= self.ceiling:
            return False
        self.requests += 1
        return await self._exists(self.key(i))

    async def newest_key(self) -> str:
        """The key of the newest object. The next expected object and the one
        after it are asked at once: a missing object with a later one
        present moves the newest past it (the gap then shows as one)."""
        i = self.newest
        following, after = await asyncio.gather(self.has(i + 1), self.has(i + 2))
        if after:
            i = await self._last_from(i + 2)
        elif following:
            i += 1
        self.newest = i
        return self.key(i)

    async def oldest_key(self) -> str:
        """The key of the oldest object: down from the one last known oldest,
        or, if that one is gone, the first held between it and the newest."""
        i = self.oldest
        if i == self.newest or await self.has(i):
            i = await self._first_to(i)
        else:
            i = await self._bisect_first(i, self.newest)
        self.oldest = i
        return self.key(i)

    async def _last_from(self, i: int) -> int:
        """The last object of the run from ``i`` (held): gallop up, then bisect."""
        step = 1
        while i + step <= self.ceiling and await self.has(i + step):
            i += step
            step *= 2
        lo, hi = i, min(i + step, self.ceiling + 1)  # lo held, hi not (or past the last key)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.has(mid):
                lo = mid
            else:
                hi = mid
        return lo

    async def _first_to(self, i: int) -> int:
        """The first object of the run that ends at ``i`` (held): gallop down, then bisect."""
        step = 1
        while i - step >= self.floor and await self.has(i - step):
            i -= step
            step *= 2
        return await self._bisect_first(max(i - step, self.floor - 1), i)

    async def _bisect_first(self, lo: int, hi: int) -> int:
        """The first object held in (lo, hi], ``lo`` not held and ``hi`` held."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.has(mid):
                hi = mid
            else:
                lo = mid
        return hi
