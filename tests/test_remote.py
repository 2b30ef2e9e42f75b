"""The remote read path (obstore) against the tests' object server, per backend:
S3 signed with SigV4, GCS with an OAuth token from google-auth's refresh
flow. What each answer of the store becomes in the error model, that the
clients never retry on their own, that a size is known before the body, and
that cancelled reads leave nothing open at the peer."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stellar_live_source.errors import ObjectNotFound, StorageConfigError, StorageError
from stellar_live_source.lake.storage import Storage

from .service_support import storage_for, until
from .support.endpoints import DUMMY_AWS_ENV
from .support.objectserver import ObjectServer

BUCKET = "remote-lake"
TOKEN = "t0ken"
OBJECTS = {f"FFFFFFFF--0-63999/{0xFFFFFFFF - i:08X}--{i}.xdr.zst": os.urandom(1000 + i) for i in range(200)}
KEY = next(iter(OBJECTS))


@pytest.fixture(scope="module")
def server() -> Iterator[ObjectServer]:
    with ObjectServer(auth=f"s3,bearer:{TOKEN}") as s:
        for key, data in OBJECTS.items():
            s.put(BUCKET, key, data)
        yield s


@pytest.fixture(autouse=True)
def clean(server: ObjectServer) -> Iterator[None]:
    yield
    for key in list(server._rules):
        server.rule(key, None)
    server.configure(delay=0.0, fail_rate=0.0, reset_rate=0.0, truncate_rate=0.0)


def google_credentials(folder: Path, token_uri: str) -> Path:
    """A service-account key file whose token refresh (a signed JWT exchanged
    for an access token) asks ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "remote-tests",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "reader@remote-tests.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = folder / "credentials.json"
    path.write_text(json.dumps(info))
    return path


@dataclass
class Backend:
    kind: str
    server: ObjectServer

    def open(self, bucket: str = BUCKET, **kw: object) -> Storage:
        kw.setdefault("max_inflight", 128)
        if self.kind == "S3":
            return storage_for("S3", bucket=bucket, endpoint=self.server.url, force_path_style=True, **kw)
        return storage_for("GCS", bucket=bucket, endpoint=self.server.url, **kw)


@pytest.fixture(params=["S3", "GCS"])
def backend(request, server, tmp_path, monkeypatch) -> Backend:
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google_credentials(tmp_path, server.url + "/token")))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "remote-tests")
    return Backend(request.param, server)


async def test_reads_are_authenticated_exact_and_sized_before_the_body(backend: Backend):
    s = backend.open()
    before = dict(backend.server.stats)
    try:
        await s.check()
        sizes: list[int] = []
        for key, data in list(OBJECTS.items())[:20]:
            got = await s.get(key, on_size=sizes.append)
            assert bytes(got) == data
        assert sizes == [len(d) for d in list(OBJECTS.values())[:20]]
        assert s.stats["get"] == 20 and s.stats["get_bytes"] == sum(sizes) and s.stats["errors"] == 0
    finally:
        await s.close()
    stats = backend.server.stats
    assert stats["refused"] == before.get("refused", 0)  # signed (S3), or with the refreshed token (GCS)
    if backend.kind == "GCS":
        assert stats["token"] > before.get("token", 0)


async def test_a_missing_key_is_not_found_and_a_missing_bucket_is_a_storage_failure(backend: Backend):
    s = backend.open()
    try:
        with pytest.raises(ObjectNotFound):
            await s.get("FFFFFFFF--0-63999/00000000--4294967295.xdr.zst")
        assert s.stats["not_found"] == 1 and s.stats["errors"] == 0
    finally:
        await s.close()
    gone = backend.open(bucket="no-such-bucket")
    try:
        with pytest.raises(StorageConfigError):  # refused at start
            await gone.check()
        with pytest.raises(StorageError, match="bucket does not exist"):  # a failure later, never "not there yet"
            await gone.get(KEY)
    finally:
        await gone.close()


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_fail_the_check_and_every_read(backend: Backend, status: int):
    s = backend.open()
    token, backend.server.auth = backend.server.auth, "bearer:other"  # nothing this client sends is accepted
    try:
        with pytest.raises(StorageConfigError):
            await s.check()
        with pytest.raises(StorageError) as e:
            await s.get(KEY)
        assert not isinstance(e.value, ObjectNotFound)
        backend.server.auth = token
        backend.server.rule(KEY, status)
        with pytest.raises(StorageError, match="access denied"):
            await s.get(KEY)
    finally:
        backend.server.auth = token
        await s.close()


@pytest.mark.parametrize("fault", [500, 503, "reset", "truncate"])
async def test_transient_faults_are_storage_errors_tried_once(backend: Backend, fault):
    s = backend.open()
    backend.server.rule(KEY, fault)
    stats = backend.server.stats
    try:
        before = stats["requests"] - stats["token"]
        with pytest.raises(StorageError) as e:
            await s.get(KEY)
        assert not isinstance(e.value, ObjectNotFound)
        assert stats["requests"] - stats["token"] - before == 1  # the client's own retries are off
        assert s.stats["errors"] == 1
        backend.server.rule(KEY, None)
        assert bytes(await s.get(KEY)) == OBJECTS[KEY]  # the next try, the lake's, reads it
    finally:
        await s.close()


async def test_a_hung_read_meets_the_storage_timeout(backend: Backend):
    s = backend.open(timeout=0.5)
    backend.server.rule(KEY, "hang")
    try:
        with pytest.raises(StorageError, match="no answer|timed out|error sending"):
            await asyncio.wait_for(s.get(KEY), 5)
    finally:
        await s.close()
    await until(lambda: backend.server.inflight == 0, 5)  # the request was dropped, not left open


async def test_cancelled_reads_leave_no_request_task_or_thread_behind(backend: Backend):
    server = backend.server
    keys = list(OBJECTS)[:100]
    for key in keys:
        server.rule(key, "hang")
    s = backend.open()
    threads = threading.active_count()
    aborted = server.stats["aborted"]
    try:
        await s.get(list(OBJECTS)[150])  # a connection pool and its credentials, before counting
        tasks = len(asyncio.all_tasks())
        reads = [asyncio.ensure_future(s.get(k)) for k in keys]
        await until(lambda: server.inflight == 100, 10)
        for r in reads:
            r.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        await until(lambda: server.inflight == 0, 10)
        assert server.stats["aborted"] - aborted == 100  # each request closed at the peer
        assert len(asyncio.all_tasks()) == tasks
        assert threading.active_count() <= threads + 1  # a listing thread at most, never one per read
    finally:
        await s.close()


def test_s3_without_credentials_is_refused_at_start(monkeypatch, server):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask
    with pytest.raises(StorageConfigError, match="no AWS credentials"):
        storage_for("S3", bucket=BUCKET, endpoint=server.url, force_path_style=True)


async def test_anonymous_s3_signs_nothing_and_needs_no_credentials(monkeypatch, tmp_path):
    """S3_ANONYMOUS: a public bucket read and listed with no credentials
    anywhere and no Authorization header on any request; a bucket that
    wants signatures refuses it at the check."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with ObjectServer() as public:  # takes anything
        for key, data in list(OBJECTS.items())[:10]:
            public.put(BUCKET, key, data)
        s = storage_for("S3", bucket=BUCKET, endpoint=public.url, force_path_style=True, anonymous=True)
        try:
            await s.check()
            keys = await s.list("", limit=5)
            assert keys == sorted(list(OBJECTS)[:10])[:5]
            assert bytes(await s.get(KEY)) == OBJECTS[KEY]
            assert bytes(await s.get(KEY, on_size=lambda n: None)) == OBJECTS[KEY]
        finally:
            await s.close()
        assert public.stats["requests"] >= 4 and public.stats["authorized"] == 0
    with ObjectServer(auth="s3") as private:
        private.put(BUCKET, KEY, OBJECTS[KEY])
        s = storage_for("S3", bucket=BUCKET, endpoint=private.url, force_path_style=True, anonymous=True)
        try:
            with pytest.raises(StorageConfigError):
                await s.check()
            with pytest.raises(StorageError, match="access denied"):
                await s.get(KEY)
        finally:
            await s.close()
