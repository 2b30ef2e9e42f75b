"""One client's stream: strictly consecutive ledgers from ``start``, through
history, then at the tip as objects land, with a bounded read-ahead.

Nothing here skips a ledger: a failed read is retried by the lake, a gap is
waited on and then reported, a broken chain ends the stream. Each way a stream
can end is an error of ``errors``, whose group tells the client what to do.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import BadRequest, ChainBroken, Draining, LedgerMissing, OutOfRange
from ..lake.lake import Lake
from ..lake.objects import LakeObject, ObjectCache

DRAINING = "the server is shutting down; resume from ledger {seq}"
#: Every stream's read-ahead while it lives: the metrics sum what they hold at scrape.
OPEN_READAHEADS: weakref.WeakSet[ReadAhead] = weakref.WeakSet()
_T = TypeVar("_T")


class Shape(Protocol):
    """Frames of another shape than an object's RawLedger ones (``LakeObject.frames``),
    sent by a call of another service: the ``stellar.v1`` frames."""

    #: The network whose frames these are: an object this shape's call fetches
    #: is decoded straight into them (``Lake.object``).
    network: str

    def prepare(self, obj: LakeObject) -> None:
        """Start building ``obj``'s frames (read-ahead has just landed it)."""

    async def frames(self, obj: LakeObject) -> list[bytes]:
        """``obj``'s frames, one per ledger, built if they are not yet."""
        ...


async def _unless_stopped(aw: Awaitable[_T], stop: asyncio.Event | None, seq: int) -> _T:
    """Await ``aw``, but end the stream with UNAVAILABLE as soon as ``stop`` is set."""
    if stop is None:
        return await aw
    task, stopper = asyncio.ensure_future(aw), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled():
        return task.result()
    raise Draining(DRAINING.format(seq=seq))


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What streams need of the configuration (built by ``parts``; defaults live there)."""

    readahead_bytes: int
    missing_object_wait: float
    poll_interval: float
    verify: bool
    range_max_ledgers: int
    range_max_bytes: int


def check_start(start: int, end: int = 0, end_name: str = "end_ledger") -> None:
    if start < 2:
        raise BadRequest(
            f"start_ledger must be 2 or more (the first ledger with meta is 2), got {start}",
        )
    if end and end < start:
        raise BadRequest(f"{end_name} {end} is before start_ledger {start}")


async def check_in_range(lake: Lake, start: int, network: str | None = None) -> LakeObject | None:
    """OUT_OF_RANGE when ``start`` is below the lake's oldest ledger. The object
    that should hold ``start`` answers first, and is returned when it holds it:
    only when it does not is the oldest ledger looked up (a bisection of the
    key space). ``network``: as for ``Lake.object``."""
    obj = await lake.object(lake.file_start(start), network=network)
    if obj is not None and obj.holds(start):
        return obj
    oldest = await lake.oldest()
    if oldest is not None and start < oldest:
        oldest = await lake.oldest(refresh=True)  # the lake may have grown backwards since
        if oldest is not None and start < oldest:
            newest = await lake.newest()
            raise OutOfRange(
                f"start_ledger {start} is below the oldest ledger in the lake; it holds {oldest}-{newest}",
            )
    return None


def _unclaim(cache: ObjectCache, file_start: int, _task: object) -> None:
    cache.unclaim(file_start)


class _Read:
    """One object read ahead, and the bytes it counts for in its stream's budget."""

    __slots__ = ("ahead", "counted", "task")

    def __init__(self, ahead: ReadAhead | None, counted: int) -> None:
        self.ahead = ahead  # None once handed to the stream (or closed): it counts no more
        self.counted = counted
        self.task: asyncio.Future[LakeObject | None]

    def __call__(self, size: int) -> None:
        """Storage's ``on_size``: from now on the read counts at its own size (told again on a retry)."""
        ahead = self.ahead
        if ahead is not None and ahead.expand:
            counted = int(size * ahead.expand)
            ahead.held += counted - self.counted
            self.counted = counted


class ReadAhead:
    """Objects fetched ahead of the one being sent, as long as the stream
    holds at most ``readahead_bytes``: objects fetched and not yet sent, at
    their decoded size, plus reads in flight, each counted at the largest
    object the stream has seen (the whole budget while it has seen none: one
    at a time) until storage tells its size. The count is kept as reads start,
    learn their size, land and are handed over, never summed. Never past the
    lake's known tip nor the stream's end; at most as many reads at once as
    the lake lets read-ahead run."""

    def __init__(
        self,
        lake: Lake,
        first: int,
        s: StreamSettings,
        last: int | None = None,
        prepare: Callable[[LakeObject], object] | None = None,
        network: str | None = None,
    ):
        self.lake = lake
        self.prepare = prepare  # told of each object landed ahead (a Shape starts its frames)
        self.network = network  # the objects this stream fetches are decoded for it (Lake.object)
        self.budget = s.readahead_bytes
        self.most = lake.slots.ahead_limit  # more reads at once would only queue for slots
        self.step = lake.layout.ledgers_per_file
        self.next = first
        self.last = last  # the file holding the stream's end ledger: nothing past it is fetched
        self.pending: dict[int, _Read] = {}
        self.held = 0  # bytes counted against the budget
        self.reading = 0  # reads started and not landed
        self.largest = 0  # decoded bytes of the largest object seen; 0: none yet
        # Decoded bytes per stored byte, the most seen (0: none yet): turns a
        # size storage reports into what the object will hold once decoded.
        self.expand = 0.0
        OPEN_READAHEADS.add(self)

    def _seen(self, obj: LakeObject) -> None:
        held = obj.held
        if held > self.largest:
            self.largest = held
        if obj.stored and held > self.expand * obj.stored:
            self.expand = held / obj.stored

    async def _fetch(self, file_start: int, read: _Read, sized: bool) -> LakeObject | None:
        obj = None
        try:
            obj = await self.lake.object(file_start, ahead=True, on_size=read if sized else None, network=self.network)
        finally:
            self.reading -= 1
            landed = 0 if obj is None else obj.held
            if read.ahead is not None:  # still waiting to be sent: it counts at what it holds
                self.held += landed - read.counted
                read.counted = landed
        if obj is not None:
            self._seen(obj)
            if self.prepare is not None and read.ahead is not None:
                self.prepare(obj)
        if read.ahead is not None:  # its slot is free: the next read need not wait for the stream to send
            self._fill(self.lake.newest_known)
        return obj

    def hand(self, file_start: int, obj: LakeObject) -> None:
        """An object already read: an object larger than the cache is not read twice."""
        held = obj.held
        read = _Read(self, held)
        read.task = asyncio.get_running_loop().create_future()
        read.task.set_result(obj)
        self.pending[file_start] = read
        self.held += held
        self.next = max(self.next, file_start + self.step)
        self._seen(obj)
        if self.prepare is not None:
            self.prepare(obj)

    def _fill(self, newest: int | None) -> None:
        limit = newest if self.last is None or newest is None else min(newest, self.last)
        if limit is None:
            return
        estimate = self.largest or self.budget
        # Sizes from response headers only when they can change how many reads
        # start: a read told its size costs a second round trip through the
        # object client (docs/benchmarks.md), and small objects that all fit
        # the budget at the largest size seen do not need it.
        sized = estimate * self.most > self.budget
        # A read starts only if it fits (or holds the stream's only bytes, so
        # that an object larger than the budget is still read), so that beside
        # the object being sent a stream holds at most its budget.
        # Objects the cache holds are stepped over (the stream takes them from
        # the cache when it gets there), and an object another stream is
        # fetching ends the window: streams over the same range ride the
        # first one's reads instead of each joining every fetch ahead of it
        # (with many streams, that bookkeeping alone took the event loop).
        cache = self.lake.cache
        while (
            self.next <= limit and self.reading < self.most and (not self.held or self.held + estimate <= self.budget)
        ):
            if cache.holds(self.next):
                self.next += self.step
                continue
            if cache.fetching(self.next):
                break
            read = _Read(self, estimate)
            self.held += estimate
            self.reading += 1
            cache.claim(self.next)
            read.task = asyncio.ensure_future(self._fetch(self.next, read, sized))
            # Released however the read ends, a task cancelled before it ran included.
            read.task.add_done_callback(functools.partial(_unclaim, cache, self.next))
            self.pending[self.next] = read
            self.next += self.step

    async def get(self, file_start: int) -> LakeObject | None:
        read = self.pending.pop(file_start, None)
        if read is not None:
            self.held -= read.counted
            read.ahead = None
        elif file_start >= self.next:
            self.next = file_start + self.step  # read below, as a needed read
        self._fill(await self.lake.newest())
        if read is not None:
            return await read.task
        obj = await self.lake.object(file_start, network=self.network)
        if obj is not None:
            self._seen(obj)
        return obj

    def close(self) -> None:
        for read in self.pending.values():
            read.ahead = None
            read.task.cancel()
        self.pending.clear()
        self.held = 0


async def _object_holding(
    lake: Lake, ahead: ReadAhead, seq: int, s: StreamSettings, stop: asyncio.Event | None = None
) -> LakeObject:
    """The object holding ``seq``: waits at the tip as long as it takes, and
    for a gap up to ``missing_object_wait`` (the exporter may upload out of order)."""
    gap_since = None
    while True:
        file_start = lake.file_start(seq)
        obj = await ahead.get(file_start)
        if obj is not None and obj.holds(seq):
            return obj
        newest = await lake.newest()
        if newest is None or newest < seq:
            await _unless_stopped(lake.wait_for(seq), stop, seq)  # at the tip: as long as the client waits
            continue
        # Later ledgers exist, so this one is a gap.
        now = time.monotonic()
        gap_since = gap_since or now
        if now - gap_since >= s.missing_object_wait:
            key = lake.key(seq)
            if obj is None:
                raise LedgerMissing(f"object {key} is missing while later ledgers exist (newest {newest})")
            raise LedgerMissing(
                f"ledger {seq} is missing from object {obj.key}, which holds {obj.start}-{obj.end}",
            )
        await _unless_stopped(asyncio.sleep(min(s.poll_interval, s.missing_object_wait)), stop, seq)
        lake.forget(file_start)
        await lake.newest(refresh=True)


async def stream_frames(
    lake: Lake,
    start: int,
    end: int,
    s: StreamSettings,
    stop: asyncio.Event | None = None,
    shape: Shape | None = None,
) -> AsyncGenerator[list[bytes], None]:
    """RawLedger frames from ``start`` to ``end`` inclusive (0: forever), in
    runs: the frames an object holds for the stream, handed over whole so that
    no generator step is spent per ledger. Setting ``stop`` (the server
    draining) ends it with UNAVAILABLE before the next run. ``shape``: send
    another shape of each object's frames (the ``stellar.v1`` ones)."""
    check_start(start, end)
    network = shape.network if shape is not None else None
    first = await check_in_range(lake, start, network)
    ahead = ReadAhead(
        lake,
        lake.file_start(start),
        s,
        lake.file_start(end) if end else None,
        shape.prepare if shape is not None else lake.prepare_raw,
        network,
    )
    if first is not None:
        ahead.hand(lake.file_start(start), first)
    seq, prev_hash = start, None
    try:
        while not end or seq <= end:
            if stop is not None and stop.is_set():
                raise Draining(DRAINING.format(seq=seq))
            obj = await _object_holding(lake, ahead, seq, s, stop)
            if s.verify and prev_hash is not None and seq == obj.start and obj.first_prev != prev_hash:
                raise ChainBroken(
                    f"ledger {seq} in {obj.key} does not chain: its previousLedgerHash "
                    f"{obj.first_prev.hex()} is not ledger {seq - 1}'s hash {prev_hash.hex()}",
                )
            last = obj.end if not end else min(obj.end, end)
            if shape is not None:
                frames = await shape.frames(obj)
            else:  # None: decoded for a v1 call, they are cut out once, then kept
                raw = obj.frames
                frames = raw if raw is not None else await lake.raw_frames(obj)
            yield (frames if (seq, last) == (obj.start, obj.end) else frames[seq - obj.start : last - obj.start + 1])
            prev_hash = obj.last_hash if last == obj.end else None
            seq = last + 1
    finally:
        ahead.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def range_response(frames: list[bytes], latest: int) -> bytes:
    """GetLedgerRangeResponse wire bytes around ready RawLedger frames."""
    parts: list[bytes] = []
    for f in frames:
        parts += (b"\x0a", _varint(len(f)), f)
    if latest:
        parts += (b"\x10", _varint(latest))
    return b"".join(parts)


async def ledger_range(lake: Lake, start: int, end: int, s: StreamSettings, shape: Shape | None = None) -> bytes:
    """The ledgers of [start, end) the lake holds now, from ``start``, stopping
    at the first one missing, at ``range_max_ledgers``, or before passing
    ``range_max_bytes`` (always at least one). Never waits. ``shape``: as
    for ``stream_frames``."""
    if not end or end <= start:
        raise BadRequest(f"end_ledger {end} must be above start_ledger {start} (it is exclusive)")
    check_start(start)
    newest = await lake.newest(refresh=True)
    if newest is None or start > newest:
        return range_response([], newest or 0)
    network = shape.network if shape is not None else None
    first = await check_in_range(lake, start, network)
    frames: list[bytes] = []
    total, seq, prev_hash = 0, start, None
    while seq < end and len(frames) < s.range_max_ledgers:
        obj = first if seq == start and first is not None else await lake.object(lake.file_start(seq), network=network)
        if obj is None or not obj.holds(seq):
            break
        if s.verify and prev_hash is not None and seq == obj.start and obj.first_prev != prev_hash:
            raise ChainBroken(f"ledger {seq} in {obj.key} does not chain to ledger {seq - 1}")
        if shape is not None:
            held = await shape.frames(obj)
        else:  # None: decoded for a v1 call
            raw = obj.frames
            held = raw if raw is not None else await lake.raw_frames(obj)
        while seq <= obj.end and seq < end and len(frames) < s.range_max_ledgers:
            f = held[seq - obj.start]
            if frames and total + len(f) > s.range_max_bytes:
                return range_response(frames, newest)
            frames.append(f)
            total += len(f)
            seq += 1
        prev_hash = obj.last_hash
    return range_response(frames, newest)
