"""One datalake: its layout, its objects (fetched with retries, at most
``max_inflight`` storage reads at once with slots kept for needed reads,
decoded off the event loop, shared through one cache), its oldest and newest
ledgers, and one tip watcher that every waiting stream shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ..core import decode, index, zstd
from ..core.keys import EXTENSIONS, Layout
from ..errors import (
    BadData,
    CoreError,
    CorruptObject,
    LakeConfigError,
    ObjectNotFound,
    RetriesExhausted,
    StorageError,
    Unavailable,
)
from ..ops import tracing
from .breaker import Breaker
from .objects import LakeObject, ObjectCache
from .probe import KeyProbe, anchors, find_anchor
from .slots import Slots
from .storage import Storage

log = logging.getLogger("stellar_live_source.lake")

MANIFEST = ".config.json"  # the default MANIFEST_PATH
# Objects that declare up to this many decompressed bytes (under 1 ms of
# decoding) are decoded on the event loop: for them a thread handoff costs more
# than the decoding. Larger ones go to the decode threads, keeping the loop free.
INLINE_DECODE_BYTES = 512 << 10
# Decoding is bulk work and the event loop's is latency work (every stream's
# sends), so decode threads run this much nicer than the process and the loop
# preempts them, as RocksDB does with its compaction threads (docs/benchmarks.md).
DECODE_NICE = 10
# Keys per listing while looking for the lake's ends: enough to step over a few
# files that are not the layout's (a README, a stray upload) in one request.
_LISTING = 8

T = TypeVar("T")


def _text(manifest: dict | None, key: str) -> str:
    """A string field of the manifest ("" when absent)."""
    value = (manifest or {}).get(key, "")
    return value if isinstance(value, str) else ""


def _no_request(operation: str, outcome: str, seconds: float) -> None:
    """The default storage-call hook: nobody observes."""


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


async def retrying(
    what: str, call: Callable[[], Awaitable[T]], settings: LakeSettings, breaker: Breaker | None = None
) -> T:
    """``await call()``, retrying StorageError with exponential backoff and full
    jitter (so that concurrent waiters do not retry in lockstep); after
    ``retry_attempts`` retries, RetriesExhausted. A missing object
    (ObjectNotFound) is an answer, not a failure: it passes through at once.
    Through ``breaker`` if given: the whole operation, retries included, is
    one success or failure to it, and while it is open StorageUnavailable
    comes at once."""
    if breaker is not None:
        return await breaker.call(lambda: _retrying(what, call, settings))
    return await _retrying(what, call, settings)


async def _retrying(what: str, call: Callable[[], Awaitable[T]], settings: LakeSettings) -> T:
    for attempt in range(settings.retry_attempts + 1):
        try:
            return await call()
        except StorageError as exc:
            if attempt == settings.retry_attempts:
                raise RetriesExhausted(f"storage failed {what} after {attempt + 1} tries: {exc}") from exc
            wait = random.uniform(0, min(settings.retry_backoff_max, settings.retry_backoff * 2**attempt))
            log.info("%s failed (%s); retry %d in %.2fs", what, exc, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class LakeSettings:
    """What the lake needs of the configuration (built by ``parts``; defaults live there)."""

    ledgers_per_file: int | None  # None: not set by the operator (the manifest, else the default)
    files_per_partition: int | None
    default_ledgers_per_file: int  # when neither the operator nor a manifest says
    default_files_per_partition: int
    retry_attempts: int
    retry_backoff: float
    retry_backoff_max: float
    poll_interval: float
    cache_bytes: int
    max_object_bytes: int
    verify: bool
    unknown_arms: str
    decode_workers: int
    max_inflight: int  # storage reads at once, every stream together
    breaker_failure_threshold: int = 5  # failed operations in a row that open the breaker
    breaker_reset_timeout: float = 30.0  # seconds open before the half-open probe
    manifest_path: str = MANIFEST  # the SEP-54 manifest, from the lake's root
    network_passphrase: str = ""  # NETWORK_PASSPHRASE ("": the manifest's, if any)
    search_from: int = 0  # HTTP_SEARCH_FROM: a ledger a lake that cannot list holds (0: look for one)


def breaker_for(storage: Storage, settings: LakeSettings) -> Breaker:
    """A new breaker for ``storage`` with the settings' threshold and reset timeout."""
    return Breaker(storage.description, settings.breaker_failure_threshold, settings.breaker_reset_timeout)


class Lake:
    def __init__(
        self,
        storage: Storage,
        layout: Layout,
        settings: LakeSettings,
        manifest: dict | None = None,
        breaker: Breaker | None = None,
    ):
        self.storage = storage
        storage.max_object_bytes = settings.max_object_bytes  # refused from its stored size, unread
        # One per storage backend: every storage operation of this lake goes through it.
        self.breaker = breaker or breaker_for(storage, settings)
        self.layout = layout
        self.settings = settings
        self.manifest = manifest
        # The served network's passphrase and the exporter's release ("": not known).
        self.network = settings.network_passphrase or _text(manifest, "networkPassphrase")
        self.exporter_version = _text(manifest, "version")
        self.cache = ObjectCache(settings.cache_bytes)
        self._decoder = ThreadPoolExecutor(
            settings.decode_workers, thread_name_prefix="decode", initializer=_yield_to_the_loop
        )
        self._newest: tuple[str, int] | None = None  # (key, newest ledger)
        self._tip: LakeObject | None = None  # the newest object, kept beside the cache (see object())
        self._oldest: int | None = None
        self._oldest_search: asyncio.Future[int | None] | None = None
        self._tip_changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._waiters = 0
        self._probe: KeyProbe | None = None  # how the ends are found when storage cannot list
        self.fetches = 0
        self.slots = Slots(settings.max_inflight)  # observers read in_use and waits
        # Observers' hooks (metrics): told of each storage call (operation,
        # outcome, seconds) and each decode (seconds per stage); no-ops by default.
        self.on_storage_request: Callable[[str, str, float], None] = _no_request
        self.on_decode: Callable[[list[float]], None] | None = None

    # -- opening --
    @classmethod
    async def open(cls, storage: Storage, settings: LakeSettings, breaker: Breaker | None = None) -> Lake:
        breaker = breaker or breaker_for(storage, settings)
        storage.max_object_bytes = settings.max_object_bytes
        await retrying("checking the lake", storage.check, settings, breaker)
        where = settings.manifest_path
        manifest = None
        try:
            text = await retrying(f"reading {where}", lambda: storage.get(where), settings, breaker)
            manifest = json.loads(bytes(text))  # remote reads hand back a buffer, not bytes
        except ObjectNotFound:
            pass
        except ValueError as exc:
            raise LakeConfigError(f"the lake manifest {where} is not JSON: {exc}") from exc
        if manifest is not None and not isinstance(manifest, dict):
            raise LakeConfigError(f"the lake manifest {where} is not a JSON object")
        lpf, fpp = settings.ledgers_per_file, settings.files_per_partition
        problems = []
        if manifest is not None:
            passphrase = settings.network_passphrase
            if passphrase and "networkPassphrase" in manifest and manifest["networkPassphrase"] != passphrase:
                problems.append(
                    f"NETWORK_PASSPHRASE={passphrase!r} contradicts the lake manifest's "
                    f"networkPassphrase={manifest['networkPassphrase']!r}"
                )
            for key in ("networkPassphrase", "version", "ledgersPath"):
                if key in manifest and not isinstance(manifest[key], str):
                    problems.append(f"the lake manifest's {key} is not a string: {manifest[key]!r}")
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
            raise LakeConfigError(problems)
        try:
            layout = Layout(lpf or settings.default_ledgers_per_file, fpp or settings.default_files_per_partition)
        except (TypeError, ValueError) as exc:
            raise LakeConfigError(f"the lake manifest {where} gives no usable layout: {exc}") from exc
        if manifest is not None and manifest.get("ledgersPath", "").strip("/"):
            # SEP-54: the ledger objects sit under this path, not beside the manifest.
            path = manifest["ledgersPath"].strip("/")
            if any(part in ("", ".", "..") for part in path.split("/")):
                given = manifest["ledgersPath"]
                raise LakeConfigError(f"the lake manifest's ledgersPath {given!r} is not a plain path")
            storage.descend(path)
        lake = cls(storage, layout, settings, manifest, breaker)
        if not storage.can_list:
            await lake._open_probe()
            return lake
        first = await lake._first_object_key("", None)
        if first is not None:  # the newest object's extension: what the exporter writes now
            ext = lake.layout.parse_key(first)[2]
            if ext != lake.layout.extension:
                lake.layout = Layout(layout.ledgers_per_file, layout.files_per_partition, ext)
        return lake

    async def _open_probe(self) -> None:
        """For storage that cannot list: one object the lake holds, found by
        existence checks, gives the extension and where searches start."""
        search_from = self.settings.search_from
        found = await find_anchor(self.layout, self._exists, search_from)
        if found is None:
            where = self.storage.description
            if search_from:
                raise LakeConfigError(
                    f"HTTP_SEARCH_FROM={search_from}: the lake at {where} holds no object "
                    f"{self.layout.object_key(search_from)} (under either extension)"
                )
            tried = len(anchors(self.layout, 0))
            raise LakeConfigError(
                f"the lake at {where} cannot be listed and holds none of the {tried} objects looked for "
                "(ledger 2's and the powers of two's): set HTTP_SEARCH_FROM to a ledger it holds"
            )
        start, ext = found
        if ext != self.layout.extension:
            self.layout = Layout(self.layout.ledgers_per_file, self.layout.files_per_partition, ext)
        self._probe = KeyProbe(self.layout, self._exists, start)

    async def close(self) -> None:
        if self._oldest_search is not None:
            self._oldest_search.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        self._decoder.shutdown(wait=False, cancel_futures=True)
        await self.storage.close()

    # -- what observers may read --
    @property
    def newest_known(self) -> int | None:
        """The newest ledger as last looked up (None: not yet, or an empty lake)."""
        return None if self._newest is None else self._newest[1]

    @property
    def oldest_known(self) -> int | None:
        return self._oldest

    @property
    def waiters(self) -> int:
        """Streams waiting at the tip."""
        return self._waiters

    @property
    def watching(self) -> bool:
        """Whether the tip watcher is polling."""
        return self._watcher is not None and not self._watcher.done()

    # -- objects --
    def file_start(self, seq: int) -> int:
        return self.layout.file_start(seq)

    def key(self, seq: int) -> str:
        return self.layout.object_key(seq)

    async def object(
        self,
        file_start: int,
        ahead: bool = False,
        on_size: Callable[[int], None] | None = None,
        network: str | None = None,
    ) -> LakeObject | None:
        """The decoded object holding ``file_start``'s ledgers, or None when the
        lake has no such object (under either extension). ``ahead``: a read
        ahead of what a stream needs now, which never takes the slots kept
        for needed reads. ``on_size`` is told the stored size of each read
        this call starts, as soon as storage knows it. ``network``: a
        ``stellar.v1`` call's; a fetch this call starts decodes the object
        into v1 frames for it (no RawLedger frames until a raw call needs
        them), one copy of each ledger either way."""
        tip = self._tip
        if tip is not None and self.layout.file_start(tip.start) == file_start:
            # Read to learn the newest ledger; an object larger than the cache is not read again.
            return tip
        return await self.cache.get(file_start, lambda: self._fetch(file_start, ahead, on_size, network))

    async def _fetch(
        self,
        file_start: int,
        ahead: bool = False,
        on_size: Callable[[int], None] | None = None,
        network: str | None = None,
    ) -> LakeObject | None:
        ext = self.layout.extension
        for e in (ext, *(x for x in EXTENSIONS if x != ext)):
            key = self.layout.object_key(file_start, e)
            try:
                raw = await self._get(key, ahead, on_size)
            except ObjectNotFound:
                continue
            # No exception leaves here holding a buffer: each failure becomes a
            # message and the buffer is dropped before anything is raised (a
            # traceback keeps its frames' locals alive, and a cached failure
            # or a retry would keep them for as long).
            try:
                return await self._decode(key, raw, network)
            except CoreError as exc:
                first = str(exc)
            del raw
            # A truncated or garbled transfer is not a corrupt object: fetch once more.
            log.warning("object %s failed to decode (%s); fetching it again", key, first)
            try:
                raw = await self._get(key, ahead, on_size)
            except ObjectNotFound:
                gone = True
            else:
                gone = False
            if gone:
                raise RetriesExhausted(f"object {key} disappeared while it was being read")
            try:
                return await self._decode(key, raw, network)
            except CoreError as exc:
                second = str(exc)
            del raw
            raise CorruptObject(f"object {key}: {second}")
        return None

    async def _get(self, key: str, ahead: bool = False, on_size: Callable[[int], None] | None = None) -> bytes:
        slots = self.slots

        async def get() -> bytes:
            # A slot only for the storage call: not across a retry's backoff, nor the decoding.
            await slots.acquire(ahead)
            began, outcome = time.perf_counter(), "cancelled"
            try:
                self.fetches += 1
                data = await self.storage.get(key, on_size)
                outcome = "ok"
                return data
            except ObjectNotFound:
                outcome = "not_found"
                raise
            except Exception:
                outcome = "error"
                raise
            finally:
                slots.release(ahead)
                self.on_storage_request("get", outcome, time.perf_counter() - began)

        if tracing.TRACER is None:
            return await retrying(f"reading {key}", get, self.settings, self.breaker)
        with tracing.child("lake.fetch", key):  # the read, its retries included
            return await retrying(f"reading {key}", get, self.settings, self.breaker)

    async def _list(self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        what = f"listing {prefix or 'the lake'}"

        async def listing() -> list[str]:
            began, outcome = time.perf_counter(), "cancelled"
            try:
                keys = await self.storage.list(prefix, start_after=start_after, limit=limit)
                outcome = "ok"
                return keys
            except Exception:
                outcome = "error"
                raise
            finally:
                self.on_storage_request("list", outcome, time.perf_counter() - began)

        return await retrying(what, listing, self.settings, self.breaker)

    async def _exists(self, key: str) -> bool:
        """Whether the lake holds object ``key`` (a HEAD request, retried like any storage call)."""

        async def head() -> bool:
            began, outcome = time.perf_counter(), "cancelled"
            try:
                await self.storage.head(key)
                outcome = "ok"
                return True
            except ObjectNotFound:
                outcome = "not_found"
                return False
            except Exception:
                outcome = "error"
                raise
            finally:
                self.on_storage_request("head", outcome, time.perf_counter() - began)

        return await retrying(f"looking for {key}", head, self.settings, self.breaker)

    async def _decode(self, key: str, raw: bytes, network: str | None = None) -> LakeObject:
        if tracing.TRACER is None:
            return await self._decode_now(key, raw, network)
        with tracing.child("lake.decode", key, len(raw)):
            return await self._decode_now(key, raw, network)

    async def _decode_now(self, key: str, raw: bytes, network: str | None = None) -> LakeObject:
        s = self.settings

        on_decode = self.on_decode
        stages: list[float] | None = [] if on_decode is not None else None

        def work() -> LakeObject:
            f = decode.frame_object(
                raw,
                max_size=s.max_object_bytes,
                verify=s.verify,
                unknown_arms=s.unknown_arms,
                stages=stages,
                network=network,
            )
            if network is None:
                return LakeObject(
                    key, f.start, f.end, f.frames, f.first_prev, f.last_hash, f.nbytes, f.fallback, len(raw)
                )
            obj = LakeObject(key, f.start, f.end, None, f.first_prev, f.last_hash, 0, f.fallback, len(raw))
            obj.v1[network] = (f.frames, f.nbytes)
            return obj

        size = zstd.content_size(raw)  # garbage raises here as it would in decoding
        if size is not None and size <= INLINE_DECODE_BYTES:
            obj = work()
        else:
            obj = await asyncio.get_running_loop().run_in_executor(self._decoder, work)
        if on_decode is not None and stages is not None:
            on_decode(stages)  # on the loop: observers need no locks of their own
        return obj

    async def v1_frames(self, obj: LakeObject, network: str) -> list[bytes]:
        """``obj``'s ``stellar.v1`` frames for ``network``, built once and
        shared (counted by the cache): small objects on the event loop, larger
        ones on the decode threads (a second copy of every ledger would hold
        the loop as long as decoding would). ``prepare_v1`` starts the build
        early."""
        built = obj.v1.get(network)
        if built is not None:
            return built[0]
        # Shielded: one caller going away does not cancel the build the others share.
        return (await asyncio.shield(self.prepare_v1(obj, network)))[0]

    def prepare_v1(self, obj: LakeObject, network: str) -> asyncio.Future[tuple[list[bytes], int]]:
        """Start building ``obj``'s v1 frames unless they are built or being built."""
        loop = asyncio.get_running_loop()
        fut = obj.v1_building.get(network)
        if fut is not None:
            return fut
        built = obj.v1.get(network)
        if built is None and obj.held <= INLINE_DECODE_BYTES:
            self.cache.v1_frames(self.file_start(obj.start), obj, network)
            built = obj.v1[network]
        if built is not None:
            fut = loop.create_future()
            fut.set_result(built)
            return fut
        if obj.frames is not None:
            fut = loop.run_in_executor(self._decoder, index.v1_frames, obj.frames, network)
        else:  # decoded for another network: through RawLedger frames, not kept
            source = obj.v1_source()
            fut = loop.run_in_executor(self._decoder, lambda: index.v1_frames(index.raw_frames(source)[0], network))
        obj.v1_building[network] = fut

        def done(f: asyncio.Future[tuple[list[bytes], int]]) -> None:
            obj.v1_building.pop(network, None)
            if not f.cancelled() and f.exception() is None:
                self.cache.add_v1(self.file_start(obj.start), obj, network, f.result())

        fut.add_done_callback(done)
        return fut

    async def raw_frames(self, obj: LakeObject) -> list[bytes]:
        """``obj``'s RawLedger frames: an object decoded for a v1 call has them
        cut by the core out of its v1 frames once, the first time a raw call
        needs them, and shared (counted by the cache); small objects on the
        event loop, larger ones on the decode threads, as ``v1_frames``.
        ``prepare_raw`` starts the build early."""
        frames = obj.frames
        if frames is not None:
            return frames
        # Shielded: one caller going away does not cancel the build the others share.
        fut = self.prepare_raw(obj)
        assert fut is not None
        return (await asyncio.shield(fut))[0]

    def prepare_raw(self, obj: LakeObject) -> asyncio.Future[tuple[list[bytes], int]] | None:
        """Start building ``obj``'s RawLedger frames unless they are built
        (None) or being built."""
        if obj.frames is not None:
            return None
        fut = obj.raw_building
        if fut is not None:
            return fut
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if obj.held <= INLINE_DECODE_BYTES:
            frames = self.cache.raw_frames(self.file_start(obj.start), obj)
            fut.set_result((frames, obj.nbytes))
            return fut
        fut = obj.raw_building = loop.run_in_executor(self._decoder, index.raw_frames, obj.v1_source())

        def done(f: asyncio.Future[tuple[list[bytes], int]]) -> None:
            obj.raw_building = None
            if not f.cancelled() and f.exception() is None:
                self.cache.add_raw(self.file_start(obj.start), obj, f.result())

        fut.add_done_callback(done)
        return fut

    def forget(self, file_start: int) -> None:
        """Drop what is known of an object, so that the next read fetches it
        again (a gap in it may have been filled since)."""
        self.cache.drop(file_start)
        if self._tip is not None and self.layout.file_start(self._tip.start) == file_start:
            self._tip = None
            if self._newest is not None:
                self._newest = ("", self._newest[1])  # the next refresh reads the newest object again

    # -- keys that are the layout's --
    def _is_object_key(self, key: str) -> bool:
        """Whether the layout writes exactly this key (under either extension):
        anything else in the bucket (a README, a stray upload) is not the lake's."""
        try:
            start, _, ext = self.layout.parse_key(key)
        except ValueError:
            return False
        return key == self.layout.object_key(start, ext)

    def _is_partition(self, name: str) -> bool:
        """Whether ``name`` ("HHHHHHHH--a-b/") is a partition folder of the layout."""
        try:
            start = int(name[10 : name.index("-", 10)])
        except ValueError:
            return False
        return start <= 0xFFFFFFFF and name == self.layout.partition_dir(start) + "/"

    def _partition_of(self, key: str) -> str | None:
        """The partition folder ("HHHHHHHH--a-b/") a key lies in, if it is one of the layout's."""
        folder = key[: key.find("/") + 1]
        return folder if folder and self._is_partition(folder) else None

    def _object_key(self, key: str) -> str | None:
        return key if self._is_object_key(key) else None

    async def _first(self, prefix: str, start_after: str | None, pick: Callable[[str], str | None]) -> str | None:
        """The first ``pick(key)`` that is not None over the keys under ``prefix``
        after ``start_after``, listed a few at a time: keys that are not the
        layout's are stepped over."""
        while True:
            keys = await self._list(prefix, start_after=start_after, limit=_LISTING)
            for key in keys:
                if (found := pick(key)) is not None:
                    return found
            if len(keys) < _LISTING:
                return None
            start_after = keys[-1]

    async def _first_object_key(self, prefix: str, start_after: str | None) -> str | None:
        """The first key under ``prefix`` after ``start_after`` that is an object of the layout."""
        return await self._first(prefix, start_after, self._object_key)

    async def _first_entry(self, prefix: str, start_after: str) -> str | None:
        """The first entry of the layout's next level under ``prefix`` after
        ``start_after``: a partition folder at the top of a partitioned
        layout, else an object key."""
        partitioned = not prefix and self.layout.files_per_partition > 1
        return await self._first(prefix, start_after, self._partition_of if partitioned else self._object_key)

    # -- the ends of the lake --
    async def newest(self, refresh: bool = False) -> int | None:
        """The last ledger the lake holds, or None for an empty lake."""
        if self._newest is None or refresh:
            await self._refresh_newest()
        return None if self._newest is None else self._newest[1]

    async def _refresh_newest(self) -> None:
        if self._probe is not None:
            return await self._refresh_newest_probed(self._probe)
        # Inverted hex prefixes: an ascending listing starts with the newest object.
        after = None
        while (key := await self._first_object_key("", after)) is not None:
            if self._newest is not None and self._newest[0] == key:
                return
            obj = await self.object(self.layout.parse_key(key)[0])
            if obj is not None:
                self._take_newest(key, obj)
                return
            after = key  # listed, then gone: the next one
        self._newest = self._tip = None

    async def _refresh_newest_probed(self, probe: KeyProbe) -> None:
        key = await probe.newest_key()
        if self._newest is not None and self._newest[0] == key:
            return
        obj = await self.object(self.layout.parse_key(key)[0])
        if obj is not None:  # (else found, then gone: the next poll asks again)
            self._take_newest(key, obj)

    def _take_newest(self, key: str, obj: LakeObject) -> None:
        newest_end = None if self._newest is None else self._newest[1]
        grew = newest_end is None or obj.end > newest_end
        if grew or obj.end == newest_end:  # a newer object, or the newest one rewritten
            self._newest = (key, obj.end)
            self._tip = obj
        if grew:
            self._tip_changed.set()
            self._tip_changed = asyncio.Event()

    async def oldest(self, refresh: bool = False) -> int | None:
        """The first ledger the lake holds, found by searching the listing
        (the oldest object has the largest key), never by scanning it. One
        search at a time, shared by every stream that asks meanwhile."""
        if self._oldest is None or refresh:
            if self._oldest_search is None or self._oldest_search.done():
                self._oldest_search = asyncio.ensure_future(self._find_oldest())
            self._oldest = await asyncio.shield(self._oldest_search)
        return self._oldest

    async def oldest_key(self) -> str | None:
        """The key of the oldest object: the lexicographically last of the
        layout's keys (without listing: the probe's search)."""
        if self._probe is not None:
            return await self._probe.oldest_key()
        return await self._last_key("")

    async def _find_oldest(self) -> int | None:
        key = await self.oldest_key()
        if key is None:
            return None
        # Read past the cache: only its bounds are wanted, and streams rarely start there.
        obj = await self._fetch(self.layout.parse_key(key)[0])
        return None if obj is None else obj.start

    async def _last_key(self, prefix: str, below: int = 1 << 32) -> str | None:
        """The last object key of the layout under ``prefix``, among entries
        whose 8 hex digits are under ``below``. Every level of the layout
        (partition folder, file) starts with 8 hex digits, so a search over
        them takes a few rounds of listings whatever the lake's size: 8-way,
        the 7 probes of a round listed at once. Keys that are not the layout's
        are stepped over."""

        async def any_at_or_above(x: int) -> bool:
            # The first entry at or above x has the smallest digits there.
            entry = await self._first_entry(prefix, f"{prefix}{x:08X}")
            return entry is not None and int(entry[len(prefix) : len(prefix) + 8], 16) < below

        # '/' sorts between '.' (the manifest) and '0' (every key).
        if not await any_at_or_above(0):
            return None
        lo, hi = 0, below - 1  # the largest x with an entry whose digits are x or more
        while lo < hi:
            points = sorted({lo + (hi - lo) * i // 8 + 1 for i in range(7)} | {hi})
            try:
                async with asyncio.TaskGroup() as tg:  # one failing listing cancels its siblings
                    probes = [tg.create_task(any_at_or_above(x)) for x in points]
            except ExceptionGroup as group:
                raise group.exceptions[0] from None
            found = [p.result() for p in probes]
            lo = max((x for x, f in zip(points, found, strict=True) if f), default=lo)
            hi = min((x for x, f in zip(points, found, strict=True) if not f and x > lo), default=hi + 1) - 1
        entry = await self._first_entry(prefix, f"{prefix}{lo:08X}")
        if entry is None or not entry.endswith("/"):
            return entry
        # A partition folder: its last object the same way; one without any, the partitions before it.
        return await self._last_key(entry) or await self._last_key(prefix, below=lo)

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
        """Polls the newest key while anyone waits at the tip; one per lake.
        Its listings go through the breaker like every storage operation, so
        failed polls count (an outage at the tip shows in readiness), and it
        keeps polling while the breaker is open: its polls are the probes
        that close it when storage answers again."""
        while self._waiters:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self._refresh_newest()
            except (Unavailable, BadData) as exc:
                log.warning("tip watcher: %s", exc)
