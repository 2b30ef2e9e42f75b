"""Object stores over the network: S3 (and S3-compatible endpoints) and GCS.

Reads, the hot path of a backfill, go through obstore (the Rust
``object_store`` crate): requests are signed and sent on its own runtime's
threads without the GIL, many in flight on pooled connections, at about a
third of boto3's or google-cloud-storage's CPU per request (docs/benchmarks.md).
Cancelling a read drops its request and closes its connection.

Listing and the start-up check stay on boto3 and google-cloud-storage, in the
storage's thread pool: they run a few times per stream, and obstore's listing
matches whole path segments without a page size, which cannot keep the
listing contract (a string prefix, ``start_after``, ``limit``). Credentials
come from those libraries too (boto3's chain, google-auth's application
default credentials), handed to obstore through its credential providers.

Errors are mapped here, one place per backend: a missing key is
ObjectNotFound ("not there yet"); a missing bucket, 401 and 403 are
StorageConfigError at the start-up check and StorageError on a read; 5xx,
timeouts, resets and short bodies are StorageError. The clients' own retries
are off: the lake's retry policy is the only one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..errors import CorruptObject, ObjectNotFound, StorageConfigError, StorageError
from .storage import _PAGE, Storage, _root

# Added to the request timeout for the asyncio deadline, which catches what
# the client's own timeout does not (a credential refresh that hangs).
_SLACK = 0.5
# The end of a range no object reaches: stores answer such a range with the whole object.
_WHOLE = 1 << 62
# Threads for listings and checks: a handful run at once (the oldest-ledger search lists 7).
_LISTING_THREADS = 8


def _obstore_options(timeout: float, max_inflight: int, endpoint: str | None) -> Any:
    return {
        "client_options": {
            "timeout": timedelta(seconds=timeout),
            "connect_timeout": timedelta(seconds=min(timeout, 10.0)),
            "pool_max_idle_per_host": str(max_inflight),
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
        },
        # One attempt: the lake owns the retry policy.
        "retry_config": {
            "max_retries": 0,
            "backoff": {},
            "retry_timeout": timedelta(seconds=timeout),
        },
    }


class RemoteStorage(Storage):
    """Reads through an obstore store; listing and checks through a blocking client."""

    # Response codes in an error body that mean the bucket, not the key, is missing.
    _NO_BUCKET: tuple[str, ...] = ("<Code>NoSuchBucket</Code>", "The specified bucket does not exist")
    _root: str  # the lake's prefix in the bucket ("" or ending in "/"), set by the backend

    def __init__(self, description: str, timeout: float, max_inflight: int) -> None:
        super().__init__(description, timeout, min(max_inflight, _LISTING_THREADS))
        self._store: Any = None  # set by the backend

    def descend(self, path: str) -> None:
        old = self._root
        self._root = f"{old}{path}/"
        # "scheme://bucket/" + the root + (" at endpoint"): the root part replaced.
        cut = self.description.index("/", self.description.index("://") + 3) + 1
        head, tail = self.description[:cut], self.description[cut:]
        self.description = head + self._root + tail[len(old) :]

    async def get(self, key: str, on_size: Callable[[int], None] | None = None) -> bytes:
        """Without ``on_size``, one request for a range that covers any object:
        one round trip through obstore's runtime instead of two (headers, then
        body), about half the CPU per small object (docs/benchmarks.md). With
        it, the size is reported from the response headers, before the body.

        An object stored larger than ``max_object_bytes`` is refused unread:
        from its size in the headers, or (one request) by asking for one byte
        past the cap and refusing when it came back; the buffer is dropped
        before the error is raised, so no traceback holds it."""
        if self._closed:
            raise RuntimeError(f"{self.description} is closed")
        import obstore

        self.stats["get"] += 1
        path = self._root + key
        cap = self.max_object_bytes
        try:
            async with asyncio.timeout(self.timeout + _SLACK):
                if on_size is None:
                    data = await self._whole(path, _WHOLE if cap is None else cap + 1)
                    size = len(data)
                    if cap is not None and size > cap:
                        del data
                        raise self._too_large(key, f"over {cap}")
                else:
                    resp = await obstore.get_async(self._store, path)
                    size = resp.meta["size"]
                    if cap is not None and size > cap:
                        del resp  # dropping the response closes its connection: the body is not read
                        raise self._too_large(key, str(size))
                    on_size(size)
                    data = await resp.bytes_async()
        except CorruptObject:
            raise
        except TimeoutError:
            self.stats["errors"] += 1
            raise StorageError(f"{self.description}: get {key!r}: no answer within {self.timeout:.1f}s") from None
        except Exception as exc:
            raise self._mapped(f"get {key!r}", exc) from exc
        if len(data) != size:
            self.stats["errors"] += 1
            got = len(data)
            del data
            raise StorageError(f"{self.description}: get {key!r}: truncated body, {got} of {size} bytes")
        self.stats["get_bytes"] += size
        # obstore.Bytes, not bytes: a read-only buffer the core decodes in place (no copy).
        return data

    async def head(self, key: str) -> None:
        """A HEAD request through obstore: the object exists, or ObjectNotFound."""
        if self._closed:
            raise RuntimeError(f"{self.description} is closed")
        import obstore

        self.stats["head"] += 1
        try:
            async with asyncio.timeout(self.timeout + _SLACK):
                await obstore.head_async(self._store, self._root + key)
        except TimeoutError:
            self.stats["errors"] += 1
            raise StorageError(f"{self.description}: head {key!r}: no answer within {self.timeout:.1f}s") from None
        except Exception as exc:
            raise self._mapped(f"head {key!r}", exc) from exc

    def _too_large(self, key: str, size: str) -> CorruptObject:
        self.stats["refused"] = self.stats.get("refused", 0) + 1
        return CorruptObject(
            f"{self.description}: {key!r} holds {size} bytes, over MAX_OBJECT_BYTES={self.max_object_bytes}: "
            "refused unread"
        )

    async def _whole(self, path: str, end: int = _WHOLE) -> Any:
        import obstore
        from obstore.exceptions import GenericError

        try:
            return await obstore.get_range_async(self._store, path, start=0, end=end)
        except GenericError as exc:
            if " 416 " not in str(exc):
                raise
        # No range fits an empty object (416): ask for it whole.
        resp = await obstore.get_async(self._store, path)
        return await resp.bytes_async()

    def _fail(self, what: str, e: Exception) -> StorageError:
        return StorageError(f"{self.description}: {what}: {type(e).__name__}: {e}")

    def _mapped(self, what: str, exc: Exception) -> Exception:
        """The error model's error for what obstore raised."""
        from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError

        message = str(exc)
        if isinstance(exc, FileNotFoundError):
            if any(m in message for m in self._NO_BUCKET):
                self.stats["errors"] += 1
                return StorageError(f"{self.description}: {what}: the bucket does not exist")
            self.stats["not_found"] += 1
            return ObjectNotFound(f"{self.description}: no object {what.partition(' ')[2]}")
        self.stats["errors"] += 1
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            return StorageError(f"{self.description}: {what}: access denied: {_first_line(message)}")
        if isinstance(exc, BaseError | OSError):
            return StorageError(f"{self.description}: {what}: {_first_line(message)}")
        return exc  # not a storage failure: a bug, raised as is

    def _get(self, key: str) -> bytes:  # reads never use the pool
        raise NotImplementedError

    async def close(self) -> None:
        await super().close()
        # Dropped now, on this thread: the store holds Python objects (the
        # credential provider) that its runtime's threads must not be left to
        # release while the interpreter shuts down.
        self._store = None


def _first_line(message: str) -> str:
    """obstore's messages carry a multi-line debug dump after the first line."""
    return message.split("\n", 1)[0].strip()


class S3Storage(RemoteStorage):
    """S3 or an S3-compatible endpoint: reads through obstore, listing through boto3."""

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
        anonymous: bool = False,
    ) -> None:
        """``anonymous``: every request unsigned, reads and listings alike (a
        public bucket); no credentials are looked for."""
        import boto3
        import botocore
        import botocore.config
        from botocore.exceptions import BotoCoreError, ClientError
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.store import S3Store
        from urllib3.exceptions import HTTPError

        self._ClientError = ClientError
        self._transient = (BotoCoreError, HTTPError, OSError)
        self._bucket, self._root = bucket, _root(prefix)
        super().__init__(f"s3://{bucket}/{self._root}" + (f" at {endpoint}" if endpoint else ""), timeout, max_inflight)
        session = boto3.session.Session()
        config = botocore.config.Config(
            max_pool_connections=_LISTING_THREADS,
            connect_timeout=timeout,
            read_timeout=timeout,
            # One attempt: callers own the retry policy. (botocore's "max_attempts"
            # counts retries, so {"max_attempts": 1} would mean two attempts.)
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if force_path_style else "auto"},
            region_name=region,
            **({"signature_version": botocore.UNSIGNED} if anonymous else {}),
        )
        try:
            self._client = session.client("s3", endpoint_url=endpoint, config=config)
            credentials = None if anonymous else Boto3CredentialProvider(session)
        except (BotoCoreError, ValueError) as e:
            self._pool.shutdown(wait=False)
            why = "no AWS credentials were found" if "get_credentials" in str(e) else str(e)
            raise StorageConfigError(f"{self.description}: {why}") from e
        self._store = S3Store(
            bucket,
            region=self._client.meta.region_name or "us-east-1",
            endpoint=endpoint,
            # A custom endpoint (MinIO, moto, R2...) is addressed by path, as most need.
            virtual_hosted_style_request=not (force_path_style or endpoint),
            credential_provider=credentials,
            skip_signature=anonymous,
            **_obstore_options(timeout, max_inflight, endpoint),
        )

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


class GCSStorage(RemoteStorage):
    """Google Cloud Storage (or the endpoint named by STORAGE_EMULATOR_HOST):
    reads through obstore, listing through google-cloud-storage."""

    kind = "GCS"
    _NO_BUCKET = (*RemoteStorage._NO_BUCKET, "The specified bucket does not exist.")

    def __init__(self, bucket: str, prefix: str, endpoint: str | None, timeout: float, max_inflight: int) -> None:
        import requests
        from google.api_core import exceptions as api_exc
        from google.auth import exceptions as auth_exc
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from google.cloud.storage.exceptions import DataCorruption
        from obstore.auth.google import GoogleCredentialProvider
        from obstore.store import GCSStore

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
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            kw["project"] = os.environ.get("GOOGLE_CLOUD_PROJECT") or "test"  # anonymous credentials follow
        try:
            self._client = storage.Client(**kw)
        except (auth_exc.GoogleAuthError, ValueError) as e:
            self._pool.shutdown(wait=False)
            raise StorageConfigError(f"{self.description}: {e}") from e
        # requests keeps 10 connections per host by default; match the listing threads.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=_LISTING_THREADS)
        for scheme in ("https://", "http://"):
            self._client._http.mount(scheme, adapter)
        self._bucket = self._client.bucket(bucket)
        base_url = endpoint or emulator or None
        credentials = self._client._credentials
        anonymous = isinstance(credentials, AnonymousCredentials)
        self._store = GCSStore(
            bucket,
            config={"base_url": base_url.rstrip("/")} if base_url else None,
            skip_signature=anonymous,
            credential_provider=None if anonymous else GoogleCredentialProvider(credentials),
            **_obstore_options(timeout, max_inflight, base_url),
        )

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
