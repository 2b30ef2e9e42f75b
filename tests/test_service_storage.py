"""The service end to end through the real server process (`stellar-live-source
serve`) over loopback, for each storage type against a real endpoint: a folder,
moto's S3 server, and the GCS emulator. The consecutive real ledger runs of
../shared/testdata are packed into lakes of both layouts (64 per file and 10
per partition; 1 per file and 64000 per partition), at a bucket's root and under
an ARCHIVE_PATH beside look-alike sibling lakes; every payload is compared byte
for byte with the index. `latest` and `oldest` run as real processes too, and
the newest/oldest logic is checked as a lake grows in both directions."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from stellar_live_source.client import Client
from stellar_live_source.core.keys import Layout
from stellar_live_source.lake.lake import Lake
from stellar_live_source.lake.storage import Storage

from .conftest import needs_testdata
from .service_storage_support import (
    ARCHIVE_PATH,
    GCS_EMULATOR_INFLIGHT,
    LAYOUTS,
    NEWEST,
    OLDEST,
    RUNS,
    build_lake,
    build_noise,
    check_run,
    cli_popen,
    cli_result,
    fs_env,
    gcs_lake_env,
    s3_env,
    stream_once,
    upload_parallel,
)
from .service_support import index_by_seq, lake_settings, server_process, status_of, storage_for
from .support.endpoints import gcs_client, s3_client

pytestmark = needs_testdata


@dataclass(frozen=True)
class Case:
    storage: str
    layout: str
    prefixed: bool  # the lake under ARCHIVE_PATH, beside the noise lakes

    @property
    def id(self) -> str:
        return f"{self.storage}-{self.layout}" + ("-prefixed" if self.prefixed else "")


# Every storage type with both layouts, each layout once at a root and once under a prefix.
CASES = [
    Case("FS", "64x10", False),
    Case("FS", "1x64000", True),
    Case("S3", "64x10", False),
    Case("S3", "1x64000", True),
    Case("GCS", "64x10", True),
    Case("GCS", "1x64000", False),
]


@pytest.fixture(scope="session")
def packed(tmp_path_factory) -> dict[tuple[str, bool], Path]:
    """(layout, prefixed) -> the folder to copy into storage: the lake itself, or a
    folder with the lake at ARCHIVE_PATH and the noise lakes beside it."""
    root = tmp_path_factory.mktemp("packed")
    out = {}
    for layout in LAYOUTS:
        out[layout, False] = build_lake(root / layout / "plain", layout)
        nested = root / layout / "nested"
        build_lake(nested / ARCHIVE_PATH, layout)
        build_noise(nested)
        out[layout, True] = nested
    return out


@pytest.fixture(scope="session")
def s3_lakes(moto_server, packed) -> dict[Case, str]:
    """Case -> bucket on moto, uploaded once for the session."""
    out = {}
    for case in CASES:
        if case.storage == "S3":
            out[case] = f"lake-{case.layout.lower()}-{uuid.uuid4().hex[:8]}"
            upload_parallel("S3", moto_server, out[case], packed[case.layout, case.prefixed])
    return out


@pytest.fixture(scope="session")
def gcs_lakes(gcs_emulator, packed) -> dict[Case, str]:
    out = {}
    for case in CASES:
        if case.storage == "GCS":
            out[case] = f"lake-{case.layout.lower()}-{uuid.uuid4().hex[:8]}"
            upload_parallel("GCS", gcs_emulator, out[case], packed[case.layout, case.prefixed])
    return out


def env_of(case: Case, request, **extra) -> dict[str, str]:
    prefix = ARCHIVE_PATH if case.prefixed else ""
    extra.setdefault("LOG_LEVEL", "warning")  # the server's output is read only when it exits
    if case.storage == "FS":
        return fs_env(request.getfixturevalue("packed")[case.layout, case.prefixed], prefix, **extra)
    if case.storage == "S3":
        bucket = request.getfixturevalue("s3_lakes")[case]
        return s3_env(request.getfixturevalue("moto_server"), bucket, prefix, **extra)
    bucket = request.getfixturevalue("gcs_lakes")[case]
    return gcs_lake_env(request.getfixturevalue("gcs_emulator"), bucket, prefix, **extra)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_real_process_streams_every_run_byte_identical_and_knows_the_ends(case, request):
    env = env_of(case, request)
    index = index_by_seq()
    t0 = time.monotonic()
    with server_process(env) as srv:
        addr = srv.addr
        started = time.monotonic() - t0
        # `latest` and `oldest` are processes of their own, reading the same lake meanwhile.
        ends = {name: cli_popen(name, env) for name in ("latest", "oldest")}

        async def main():
            spans = [*RUNS.values(), (1410100, 1410200), (10060, 10060)]  # whole runs, and starts mid-object
            got = await asyncio.gather(*(stream_once(addr, first, last) for first, last in spans))
            for (first, last), (ledgers, code, details) in zip(spans, got, strict=True):
                assert code == grpc.StatusCode.OK, f"{first}-{last}: {code.name} {details}"  # never resumed
                check_run(ledgers, first, last, index)
            async with Client(addr) as client:
                ledgers, latest = await client.ledger_range(1410300, NEWEST + 1, timeout=30)
                check_run(ledgers, 1410300, NEWEST, index)
                assert latest == NEWEST
                assert await client.ledger_range(NEWEST + 1, NEWEST + 10, timeout=30) == ([], NEWEST)
            if case.storage == "FS":
                # Below the oldest ledger: the status names the lake's ends. (On S3 and GCS the
                # `oldest` process runs the same search; one more costs seconds on the emulators.)
                code, details, n = await status_of(addr, OLDEST - 1, 0)
                assert (code, n) == (grpc.StatusCode.OUT_OF_RANGE, 0)
                assert f"{OLDEST}-{NEWEST}" in details, details

        asyncio.run(main())
        assert srv.proc.poll() is None
        for name, want in (("latest", NEWEST), ("oldest", OLDEST)):
            code, out, err = cli_result(ends[name])
            assert (code, out) == (0, str(want)), f"{name}: {err}"
    print(f"\n{case.id}: server up in {started:.2f}s, all done in {time.monotonic() - t0:.2f}s")


# -- the ends of a lake as it grows, on each backend -------------------------------------------------


def _objects(folder: Path, layout: str) -> list[tuple[str, int, int]]:
    """(key, first, last ledger) of every object of a packed lake folder."""
    lay = Layout(*LAYOUTS[layout])
    out = []
    for path in sorted(folder.rglob("*.xdr.zst")):
        key = path.relative_to(folder).as_posix()
        start = lay.parse_key(key)[0]
        for first, last in RUNS.values():
            if first <= start + lay.ledgers_per_file - 1 and start <= last:
                out.append((key, max(first, start), min(last, start + lay.ledgers_per_file - 1)))
    return out


def _growth_order(objects: list, seed: int) -> list[list]:
    """Batches of objects to add that move both ends: the middle object; one newer; one
    older (in another partition where there is one); then the newest and the oldest."""
    rng = random.Random(seed)
    objects = sorted(objects, key=lambda o: o[1])
    mid = len(objects) // 2
    newer = rng.choice(objects[mid + 1 : -1])
    older = rng.choice(
        [o for o in objects[1:mid] if o[0].split("/")[0] != objects[mid][0].split("/")[0]] or objects[1:mid]
    )
    return [[objects[mid]], [newer], [older], [objects[0], objects[-1]]]


# Each search for the oldest ledger is a few hundred one-key listings (moto answers one in
# about 10 ms here): S3 and GCS grow the lake with more partitions and objects; the
# real-process test above checks both ends of the full lakes of every case.
@pytest.mark.parametrize("storage,layout", [("FS", "64x10"), ("FS", "1x64000"), ("S3", "1x64000"), ("GCS", "1x64000")])
async def test_newest_and_oldest_follow_a_lake_growing_at_both_ends(storage, layout, request, tmp_path):
    """Objects of the packed lake land one at a time under ARCHIVE_PATH (the noise lakes
    already beside it); after each, newest and oldest are those of the objects present."""
    src = request.getfixturevalue("packed")[layout, False]
    order = _growth_order(_objects(src, layout), seed=list(LAYOUTS).index(layout))
    bucket = f"grow-{uuid.uuid4().hex[:10]}"
    manifest = (src / ".config.json").read_bytes()
    if storage == "FS":
        build_noise(tmp_path)
        lake_root = tmp_path / ARCHIVE_PATH

        def put(key: str, data: bytes) -> None:
            (lake_root / key).parent.mkdir(parents=True, exist_ok=True)
            (lake_root / key).write_bytes(data)

        opener = lambda: storage_for("FS", bucket=str(tmp_path), prefix=ARCHIVE_PATH)  # noqa: E731 - one line per branch
    elif storage == "S3":
        endpoint = request.getfixturevalue("moto_server")
        build_noise(tmp_path)
        upload_parallel("S3", endpoint, bucket, tmp_path)
        client = s3_client(endpoint)
        request.addfinalizer(client.close)

        def put(key: str, data: bytes) -> None:
            client.put_object(Bucket=bucket, Key=f"{ARCHIVE_PATH}/{key}", Body=data)

        def opener() -> Storage:
            return storage_for(
                "S3", bucket=bucket, prefix=ARCHIVE_PATH, endpoint=endpoint, force_path_style=True, region="us-east-1"
            )
    else:
        host = request.getfixturevalue("gcs_env")
        build_noise(tmp_path)
        upload_parallel("GCS", host, bucket, tmp_path)
        client = gcs_client(host)
        request.addfinalizer(client.close)

        def put(key: str, data: bytes) -> None:
            client.bucket(bucket).blob(f"{ARCHIVE_PATH}/{key}").upload_from_string(data)

        def opener() -> Storage:
            return storage_for("GCS", bucket=bucket, prefix=ARCHIVE_PATH, max_inflight=GCS_EMULATOR_INFLIGHT)

    await asyncio.to_thread(put, ".config.json", manifest)
    lake = await Lake.open(opener(), lake_settings(retry_backoff=0.01))
    try:
        assert (lake.layout.ledgers_per_file, lake.layout.files_per_partition) == LAYOUTS[layout]
        assert await lake.newest(refresh=True) is None and await lake.oldest(refresh=True) is None
        present = []
        for batch in order:
            for key, first, last in batch:
                await asyncio.to_thread(put, key, (src / key).read_bytes())
                present.append((first, last))
            want = (max(x[1] for x in present), min(x[0] for x in present))
            assert (await lake.newest(refresh=True), await lake.oldest(refresh=True)) == want, (batch, present)
        assert (await lake.newest(), await lake.oldest()) == (NEWEST, OLDEST)  # the extremes were among them
    finally:
        await lake.close()
