"""One datalake: its layout, its objects (fetched with retries, decoded off the
event loop, shared through one cache), its oldest and newest ledgers, and
one tip watcher that every waiting stream shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..core import decode, zstd
from ..core.errors import CoreError
from ..core.keys import EXTENSIONS, Layout
from .objects import LakeObject, ObjectCache
from .storage import ObjectNotFound, Storage, StorageError

log = logging.getLogger("stellar_live_source.lake")

MANIFEST = ".config.json"
# Objects that declare up to this many decompressed bytes (under 1 ms of
# decoding) are decoded on the event loop: for them, a thread handoff and the
# GIL contention it brings cost more than the decoding (7% of a cold stream
# of small ledgers). Larger ones go to the decode threads, keeping the loop free.
INLINE_DECODE_BYTES = 512 << 10
# Decoding is bulk work and the event loop's is latency work (every stream's
# sends), so decode threads run this much nicer than the process and the loop
# preempts them, as RocksDB does with its compaction threads. A cold stream of
# large ledgers ran 3-5% faster, with the client on the server's cores or not.
DECODE_NICE = 10


def _yield_to_the_loop() -> None:
    """Run the calling decode thread DECODE_NICE nicer (Linux: a thread has its
    own nice; elsewhere the id would name a process, so nothing is done)."""
    if sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + DECODE_NICE))
    except OSError as exc:  # a sandbox that forbids it: decoding still works
        log.debug("decode thread priority left as it was: %s", exc)


class LakeError(Exception):
    """The lake cannot be served as configured (start-up)."""


class Unavailable(Exception):
    """Storage failed after every retry: transient, the client should resume."""


class Corrupt(Exception):
    """An object failed to decode or verify twice: the message names the key and offset."""


async def retrying(what: str, call, settings: LakeSettings):
    """``await call()``, retrying StorageError with exponential backoff and full
    jitter; after ``retry_attempts`` retries, Unavailable. A missing object
    (ObjectNotFound) is an answer, not a failure: it is raised at once."""
    for attempt in range(settings.retry_attempts + 1):
        try:
            return await call()
        except ObjectNotFound:
            raise
        except StorageError as exc:
            if attempt == settings.retry_attempts:
                raise Unavailable(f"storage failed {what} after {attempt + 1} tries: {exc}") from exc
            wait = random.uniform(0, min(settings.retry_backoff_max, settings.retry_backoff * 2**attempt))
            log.info("%s failed (%s); retry %d in %.2fs", what, exc, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class LakeSettings:
    ledgers_per_file: int | None = None  # None: not set by the operator (manifest or 64)
    files_per_partition: int | None = None
    retry_attempts: int = 5
    retry_backoff: float = 1.0
    retry_backoff_max: float = 30.0
    poll_interval: float = 1.0
    cache_bytes: int = 256 << 20
    max_object_bytes: int = 512 << 20
    verify: bool = True
    unknown_arms: str = "error"
    decode_workers: int = 2


class Lake:
    def __init__(self, storage: Storage, layout: Layout, settings: LakeSettings, manifest: dict | None = None):
        self.storage = storage
        self.layout = layout
        self.settings = settings
        self.manifest = manifest
        self.cache = ObjectCache(settings.cache_bytes)
        self._decoder = ThreadPoolExecutor(
            settings.decode_workers, thread_name_prefix="decode", initializer=_yield_to_the_loop
        )
        self._newest: tuple[str, int] | None = None  # (key, newest ledger)
        self._oldest: int | None = None
        self._oldest_search: asyncio.Future | None = None
        self._tip_changed = asyncio.Event()
        self._watcher: asyncio.Task | None = None
        self._waiters = 0
        self.fetches = 0

    # -- opening --
    @classmethod
    async def open(cls, storage: Storage, settings: LakeSettings) -> Lake:
        await retrying("checking the lake", storage.check, settings)
        manifest = None
        try:
            manifest = json.loads(await retrying(f"reading {MANIFEST}", lambda: storage.get(MANIFEST), settings))
        except ObjectNotFound:
            pass
        except ValueError as exc:
            raise LakeError(f"the lake manifest {MANIFEST} is not JSON: {exc}") from exc
        lpf, fpp = settings.ledgers_per_file, settings.files_per_partition
        problems = []
        if manifest is not None:
            for env, given, key in (
                ("LEDGERS_PER_FILE", lpf, "ledgersPerBatch"),
                ("FILES_PER_PARTITION", fpp, "batchesPerPartition"),
            ):
                if given is not None and given != manifest.get(key):
                    problems.append(f"{env}={given} contradicts the lake manifest's {key}={manifest.get(key)}")
            if manifest.get("compression", "zstd") != "zstd":
                problems.append(f"the lake manifest's compression {manifest.get('compression')!r} is not zstd")
            lpf, fpp = manifest.get("ledgersPerBatch"), manifest.get("batchesPerPartition")
        if problems:
            raise LakeError("; ".join(problems))
        lake = cls(storage, Layout(lpf or 64, fpp or 10), settings, manifest)
        ext = await lake._detect_extension()
        if ext != lake.layout.extension:
            lake.layout = Layout(lake.layout.ledgers_per_file, lake.layout.files_per_partition, ext)
        return lake

    async def _detect_extension(self) -> str:
        for key in await self._list(limit=10):
            for ext in EXTENSIONS:
                if key.endswith(ext):
                    return ext
        return EXTENSIONS[0]

    async def close(self) -> None:
        if self._oldest_search is not None:
            self._oldest_search.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        self._decoder.shutdown(wait=False, cancel_futures=True)
        await self.storage.close()

    # -- objects --
    def file_start(self, seq: int) -> int:
        return self.layout.file_start(seq)

    def key(self, seq: int) -> str:
        return self.layout.object_key(seq)

    async def object(self, file_start: int) -> LakeObject | None:
        """The decoded object holding ``file_start``'s ledgers, or None when the
        lake has no such object (under either extension)."""
        return await self.cache.get(file_start, lambda: self._fetch(file_start))

    async def _fetch(self, file_start: int) -> LakeObject | None:
        ext = self.layout.extension
        for e in (ext, *(x for x in EXTENSIONS if x != ext)):
            key = self.layout.object_key(file_start, e)
            try:
                raw = await self._get(key)
            except ObjectNotFound:
                continue
            try:
                return await self._decode(key, raw)
            except CoreError as first:
                # A truncated or garbled transfer is not a corrupt object: fetch once more.
                log.warning("object %s failed to decode (%s); fetching it again", key, first)
                try:
                    return await self._decode(key, await self._get(key))
                except CoreError as exc:
                    raise Corrupt(f"object {key}: {exc}") from exc
                except ObjectNotFound:
                    raise Unavailable(f"object {key} disappeared while it was being read") from None
        return None

    async def _get(self, key: str) -> bytes:
        async def get() -> bytes:
            self.fetches += 1
            return await self.storage.get(key)

        return await retrying(f"reading {key}", get, self.settings)

    async def _list(self, prefix: str = "", **kw) -> list[str]:
        return await retrying(f"listing {prefix or 'the lake'}", lambda: self.storage.list(prefix, **kw), self.settings)

    async def _decode(self, key: str, raw: bytes) -> LakeObject:
        s = self.settings

        def work() -> LakeObject:
            f = decode.frame_object(raw, max_size=s.max_object_bytes, verify=s.verify, unknown_arms=s.unknown_arms)
            return LakeObject(key, f.start, f.end, f.frames, f.first_prev, f.last_hash, f.nbytes, f.fallback)

        size = zstd.content_size(raw)  # garbage raises here as it would in decoding
        if size is not None and size <= INLINE_DECODE_BYTES:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._decoder, work)

    # -- the ends of the lake --
    async def newest(self, refresh: bool = False) -> int | None:
        """The last ledger the lake holds, or None for an empty lake."""
        if self._newest is None or refresh:
            await self._refresh_newest()
        return None if self._newest is None else self._newest[1]

    async def _refresh_newest(self) -> None:
        # Inverted hex prefixes: an ascending listing starts with the newest object.
        # The manifest sorts first ('.' < '0'); anything that is no object key is skipped.
        for key in await self._list(limit=8):
            try:
                start, _, _ = self.layout.parse_key(key)
            except ValueError:
                continue
            if self._newest is not None and self._newest[0] == key:
                return
            obj = await self.object(start)
            if obj is not None:
                if self._newest is None or obj.end > self._newest[1]:
                    self._newest = (key, obj.end)
                    self._tip_changed.set()
                    self._tip_changed = asyncio.Event()
                return
        self._newest = None

    async def oldest(self, refresh: bool = False) -> int | None:
        """The first ledger the lake holds, found by searching the listing
        (the oldest object has the largest key), never by scanning it. One
        search at a time, shared by every stream that asks meanwhile."""
        if self._oldest is None or refresh:
            if self._oldest_search is None or self._oldest_search.done():
                self._oldest_search = asyncio.ensure_future(self._find_oldest())
            self._oldest = await asyncio.shield(self._oldest_search)
        return self._oldest

    async def _find_oldest(self) -> int | None:
        key = await self._last_key("")
        if key is None:
            return None
        # Read past the cache: only its bounds are wanted, and streams rarely start there.
        obj = await self._fetch(self.layout.parse_key(key)[0])
        return None if obj is None else obj.start

    async def _last_key(self, prefix: str) -> str | None:
        """The lexicographically last object key under ``prefix``. Every level
        of the layout (partition folder, file) starts with 8 hex digits, so a
        search over them takes a few rounds of one-key listings whatever the
        lake's size: 8-way, the 7 probes of a round listed at once."""

        async def any_after(after: str) -> bool:
            return bool(await self._list(prefix, start_after=after, limit=1))

        # '/' sorts between '.' (the manifest) and '0' (every key).
        if not await any_after(prefix + "/"):
            return None
        lo, hi = 0, 0xFFFFFFFF  # the largest x with a key after "%08X" % x: the largest prefix
        while lo < hi:
            points = sorted({lo + (hi - lo) * i // 8 + 1 for i in range(7)} | {hi})
            try:
                async with asyncio.TaskGroup() as tg:  # one failing listing cancels its siblings
                    probes = [tg.create_task(any_after(f"{prefix}{x:08X}")) for x in points]
            except ExceptionGroup as group:
                raise group.exceptions[0] from None
            found = [p.result() for p in probes]
            below = [x for x, f in zip(points, found, strict=True) if f]
            above = [x for x, f in zip(points, found, strict=True) if not f]
            lo = max(below, default=lo)
            hi = min((x for x in above if x > lo), default=hi + 1) - 1
        key = (await self._list(f"{prefix}{lo:08X}", limit=1))[0]
        if "/" in key[len(prefix) :]:  # a partition folder: its last file, the same way
            return await self._last_key(key[: key.index("/", len(prefix)) + 1])
        return key

    # -- the tip --
    async def wait_for(self, seq: int) -> None:
        """Return once the lake holds ``seq`` (the one tip watcher polls)."""
        self._waiters += 1
        try:
            while True:
                newest = await self.newest()
                if newest is not None and newest >= seq:
                    return
                self._ensure_watcher()
                await self._tip_changed.wait()
        finally:
            self._waiters -= 1

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="tip-watcher")

    async def _watch(self) -> None:
        """Polls the newest key while anyone waits at the tip; one per lake."""
        while self._waiters:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self._refresh_newest()
            except (Unavailable, Corrupt, StorageError) as exc:
                log.warning("tip watcher: %s", exc)
