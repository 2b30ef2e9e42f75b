"""Async object storage behind one small interface: a local folder (FS), S3 or
any S3-compatible endpoint, and GCS. Keys are relative to the lake root.

Each Storage owns one bounded thread pool and one client, shared by all streams
of the lake; every call that may block runs in that pool under an asyncio
deadline, so a slow or hung backend costs a StorageError, never a stalled event
loop. (A folder's small objects already in the page cache are read on the loop
with a read that cannot block: see FolderStorage.)"""

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

from ..errors import ObjectNotFound, StorageConfigError, StorageError

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

    def __init__(self, description: str, timeout: float, max_inflight: int) -> None:
        self.description = description
        self.timeout = timeout
        self.stats: dict[str, int] = {"get": 0, "get_bytes": 0, "get_inline": 0, "list": 0, "errors": 0, "not_found": 0}
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

    def _close_client(self) -> None:  # noqa: B027 - optional hook: most clients hold nothing to close
        pass

    async def _call(self, what: str, budget: float, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError(f"{self.description} is closed")
        budget += _SLACK
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        try:
            return await asyncio.wait_for(fut, budget)
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
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None  # missing or unreadable: the pool's read says which
        try:
            st = os.fstat(fd)
            size = st.st_size
            if not stat.S_ISREG(st.st_mode) or size > self.INLINE_MAX_BYTES:
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

    def _get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
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


class S3Storage(Storage):
    """S3 or an S3-compatible endpoint, through one boto3 client."""

    kind = "S3"
    # Codes that mean the configuration is wrong, not that the call was unlucky.
    _CONFIG_CODES = {
        "NoSuchBucket",
        "404",
        "AccessDenied",
        "403",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "PermanentRedirect",
        "301",
        "AuthorizationHeaderMalformed",
    }

    def __init__(
        self,
        bucket: str,
        prefix: str,
        region: str | None,
        endpoint: str | None,
        force_path_style: bool,
        timeout: float,
        max_inflight: int,
    ) -> None:
        import boto3
        import botocore.config
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError

        self._ClientError = ClientError
        self._transient = (BotoCoreError, HTTPError, OSError)
        self._bucket, self._root = bucket, _root(prefix)
        super().__init__(f"s3://{bucket}/{self._root}" + (f" at {endpoint}" if endpoint else ""), timeout, max_inflight)
        config = botocore.config.Config(
            max_pool_connections=max_inflight,
            connect_timeout=timeout,
            read_timeout=timeout,
            # One attempt: callers own the retry policy. (botocore's "max_attempts"
            # counts retries, so {"max_attempts": 1} would mean two attempts.)
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if force_path_style else "auto"},
            region_name=region,
        )
        try:
            self._client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        except (BotoCoreError, ValueError) as e:
            self._pool.shutdown(wait=False)
            raise StorageConfigError(f"{self.description}: {e}") from e

    def _fail(self, what: str, e: Exception) -> StorageError:
        return StorageError(f"{self.description}: {what}: {type(e).__name__}: {e}")

    def _get(self, key: str) -> bytes:
        try:
            resp = self._client.get_object(Bucket=self._bucket, Key=self._root + key)
            with resp["Body"] as body:
                data = body.read()  # botocore also checks the length; this is the belt
        except self._ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"{self.description}: no object {key!r}") from None
            raise self._fail(f"get {key!r}", e) from e
        except self._transient as e:
            raise self._fail(f"get {key!r}", e) from e
        expected = resp.get("ContentLength")
        if expected is not None and len(data) != expected:
            raise StorageError(f"{self.description}: get {key!r}: truncated body, {len(data)} of {expected} bytes")
        return data

    def _list(self, prefix: str, start_after: str | None, limit: int) -> list[str]:
        n = len(self._root)
        after = self._root + start_after if start_after is not None else None
        out: list[str] = []
        try:
            while len(out) < limit:
                kw: dict[str, Any] = {"StartAfter": after} if after is not None else {}
                resp = self._client.list_objects_v2(
                    Bucket=self._bucket, Prefix=self._root + prefix, MaxKeys=min(_PAGE, limit - len(out)), **kw
                )
                keys = [o["Key"] for o in resp.get("Contents", ())]
                # "folder/" marker objects have no counterpart in a folder lake.
                out += [k[n:] for k in keys if not k.endswith("/")]
                if not keys or not resp.get("IsTruncated"):
                    break
                after = keys[-1]  # paging by StartAfter works on every S3 look-alike
        except (self._ClientError, *self._transient) as e:
            raise self._fail(f"list {prefix!r}", e) from e
        return out[:limit]

    def _check(self) -> None:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        try:
            self._client.list_objects_v2(Bucket=self._bucket, Prefix=self._root, MaxKeys=1)
        except self._ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in self._CONFIG_CODES:
                raise StorageConfigError(f"{self.description}: {code}: {e}") from e
            raise self._fail("check", e) from e
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise StorageConfigError(f"{self.description}: {e}") from e
        except self._transient as e:
            raise self._fail("check", e) from e

    def _close_client(self) -> None:
        self._client.close()


class GCSStorage(Storage):
    """Google Cloud Storage (or the emulator named by STORAGE_EMULATOR_HOST)."""

    kind = "GCS"

    def __init__(self, bucket: str, prefix: str, endpoint: str | None, timeout: float, max_inflight: int) -> None:
        import requests
        from google.api_core import exceptions as api_exc
        from google.auth import exceptions as auth_exc
        from google.cloud import storage
        from google.cloud.storage.exceptions import DataCorruption

        self._NotFound, self._Forbidden = api_exc.NotFound, (api_exc.Forbidden, api_exc.Unauthorized)
        self._transient = (
            api_exc.GoogleAPIError,
            requests.RequestException,
            auth_exc.GoogleAuthError,
            DataCorruption,
            OSError,
        )
        self._bucket_name, self._root = bucket, _root(prefix)
        super().__init__(f"gs://{bucket}/{self._root}" + (f" at {endpoint}" if endpoint else ""), timeout, max_inflight)
        kw: dict[str, Any] = {"client_options": {"api_endpoint": endpoint}} if endpoint else {}
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            kw["project"] = os.environ.get("GOOGLE_CLOUD_PROJECT") or "test"  # anonymous credentials follow
        try:
            self._client = storage.Client(**kw)
        except (auth_exc.GoogleAuthError, ValueError) as e:
            self._pool.shutdown(wait=False)
            raise StorageConfigError(f"{self.description}: {e}") from e
        # requests keeps 10 connections per host by default; match the pool instead.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=max_inflight)
        for scheme in ("https://", "http://"):
            self._client._http.mount(scheme, adapter)
        self._bucket = self._client.bucket(bucket)

    def _fail(self, what: str, e: Exception) -> StorageError:
        return StorageError(f"{self.description}: {what}: {type(e).__name__}: {e}")

    def _get(self, key: str) -> bytes:
        # retry=None: one attempt, like S3; md5 plus urllib3's Content-Length check
        # turn a truncated body into an error. Also a missing bucket reads as 404.
        try:
            return self._bucket.blob(self._root + key).download_as_bytes(
                timeout=self.timeout, checksum="md5", retry=None
            )
        except self._NotFound:
            raise ObjectNotFound(f"{self.description}: no object {key!r}") from None
        except self._transient as e:
            raise self._fail(f"get {key!r}", e) from e

    def _list(self, prefix: str, start_after: str | None, limit: int) -> list[str]:
        n = len(self._root)
        after = self._root + start_after if start_after is not None else None
        out: list[str] = []
        try:
            # start_offset is inclusive, hence one extra result. The gcp-storage-emulator
            # ignores start_offset, max_results and paging, so filter and cut here too.
            blobs = self._client.list_blobs(
                self._bucket,
                prefix=self._root + prefix,
                start_offset=after,
                fields="items(name),nextPageToken",
                max_results=limit + (after is not None),
                timeout=self.timeout,
                retry=None,
            )
            for blob in blobs:
                name = blob.name
                if (after is None or name > after) and not name.endswith("/"):
                    out.append(name[n:])
                    if len(out) >= limit:
                        break
        except self._transient as e:
            raise self._fail(f"list {prefix!r}", e) from e
        return out

    def _check(self) -> None:
        # Listing needs only storage.objects.list, which reading needs anyway;
        # bucket metadata would need storage.buckets.get, which readers often lack.
        try:
            next(
                iter(
                    self._client.list_blobs(
                        self._bucket,
                        prefix=self._root,
                        max_results=1,
                        fields="items(name)",
                        timeout=self.timeout,
                        retry=None,
                    )
                ),
                None,
            )
        except (self._NotFound, *self._Forbidden) as e:
            raise StorageConfigError(f"{self.description}: {type(e).__name__}: {e}") from e
        except self._transient as e:
            raise self._fail("check", e) from e

    def _close_client(self) -> None:
        self._client.close()


def open_storage(
    kind: str,
    *,
    bucket: str,
    prefix: str,
    region: str | None,
    endpoint: str | None,
    force_path_style: bool,
    timeout: float,
    max_inflight: int,
) -> Storage:
    """One Storage per lake, shared by all its streams. `kind` is FS, S3 or GCS.
    Nothing is asked of the bucket until the first call; check() asks first."""
    kind = kind.upper()
    if not bucket:
        raise StorageConfigError(f"{kind} storage needs a bucket (or folder)")
    if kind == "FS":
        return FolderStorage(bucket, prefix, timeout, max_inflight)
    if kind == "S3":
        return S3Storage(bucket, prefix, region, endpoint, force_path_style, timeout, max_inflight)
    if kind == "GCS":
        return GCSStorage(bucket, prefix, endpoint, timeout, max_inflight)
    raise StorageConfigError(f"unknown storage type {kind!r}: expected FS, S3 or GCS")
