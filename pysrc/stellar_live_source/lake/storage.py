"""Async object storage behind one small interface: a local folder (FS) here,
S3 (or any S3-compatible endpoint) and GCS in ``remote``. Keys are relative to
the lake root.

Each Storage is shared by all streams of the lake and owns one bounded thread
pool; every call that may block runs in that pool under an asyncio deadline,
so a slow or hung backend costs a StorageError, never a stalled event loop.
(A folder's small objects already in the page cache are read on the loop with
a read that cannot block: see FolderStorage. Remote reads are async through
obstore and use no thread of the pool.)"""

from __future__ import annotations

import abc
import asyncio
import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core.keys import EXTENSIONS
from ..errors import CorruptObject, ObjectNotFound, StorageConfigError, StorageError

__all__ = ["Storage", "open_storage"]

log = logging.getLogger("stellar_live_source.storage")

# Added to the client-level timeout for the asyncio deadline: the client should
# give up first, with a better message; the deadline catches hung threads.
_SLACK = 0.5
# Keys per list request (the S3 and GCS maximum).
_PAGE = 1000
# preadv2's flag to fail with EAGAIN rather than wait for the disk (Linux 4.14+).
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None
# Names each storage's pool threads apart (threads are counted by name).
_instances = itertools.count(1)


def _root(prefix: str) -> str:
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


class Storage(abc.ABC):
    kind: str
    description: str
    # Objects stored larger than this are refused before they are read (set by the lake).
    max_object_bytes: int | None = None
    # Whether list() works: an HTTP lake cannot list, so the lake finds its ends with head().
    can_list: bool = True

    def __init__(self, description: str, timeout: float, max_inflight: int) -> None:
        self.description = description
        self.timeout = timeout
        self.stats: dict[str, int] = {
            "get": 0,
            "get_bytes": 0,
            "get_inline": 0,
            "list": 0,
            "head": 0,
            "errors": 0,
            "not_found": 0,
        }
        self._thread_name = f"lake-{self.kind.lower()}-{next(_instances)}"
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix=self._thread_name)
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads the pool has started (started on demand, they stay; at most max_inflight)."""
        return sum(1 for t in threading.enumerate() if t.name.startswith(self._thread_name + "_"))

    # The blocking halves, run in the pool. They raise only the errors above.
    @abc.abstractmethod
    def _get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _list(self, prefix: str, start_after: str | None, limit: int) -> list[str]: ...

    @abc.abstractmethod
    def _check(self) -> None: ...

    @abc.abstractmethod
    def descend(self, path: str) -> None:
        """Root the storage ``path`` deeper (a plain relative path, checked by
        the caller): where a lake manifest's ``ledgersPath`` puts the objects."""

    def _close_client(self) -> None:  # noqa: B027 - optional hook: most clients hold nothing to close
        pass

    async def _call(self, what: str, budget: float, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError(f"{self.description} is closed")
        budget += _SLACK
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
            # a cancellation that lands as the call finishes, and a cancelled
            # caller (a stopping app's background task) would go on running.
            async with asyncio.timeout(budget):
                return await fut
        except ObjectNotFound:
            self.stats["not_found"] += 1
            raise
        except (StorageError, StorageConfigError):
            self.stats["errors"] += 1
            raise
        except TimeoutError:
            if not fut.cancelled():  # a TimeoutError the worker let through: not ours
                raise
            self.stats["errors"] += 1
            # The thread may still be blocked; the client timeouts will end it.
            raise StorageError(f"{self.description}: {what}: no answer within {budget:.1f}s") from None

    async def get(self, key: str, on_size: Callable[[int], None] | None = None) -> bytes:
        """The whole object; raises ObjectNotFound or StorageError. ``on_size``,
        if given, is called once with the object's size as soon as it is known
        (before the body arrives, where the backend can tell)."""
        self.stats["get"] += 1
        data = None if self._closed else self._get_now(key)
        if data is None:
            data = await self._call(f"get {key!r}", self.timeout, self._get, key)
            if on_size is not None:
                on_size(len(data))
        else:
            if on_size is not None:
                on_size(len(data))
            self.stats["get_inline"] += 1
        self.stats["get_bytes"] += len(data)
        return data

    def _get_now(self, key: str) -> bytes | None:
        """The object if it can be had on the event loop without blocking, else None."""
        return None

    async def head(self, key: str) -> None:
        """Return if object ``key`` exists (its body unread); raises ObjectNotFound or StorageError."""
        self.stats["head"] += 1
        await self._call(f"head {key!r}", self.timeout, self._head, key)

    def _head(self, key: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no existence check")

    async def list(self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        """Keys under `prefix`, ascending, strictly after `start_after`, at most `limit`."""
        self.stats["list"] += 1
        if limit <= 0:
            return []
        pages = -(-limit // _PAGE)  # each page request has its own client timeout
        return await self._call(f"list {prefix!r}", self.timeout * pages, self._list, prefix, start_after, limit)

    async def check(self) -> None:
        """Raise StorageConfigError unless the bucket/folder exists and can be listed
        (StorageError if the endpoint could not be asked)."""
        await self._call("check", self.timeout, self._check)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_client()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class FolderStorage(Storage):
    """A lake in a local folder; `bucket` is the folder, keys use "/".

    An object the page cache already holds whole is read on the event loop
    with RWF_NOWAIT, which fails instead of blocking: handing a small read to
    the pool costs several times the read itself (thread wake-ups and GIL
    handoffs; docs/benchmarks.md). Anything else (not cached, large, no RWF_NOWAIT) goes to the pool. A
    folder whose open() itself is slow (a network or FUSE mount) is read only
    in the pool after a few slow inline reads (not the first: a preempted or
    CPU-throttled process makes any read look slow now and then)."""

    kind = "FS"
    INLINE_MAX_BYTES = 1 << 20  # a larger copy would hold the event loop too long
    INLINE_SLOW = 0.005  # seconds: an inline read slower than this is slow
    INLINE_SLOW_READS = 3  # this many slow inline reads stop inline reads

    def __init__(self, folder: str, prefix: str, timeout: float, max_inflight: int) -> None:
        if not folder:
            raise StorageConfigError("FS storage needs a folder path")
        self._folder = os.path.abspath(folder)
        root = _root(prefix)
        self._root = os.path.join(self._folder, root) if root else self._folder
        super().__init__(self._folder.rstrip("/") + "/" + root, timeout, max_inflight)
        self.inline = _RWF_NOWAIT is not None
        self._slow_reads = 0
        self._real = os.path.realpath(self._folder)  # links are followed only to within it

    def _open(self, key: str, path: str) -> tuple[int, os.stat_result]:
        """An open descriptor of the lake's regular file at ``path`` and its
        stat. Never blocks on what the file is: a FIFO, a device or a
        directory is refused from its stat before any open, and the open
        itself is non-blocking (a FIFO swapped in meanwhile cannot hold it).
        A link is followed only to a file inside the lake; a file larger
        than ``max_object_bytes`` is refused unread. Raises ObjectNotFound,
        CorruptObject (bad data: never retried) or OSError."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{self.description}: no object {key!r}") from None
        self._refuse(key, st)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            self._refuse(key, st)
            real = _fd_path(fd) or os.path.realpath(path)
            if not self._inside(real):
                raise CorruptObject(f"{self.description}: {key!r} is a link to {real}, outside the lake: refused")
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def descend(self, path: str) -> None:
        self._root = os.path.join(self._root, *path.split("/"))
        self.description = self._root.rstrip("/") + "/"

    def _inside(self, real: str) -> bool:
        return real == self._real or real.startswith(self._real.rstrip("/") + "/")

    def _refuse(self, key: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode) and not key.endswith(tuple(EXTENSIONS)):
            # A folder of the lake: no object there, as on S3 or GCS.
            raise ObjectNotFound(f"{self.description}: no object {key!r} (a folder)")
        if not stat.S_ISREG(st.st_mode):
            what = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise CorruptObject(f"{self.description}: {key!r} is {what}, not an object: refused unread")
        cap = self.max_object_bytes
        if cap is not None and st.st_size > cap:
            raise CorruptObject(
                f"{self.description}: {key!r} holds {st.st_size} bytes, over MAX_OBJECT_BYTES={cap}: refused unread"
            )

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a valid lake key for a folder: {key!r}")
        return os.path.join(self._root, *parts)

    def _get_now(self, key: str) -> bytes | None:
        """The object if it is a small file wholly in the page cache, else None."""
        if not self.inline or _RWF_NOWAIT is None:  # (inline is False without RWF_NOWAIT)
            return None
        path = self._path(key)
        began = time.perf_counter()
        try:
            fd, st = self._open(key, path)
        except (OSError, ObjectNotFound, CorruptObject):
            return None  # missing, unreadable or refused: the pool's read says which
        try:
            size = st.st_size
            if size > self.INLINE_MAX_BYTES:
                return None
            buf = bytearray(size + 1)  # one byte over: a file that grew is read by the pool
            try:
                n = os.preadv(fd, [buf], 0, _RWF_NOWAIT)
            except BlockingIOError:
                return None  # not all of it is cached
            except OSError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # this filesystem cannot read without blocking
                    self.inline = False
                    log.info("%s: reads go to the pool: %s", self.description, e)
                return None
            return bytes(memoryview(buf)[:n]) if n == size else None
        finally:
            os.close(fd)
            if self.inline and time.perf_counter() - began > self.INLINE_SLOW:
                self._slow_reads += 1
                if self._slow_reads >= self.INLINE_SLOW_READS:
                    self.inline = False
                    log.info(
                        "%s: %d inline reads took over %.0f ms; reads go to the pool",
                        self.description,
                        self._slow_reads,
                        self.INLINE_SLOW * 1e3,
                    )

    def _head(self, key: str) -> None:
        try:
            os.close(self._open(key, self._path(key))[0])
        except OSError as e:
            raise StorageError(f"{self.description}: head {key!r}: {e}") from e

    def _get(self, key: str) -> bytes:
        try:
            fd, _ = self._open(key, self._path(key))
            with open(fd, "rb") as f:
                cap = self.max_object_bytes
                data = f.read() if cap is None else f.read(cap + 1)
            if cap is not None and len(data) > cap:  # grown since its stat
                del data
                raise CorruptObject(f"{self.description}: {key!r} holds over MAX_OBJECT_BYTES={cap} bytes: refused")
            return data
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{self.description}: no object {key!r}") from None
        except OSError as e:
            raise StorageError(f"{self.description}: get {key!r}: {e}") from e

    def _list(self, prefix: str, start_after: str | None, limit: int) -> list[str]:
        # A prefix "a/b/c" walks only folder a/b, keeping its entries named c*.
        folder, _, name_prefix = prefix.rpartition("/")
        if folder:
            self._path(folder)  # validates
        out: list[str] = []
        try:
            for key in self._walk(folder + "/" if folder else "", name_prefix, start_after):
                out.append(key)
                if len(out) >= limit:
                    break
        except OSError as e:
            raise StorageError(f"{self.description}: list {prefix!r}: {e}") from e
        if not out and not os.path.isdir(self._folder):
            raise StorageError(f"{self.description}: list {prefix!r}: no folder {self._folder}")
        return out

    def _walk(self, base: str, name_prefix: str, start_after: str | None) -> Iterator[str]:
        """File keys under the folder `base` ("" or ending in "/"), in S3 key order.

        Sorting each folder on name + "/" for folders, name for files, is the
        global key order: "a.b" < "a/x" < "a0" because "." < "/" < "0". Folders
        wholly at or before `start_after` are skipped unread."""
        entries = []
        try:
            with os.scandir(os.path.join(self._root, base) if base else self._root) as it:
                for e in it:
                    if not e.name.startswith(name_prefix):
                        continue
                    is_dir = e.is_dir()
                    if is_dir and e.is_symlink() and not self._inside(os.path.realpath(e.path)):
                        continue  # a folder linked from outside the lake is not the lake's
                    key = base + e.name + ("/" if is_dir else "")
                    if start_after is not None and key <= start_after and not (is_dir and start_after.startswith(key)):
                        continue
                    entries.append((key, is_dir))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort()
        for key, is_dir in entries:
            if is_dir:
                yield from self._walk(key, "", start_after)
            else:
                yield key

    def _check(self) -> None:
        try:
            with os.scandir(self._folder):
                pass
        except OSError as e:
            raise StorageConfigError(f"{self.description}: the lake folder can't be read: {e}") from e


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


def _fd_path(fd: int) -> str | None:
    """The path an open descriptor names (Linux, through /proc), else None."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def open_storage(
    kind: str,
    *,
    bucket: str,
    prefix: str,
    region: str | None,
    endpoint: str | None,
    force_path_style: bool,
    anonymous: bool,
    timeout: float,
    max_inflight: int,
    base_url: str = "",
    headers: tuple[tuple[str, str], ...] = (),
) -> Storage:
    """One Storage per lake, shared by all its streams. `kind` is FS, S3, GCS
    or HTTP (``base_url`` and ``headers``; no bucket). Nothing is asked of
    the bucket until the first call; check() asks first."""
    kind = kind.upper()
    if kind == "HTTP":
        from .http import HTTPStorage

        return HTTPStorage(base_url, prefix, headers, timeout, max_inflight)
    if not bucket:
        raise StorageConfigError(f"{kind} storage needs a bucket (or folder)")
    if kind == "FS":
        return FolderStorage(bucket, prefix, timeout, max_inflight)
    from .remote import GCSStorage, S3Storage

    if kind == "S3":
        return S3Storage(bucket, prefix, region, endpoint, force_path_style, timeout, max_inflight, anonymous)
    if kind == "GCS":
        return GCSStorage(bucket, prefix, endpoint, timeout, max_inflight)
    raise StorageConfigError(f"unknown storage type {kind!r}: expected FS, S3, GCS or HTTP")
