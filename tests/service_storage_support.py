"""Lakes of real consecutive ledgers for the service tests against real storage
endpoints, the server environments for each storage type, and checks.

The three consecutive real runs of ../shared/testdata (v0 testnet 1410048-1410367,
v1 997-999, large v2 10048-10077) are packed with ``write_lake`` into one lake
per layout; the runs leave gaps between them, and each stream stays within one
run. Sibling "noise" lakes under neighbouring prefixes check that a lake under
ARCHIVE_PATH sees only its own keys."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from stellar_live_source.tools.pack import ledgers_of, renumber, sequence_of, write_lake

from .conftest import LEDGERS
from .service_support import MAX_OBJECT_BYTES, env_for, index_by_seq, process_env, sha

# name -> (first, last): the consecutive real runs
RUNS = {"v0": (1410048, 1410367), "v1": (997, 999), "v2": (10048, 10077)}
OLDEST, NEWEST = 997, 1410367
LAYOUTS = {"64x10": (64, 10), "1x64000": (1, 64000)}
ARCHIVE_PATH = "lakes/v1"
# Siblings of ARCHIVE_PATH: "lakes/v0/" sorts before it and holds a newer ledger
# (a listing that lost the prefix would call it the newest); "lakes/v10/" shares
# its text and holds an older ledger (a prefix without its "/" would find it oldest).
NOISE = {"lakes/v0": (2_000_000, 2), "lakes/v10": (500, 2)}

AWS = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@functools.cache
def run_ledgers(name: str) -> tuple[bytes, ...]:
    """The run's LedgerCloseMeta XDR in sequence order, checked against the index."""
    if name == "v0":
        files = sorted((LEDGERS / "testnet" / "lighthorizon_1410048-1410367").glob("*.xdr"))
    elif name == "v1":
        files = sorted((LEDGERS / "testnet" / "datastore_testbucket_997-999").rglob("*.xdr.zst"))
    else:
        files = sorted((LEDGERS / "synthetic").glob("stellar-rpc__load-test-ledgers-v25_*.xdr.zstd"))
    ledgers = tuple(sorted(ledgers_of(files, MAX_OBJECT_BYTES), key=sequence_of))
    first, last = RUNS[name]
    assert [sequence_of(x) for x in ledgers] == list(range(first, last + 1)), name
    index = index_by_seq()
    assert all(sha(x) == index[s]["sha256"] for s, x in zip(range(first, last + 1), ledgers, strict=True)), name
    return ledgers


def build_lake(root: Path, layout: str, runs=("v1", "v2", "v0")) -> Path:
    """The runs packed into one lake at ``root`` (oldest run first)."""
    lpf, fpp = LAYOUTS[layout]
    for name in sorted(runs, key=lambda n: RUNS[n][0]):
        write_lake(root, run_ledgers(name), ledgers_per_file=lpf, files_per_partition=fpp)
    return root


def build_noise(root: Path) -> None:
    """Small renumbered lakes at the NOISE prefixes under ``root``."""
    for prefix, (start, count) in NOISE.items():
        write_lake(
            root / prefix, renumber(run_ledgers("v1"), start, count), ledgers_per_file=1, files_per_partition=64000
        )


def s3_env(endpoint: str, bucket: str, prefix: str = "", **extra) -> dict[str, str]:
    return env_for(
        bucket,
        STORAGE_TYPE="S3",
        S3_ENDPOINT_URL=endpoint,
        S3_FORCE_PATH_STYLE="true",
        ARCHIVE_PATH=prefix,
        **AWS,
        **extra,
    )


# gcp-storage-emulator answers one connection at a time from a listen backlog of 5 (and
# closes each after one answer): more calls at once overflow the backlog, and each
# overflowed connection waits about a second for a SYN-ACK retransmission.
GCS_EMULATOR_INFLIGHT = 4


def gcs_lake_env(host: str, bucket: str, prefix: str = "", **extra) -> dict[str, str]:
    """``host`` is "127.0.0.1:PORT" (the emulator or a proxy in front of it)."""
    extra.setdefault("STORAGE_MAX_INFLIGHT", GCS_EMULATOR_INFLIGHT)
    return env_for(
        bucket,
        STORAGE_TYPE="GCS",
        STORAGE_EMULATOR_HOST=f"http://{host}",
        ARCHIVE_PATH=prefix,
        GOOGLE_CLOUD_PROJECT="test",
        **extra,
    )


def fs_env(folder: Path, prefix: str = "", **extra) -> dict[str, str]:
    return env_for(folder, ARCHIVE_PATH=prefix, **extra)


def cli_popen(command: str, env: dict[str, str]) -> subprocess.Popen:
    """``stellar-live-source COMMAND`` as a real process (read it with ``cli_result``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stellar_live_source.cli", command],
        env=process_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_result(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.strip(), err.strip()


async def stream_once(addr: str, start: int, end: int, timeout: float = 60):
    """One stream that is never resumed: (ledgers, status code, details)."""
    import grpc

    from stellar_live_source.client import Client

    got = []
    async with Client(addr, max_retries=0) as client:
        try:
            async for item in client.stream(start, end, timeout=timeout):
                got.append(item)
        except grpc.aio.AioRpcError as exc:
            return got, exc.code(), exc.details() or ""
    return got, grpc.StatusCode.OK, ""


def check_run(got: list[tuple[int, bytes]], first: int, last: int, index: dict[int, dict]) -> None:
    """Every ledger of first..last exactly once, in order, byte for byte as the index says."""
    seqs = [s for s, _ in got]
    assert seqs == list(range(first, last + 1)), (
        f"expected {first}-{last}, got {len(seqs)} ledgers: {seqs[:3]}...{seqs[-3:]}"
    )
    bad = [s for s, x in got if sha(x) != index[s]["sha256"]]
    assert not bad, f"payloads differ from the index at {bad[:10]}"


def upload_parallel(kind: str, where: str, bucket: str, folder: Path, prefix: str = "", workers: int = 4) -> list[str]:
    """Copy a lake folder into a bucket on moto (``where`` = endpoint URL) or the GCS
    emulator (``where`` = host:port) with a few uploads at once; the keys written."""
    from concurrent.futures import ThreadPoolExecutor

    from .support.endpoints import gcs_client, lake_files, s3_client

    files = lake_files(folder)
    keys = [f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel for rel, _ in files]
    if kind == "S3":
        client = s3_client(where)
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

        def put(key: str, path: Path) -> None:
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    else:
        from google.api_core.exceptions import Conflict

        client = gcs_client(where)
        try:
            b = client.create_bucket(bucket)
        except Conflict:
            b = client.bucket(bucket)

        def put(key: str, path: Path) -> None:
            b.blob(key).upload_from_string(path.read_bytes())

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(put, keys, [p for _, p in files]))
    finally:
        client.close()
    return keys
