"""Real storage endpoints for the tests: moto's S3 server and the GCS emulator,
each started once per session on 127.0.0.1 (a free port) and stopped at the end,
failures included; plus helpers that copy a local lake folder (dot files too)
into a bucket of either."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from http import HTTPStatus
from pathlib import Path

import pytest

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Keep a developer's ~/.aws out of the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def lake_files(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(key, path) of every file under `folder`, keys with "/" separators."""
    root = Path(folder)
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())


def _key(prefix: str, rel: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


def s3_client(endpoint: str):
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)


def upload_folder_to_s3(endpoint: str, bucket: str, folder: str | os.PathLike, prefix: str = "") -> list[str]:
    """Create `bucket` if needed and copy `folder` into it under `prefix`; the keys written."""
    from botocore.exceptions import ClientError

    s3 = s3_client(endpoint)
    try:
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        keys = []
        for rel, path in lake_files(folder):
            keys.append(_key(prefix, rel))
            s3.put_object(Bucket=bucket, Key=keys[-1], Body=path.read_bytes())
        return keys
    finally:
        s3.close()


def gcs_client(host: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": f"http://{host}"}
    )


def upload_folder_to_gcs(host: str, bucket: str, folder: str | os.PathLike, prefix: str = "") -> list[str]:
    """Create `bucket` on the emulator at host:port if needed and copy `folder` into it under `prefix`."""
    from google.api_core.exceptions import Conflict

    client = gcs_client(host)
    try:
        try:
            b = client.create_bucket(bucket)
        except Conflict:
            b = client.bucket(bucket)
        keys = []
        for rel, path in lake_files(folder):
            keys.append(_key(prefix, rel))
            b.blob(keys[-1]).upload_from_filename(str(path))
        return keys
    finally:
        client.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server in a thread; yields its endpoint URL, with dummy AWS
    credentials in the environment for the clients of the session."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name in _AWS_UNSET:
            mp.delenv(name, raising=False)
        for name, value in DUMMY_AWS_ENV.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def _with_object_dates(download):
    """The emulator's download handler, answering with Last-Modified and ETag as
    real GCS does (obstore refuses an object answer without Last-Modified),
    and 416 for a range of an empty object."""
    from email.utils import formatdate

    from gcp_storage_emulator.exceptions import NotFound

    def handler(request, response, storage, *args, **kwargs):
        if request.get_header("range", None):
            try:
                empty = not storage.get_file(request.params["bucket_name"], request.params["object_id"])
            except NotFound:
                empty = False  # the download says 404
            if empty:  # as GCS answers; the emulator would send "Content-Range: bytes 0--1/0"
                response.status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
                return
        download(request, response, storage, *args, **kwargs)
        if response.status < 300:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            stamp = datetime.fromisoformat(obj["updated"].replace("Z", "+00:00")).timestamp()
            response["Last-Modified"] = formatdate(stamp, usegmt=True)
            response["ETag"] = '"' + obj["md5Hash"] + '"'

    return handler


def _shim_emulator_downloads() -> None:
    """Two gaps of the emulator's XML-API object route (``/BUCKET/NAME``), the
    one obstore reads through: dates in the answer, and a path that escapes
    more than it must (real GCS decodes ``%2D`` in a bucket name; the
    emulator's route patterns do not)."""
    from urllib.parse import unquote

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    if getattr(server, "_lake_shim", False):
        return
    server._lake_shim = True
    for _, methods in server.HANDLERS:
        for method, handler in methods.items():
            if handler is objects.download:
                methods[method] = _with_object_dates(handler)
    json_api = ("/storage/", "/upload/", "/download/", "/batch/", "/b/")
    plain_path = server.Request.path

    def path(self):
        raw = plain_path.fget(self)
        return raw if raw.startswith(json_api) else unquote(raw)

    server.Request.path = property(path)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator in a thread, in memory; yields "127.0.0.1:PORT".
    Use `gcs_env` to point the GCS clients of a test at it. Its object downloads
    carry the dates real GCS sends (the one shim: see _with_object_dates)."""
    from gcp_storage_emulator.server import create_server

    _shim_emulator_downloads()
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()  # returns once its HTTP server is bound
    # The emulator has no accessor for the port it bound: its HTTP server's address says.
    port = server._api._httpd.server_address[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def gcs_env(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator's host:port, with STORAGE_EMULATOR_HOST set for this test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_emulator}")
    return gcs_emulator
