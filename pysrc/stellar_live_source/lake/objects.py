"""Decoded datalake objects, and the byte-capped cache every stream shares.

A decoded object keeps only what streams send: one finished frame per
ledger (the ledger bytes copied once, out of the decompressed buffer, which
is then dropped), plus the hashes that chain objects together. The call that
starts the fetch decides the shape decoded: ``RawLedger`` frames for a
``raw_ledger_service`` call, ``stellar.v1`` frames (the same ledgers with the
network and close time) for a v1 one. The other shape is built from those
the first time a call needs it (``ObjectCache.v1_frames``,
``ObjectCache.raw_frames``), kept with the object, and counted by the cache.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import index
from ..ops import tracing


@dataclass(slots=True, eq=False)
class LakeObject:
    key: str
    start: int  # batch bounds: the first and last ledger the object holds
    end: int
    # RawLedger wire bytes, one per ledger, start..end; None: not built (the
    # object was decoded for a v1 call; Lake.raw_frames cuts them out of its v1 frames).
    frames: list[bytes] | None
    first_prev: bytes  # previousLedgerHash of the first ledger
    last_hash: bytes  # hash of the last ledger
    nbytes: int  # of ``frames`` (0 while they are not built)
    fallback: int = 0  # ledgers delimited by the hash-chain fallback
    stored: int = 0  # bytes in storage (compressed); 0: not known
    # stellar.v1 RawLedger frames by network passphrase, and their bytes: built on first need.
    v1: dict[str, tuple[list[bytes], int]] = field(default_factory=dict, repr=False)
    # Their builds in progress off the event loop (Lake.v1_frames), shared by every caller.
    v1_building: dict[str, asyncio.Future[tuple[list[bytes], int]]] = field(default_factory=dict, repr=False)
    # The build of ``frames`` in progress off the event loop (Lake.raw_frames), shared by every caller.
    raw_building: asyncio.Future[tuple[list[bytes], int]] | None = field(default=None, repr=False)

    @property
    def held(self) -> int:
        """Bytes of every frame the object holds, v1 frames included."""
        held = self.nbytes
        for _, n in self.v1.values():
            held += n
        return held

    def frame(self, seq: int) -> bytes:
        assert self.frames is not None, "the RawLedger frames are not built"
        return self.frames[seq - self.start]

    def v1_source(self) -> list[bytes]:
        """Some v1 frames of the object, which its RawLedger frames are cut out of."""
        return next(iter(self.v1.values()))[0]

    def holds(self, seq: int) -> bool:
        return self.start <= seq <= self.end


class _Fill:
    """One fetch in flight, and how many requesters still wait for it."""

    __slots__ = ("spans", "task", "waiting")

    def __init__(self) -> None:
        self.task: asyncio.Future[LakeObject | None]
        self.waiting = 0
        self.spans: list[Any] | None = None  # tracing on: the fetch's spans, which sharers link to


class ObjectCache:
    """LRU of decoded objects capped in bytes; concurrent requests for one
    object share a single fetch, which is cancelled once every requester has
    gone (a closed stream's read-ahead holds no storage read). An object
    larger than the cap is handed to its requesters but never cached.
    Missing objects (None) are not cached."""

    def __init__(self, cap_bytes: int):
        self.cap = cap_bytes
        self.bytes = 0
        self._items: OrderedDict[int, LakeObject] = OrderedDict()
        self._counted: dict[int, int] = {}  # what each cached object counts for in ``bytes``
        self._inflight: dict[int, _Fill] = {}
        self._claimed: dict[int, int] = {}  # reads ahead started, by object: how many
        self.hits = self.misses = self.shared = self.evictions = 0  # observers read these

    def holds(self, file_start: int) -> bool:
        """Whether the object is cached now (without counting as a use)."""
        return file_start in self._items

    def fetching(self, file_start: int) -> bool:
        """Whether a fetch of the object is in flight now, or a read ahead has claimed it."""
        return file_start in self._inflight or file_start in self._claimed

    def claim(self, file_start: int) -> None:
        """A read ahead of the object starts (its task has not asked yet): ``fetching`` says so at once."""
        self._claimed[file_start] = self._claimed.get(file_start, 0) + 1

    def unclaim(self, file_start: int) -> None:
        n = self._claimed.pop(file_start, 0) - 1
        if n > 0:
            self._claimed[file_start] = n

    def peek(self, file_start: int) -> LakeObject | None:
        obj = self._items.get(file_start)
        if obj is not None:
            self._items.move_to_end(file_start)
        return obj

    async def get(self, file_start: int, fetch: Callable[[], Awaitable[LakeObject | None]]) -> LakeObject | None:
        obj = self.peek(file_start)
        if obj is not None:
            self.hits += 1
            return obj
        fill = self._inflight.get(file_start)
        shared = fill is not None
        if fill is None:
            self.misses += 1
            fill = self._inflight[file_start] = _Fill()
            fill.task = asyncio.ensure_future(self._fill(file_start, fetch, fill))
        else:
            self.shared += 1
        fill.waiting += 1
        try:
            # shield: one requester cancelling must not cancel the fetch for the others
            return await asyncio.shield(fill.task)
        finally:
            if shared and fill.spans:  # tracing: this call links to the fetch it shared
                tracing.link(fill.spans)
            fill.waiting -= 1
            if not fill.waiting and not fill.task.done():  # the last requester went away
                fill.task.cancel()
                del self._inflight[file_start]  # a new request starts a new fetch

    async def _fill(
        self, file_start: int, fetch: Callable[[], Awaitable[LakeObject | None]], fill: _Fill
    ) -> LakeObject | None:
        if tracing.TRACER is not None:  # this task's reads and decodes: the spans sharers link to
            fill.spans = tracing.collect()
        try:
            obj = await fetch()
        finally:
            if self._inflight.get(file_start) is fill:
                del self._inflight[file_start]
        if obj is not None:
            self.put(file_start, obj)
        return obj

    def put(self, file_start: int, obj: LakeObject) -> None:
        held = obj.held
        if held > self.cap:
            return
        self.drop(file_start)
        self._make_room(held)
        self._items[file_start] = obj
        self._counted[file_start] = held
        self.bytes += held

    def _make_room(self, n: int) -> None:
        while self._items and self.bytes + n > self.cap:
            evicted, _ = self._items.popitem(last=False)
            self.bytes -= self._counted.pop(evicted)
            self.evictions += 1

    def drop(self, file_start: int) -> None:
        if self._items.pop(file_start, None) is not None:
            self.bytes -= self._counted.pop(file_start)

    def v1_frames(self, file_start: int, obj: LakeObject, network: str) -> list[bytes]:
        """The ``stellar.v1`` frames of ``obj`` (the object of ``file_start``),
        built by the core here the first time they are asked for and shared
        by every v1 call after (``Lake.v1_frames`` builds large ones off the
        event loop and hands them to ``add_v1``)."""
        built = obj.v1.get(network)
        if built is None:
            frames = obj.frames if obj.frames is not None else self.raw_frames(file_start, obj)
            built = index.v1_frames(frames, network)
            self.add_v1(file_start, obj, network, built)
        return built[0]

    def raw_frames(self, file_start: int, obj: LakeObject) -> list[bytes]:
        """The RawLedger frames of ``obj``, cut by the core out of its v1
        frames here the first time they are asked for when the object was
        decoded for a v1 call (``Lake.raw_frames`` builds large ones off the
        event loop and hands them to ``add_raw``)."""
        if obj.frames is None:
            self.add_raw(file_start, obj, index.raw_frames(obj.v1_source()))
        assert obj.frames is not None
        return obj.frames

    def add_v1(self, file_start: int, obj: LakeObject, network: str, built: tuple[list[bytes], int]) -> None:
        """Keep ``obj``'s v1 frames for ``network`` with it; while cached, the
        object counts for them too (an object they push past the cap is dropped
        from the cache, its callers keep it)."""
        if network not in obj.v1:
            obj.v1[network] = built
            self._grew(file_start, obj, built[1])

    def add_raw(self, file_start: int, obj: LakeObject, built: tuple[list[bytes], int]) -> None:
        """Keep ``obj``'s RawLedger frames with it (decoded for a v1 call, it
        had none), counted as ``add_v1`` counts v1 frames."""
        if obj.frames is None:
            obj.frames, obj.nbytes = built
            self._grew(file_start, obj, built[1])

    def _grew(self, file_start: int, obj: LakeObject, added: int) -> None:
        """``obj`` holds ``added`` bytes more: while cached it counts for them too."""
        if self._items.get(file_start) is obj:
            del self._items[file_start]
            held = self._counted.pop(file_start) + added
            self.bytes -= held - added
            if held <= self.cap:
                self._make_room(held)
                self._items[file_start] = obj
                self._counted[file_start] = held
                self.bytes += held

    @property
    def inflight(self) -> int:
        """Fetches running now."""
        return len(self._inflight)

    def __len__(self) -> int:
        return len(self._items)
