"""The storage adapters against real endpoints: one test body for a local folder,
moto's S3 server and the GCS emulator, checked against a model of S3 listing;
then S3 and GCS behind the fault proxy (slow, failing, dropping, truncating,
down), and the proxy itself."""

from __future__ import annotations

import asyncio
import http.client
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stellar_live_source.errors import ObjectNotFound, StorageConfigError, StorageError
from stellar_live_source.lake import storage as storage_mod
from stellar_live_source.lake.storage import FolderStorage, Storage

from .service_support import storage_for
from .support.endpoints import upload_folder_to_gcs, upload_folder_to_s3
from .support.faultproxy import FaultProxy

_rng = random.Random(1)
LAKE = {
    ".config.json": b'{"networkPassphrase": "Test SDF Network ; September 2015", "ledgersPerBatch": 64}',
    "FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst": _rng.randbytes(1000),
    "FFFFFFFF--0-639/FFFFFFBF--64-127.xdr.zst": _rng.randbytes(200_000),
    "FFFFFFFF--0-639/FFFFFF7F--128-191.xdr.zst": b"",
    "FFFFFD7F--640-1279/FFFFFD7F--640-703.xdr.zst": _rng.randbytes(3000),
    # Siblings of a folder on both sides of "/": "-" < "." < "/" < "0".
    "FFFFFFFF--0-639-old/FFFFFFFF--0-63.xdr.zst": b"old",
    "FFFFFFFF--0-639.note": b"note",
    "FFFFFFFF--0-6390/x": b"x",
}
KEYS = sorted(LAKE)
NOISE = {"archive/v10/.config.json": b"{}", "archive/v10/FFFFFFFF--0-639/a": b"a", "other/b": b"b"}
ARCHIVE_PATH = "archive/v1"
NESTED = {f"{ARCHIVE_PATH}/{k}": v for k, v in LAKE.items()} | NOISE
BIG = "FFFFFFFF--0-639/FFFFFFBF--64-127.xdr.zst"


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


def folder(path: Path, **given: object) -> FolderStorage:
    s = storage_for("FS", bucket=str(path), **given)
    assert isinstance(s, FolderStorage)
    return s


def model(prefix: str, start_after: str | None, limit: int) -> list[str]:
    """What S3's ListObjectsV2 answers."""
    return [k for k in KEYS if k.startswith(prefix) and (start_after is None or k > start_after)][:limit]


@dataclass
class Lake:
    """One backend with two buckets: `plain` (the lake at the root) and `nested`
    (the lake under ARCHIVE_PATH, beside look-alike noise)."""

    kind: str
    opener: Callable[..., Storage]
    plain: str
    nested: str

    def open(self, bucket: str | None = None, **kw) -> Storage:
        return self.opener(bucket=bucket or self.plain, **kw)


@pytest.fixture(scope="session")
def s3_buckets(moto_server, tmp_path_factory) -> tuple[str, str]:
    """(plain, nested) buckets on moto, uploaded once: the tests only read them."""
    src = write_tree(tmp_path_factory.mktemp("s3-src"), NESTED)
    plain, nested = f"plain-{uuid.uuid4().hex[:8]}", f"nested-{uuid.uuid4().hex[:8]}"
    upload_folder_to_s3(moto_server, plain, src / ARCHIVE_PATH)
    upload_folder_to_s3(moto_server, nested, src)
    return plain, nested


@pytest.fixture(scope="session")
def gcs_buckets(gcs_emulator, tmp_path_factory) -> tuple[str, str]:
    src = write_tree(tmp_path_factory.mktemp("gcs-src"), NESTED)
    plain, nested = f"plain-{uuid.uuid4().hex[:8]}", f"nested-{uuid.uuid4().hex[:8]}"
    upload_folder_to_gcs(gcs_emulator, plain, src / ARCHIVE_PATH)
    upload_folder_to_gcs(gcs_emulator, nested, src)
    return plain, nested


@pytest.fixture(params=["FS", "S3", "GCS"])
def lake(request, tmp_path) -> Lake:
    """The same lake on each backend (servers start only when a test needs them)."""
    if request.param == "FS":
        plain, nested = write_tree(tmp_path / "plain", LAKE), write_tree(tmp_path / "nested", NESTED)
        return Lake("FS", lambda **kw: storage_for("FS", **kw), str(plain), str(nested))
    if request.param == "S3":
        endpoint = request.getfixturevalue("moto_server")
        opener = lambda **kw: storage_for("S3", endpoint=endpoint, force_path_style=True, **kw)  # noqa: E731 - one line per branch
        return Lake("S3", opener, *request.getfixturevalue("s3_buckets"))
    request.getfixturevalue("gcs_env")
    return Lake("GCS", lambda **kw: storage_for("GCS", **kw), *request.getfixturevalue("gcs_buckets"))


def run(body, storage: Storage):
    """Run `body(storage)` on a fresh event loop, closing the storage after."""

    async def main():
        try:
            return await body(storage)
        finally:
            await storage.close()

    return asyncio.run(main())


# -- one body, three backends ----------------------------------------------------------


def test_get_returns_the_exact_bytes_and_a_missing_key_is_not_found(lake):
    async def body(s: Storage):
        assert s.kind == lake.kind
        for key, data in LAKE.items():
            assert await s.get(key) == data
        # The last is a folder on FS, and no object on S3 or GCS.
        for missing in ("FFFFFFFF--0-639/FFFFFF3F--192-255.xdr.zst", "nope", "FFFFFFFF--0-639"):
            with pytest.raises(ObjectNotFound):
                await s.get(missing)
        assert s.stats["get"] == len(LAKE) + 3
        assert s.stats["get_bytes"] == sum(map(len, LAKE.values()))
        assert s.stats["not_found"] == 3 and s.stats["errors"] == 0
        # Many at once share one bounded pool.
        got = await asyncio.gather(*(s.get(BIG) for _ in range(16)))
        assert all(g == LAKE[BIG] for g in got)
        assert s.threads <= 4

    run(body, lake.open(max_inflight=4))


PREFIXES = [
    "",
    ".",
    "F",
    "FFFFFFFF--0-6",
    "FFFFFFFF--0-639",
    "FFFFFFFF--0-639/",
    "FFFFFFFF--0-639/FFFFFFB",
    "FFFFFD7F--640-1279/",
    "FFFFFFFF--0-639/FFFFFFFF--0-63.xdr.zst",
    "nope",
]
AFTERS = [
    None,
    "",
    ".config.json",
    "FFFFFD7F",
    "FFFFFFFF--0-639",
    "FFFFFFFF--0-639-old/z",
    "FFFFFFFF--0-639.note",
    "FFFFFFFF--0-639/",
    "FFFFFFFF--0-639/FFFFFFBF--64-127.xdr.zst",
    "FFFFFFFF--0-6390",
    "zzz",
]


def test_list_orders_filters_and_pages_like_s3(lake, monkeypatch):
    async def body(s: Storage):
        assert await s.list() == KEYS
        assert KEYS[0] == ".config.json"
        assert await s.list(limit=0) == []
        for prefix in PREFIXES:
            for after in AFTERS:
                for limit in (2, 1000):
                    assert await s.list(prefix, start_after=after, limit=limit) == model(prefix, after, limit), (
                        prefix,
                        after,
                        limit,
                    )
        monkeypatch.setattr(storage_mod, "_PAGE", 2)  # S3 pages by StartAfter: make it page
        for prefix, after in [("", None), ("", ".config.json"), ("FFFFFFFF--0-639/", None), ("F", "FFFFFD7F")]:
            for limit in (3, 1000):
                assert await s.list(prefix, start_after=after, limit=limit) == model(prefix, after, limit)
        # Walking the whole lake in small pages visits every key once, in order.
        seen, after = [], None
        while page := await s.list(start_after=after, limit=3):
            seen += page
            after = page[-1]
        assert seen == KEYS
        assert s.stats["errors"] == 0

    run(body, lake.open())


@pytest.mark.parametrize("archive_path", ["archive/v1", "/archive/v1/", "archive/v1/"])
def test_archive_path_keys_come_back_relative(lake, archive_path):
    async def body(s: Storage):
        assert await s.list() == KEYS  # nothing from archive/v10/ or other/
        assert await s.list("FFFFFFFF--0-639/", limit=2) == model("FFFFFFFF--0-639/", None, 2)
        assert await s.get(".config.json") == LAKE[".config.json"]
        assert await s.get(BIG) == LAKE[BIG]
        with pytest.raises(ObjectNotFound):
            await s.get("other/b")
        await s.check()

    run(body, lake.open(lake.nested, prefix=archive_path))


def test_check_a_missing_bucket_and_close(lake, tmp_path):
    missing = str(tmp_path / "no-such-folder") if lake.kind == "FS" else f"missing-{uuid.uuid4().hex[:8]}"

    async def body(s: Storage):
        with pytest.raises(StorageConfigError):
            await s.check()
        with pytest.raises(StorageError) as info:
            await s.list()
        assert not isinstance(info.value, ObjectNotFound)
        await s.close()
        await s.close()
        with pytest.raises(RuntimeError):
            await s.get(".config.json")

    run(body, lake.open(missing))

    async def healthy(s: Storage):
        await s.check()

    run(healthy, lake.open())


def test_folder_walk_matches_s3_order_on_random_trees(tmp_path):
    """The pruned scandir walk against the model, on names crowded around "/"."""
    rng = random.Random(5)
    parts = ["a", "a.b", "a-", "a0", ".h", "b", "ab"]
    keys: set[str] = set()
    while len(keys) < 60:
        key = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 3)))
        if not any(k.startswith(key + "/") or key.startswith(k + "/") for k in keys):  # a file or a folder
            keys.add(key)
    write_tree(tmp_path, dict.fromkeys(keys, b""))
    ordered = sorted(keys)

    async def body(s: Storage):
        assert await s.list() == ordered
        for _ in range(300):
            prefix = rng.choice(ordered)[: rng.randint(0, 6)]
            after = rng.choice([None, rng.choice(ordered), rng.choice(ordered)[:-1], rng.choice(ordered) + "/"])
            limit = rng.choice([1, 2, 5, 100])
            want = [k for k in ordered if k.startswith(prefix) and (after is None or k > after)][:limit]
            assert await s.list(prefix, start_after=after, limit=limit) == want, (prefix, after, limit)

    run(body, storage_for("FS", bucket=str(tmp_path)))


def test_open_rejects_an_unknown_kind_or_no_bucket():
    with pytest.raises(StorageConfigError):
        storage_for("FTP", bucket="x")
    with pytest.raises(StorageConfigError):
        storage_for("S3", bucket="")


def test_a_hung_thread_meets_the_asyncio_deadline(tmp_path):
    s = folder(write_tree(tmp_path, LAKE), timeout=0.2)
    s.inline = False  # the pool's path, which a cached small file would skip
    released = threading.Event()
    # A client that ignores its own timeout:
    s._get = lambda key: released.wait(60)  # type: ignore[method-assign,assignment,return-value]  # one instance's stand-in

    async def body(s: Storage):
        with pytest.raises(StorageError, match="no answer within 0.7s") as info:
            await s.get(".config.json")
        assert not isinstance(info.value, ObjectNotFound)
        assert not released.is_set()  # the caller was answered while the thread still hung
        assert s.stats["errors"] == 1
        released.set()

    run(body, s)


# -- a folder's cached objects, read on the loop ---------------------------------------

needs_nowait = pytest.mark.skipif(storage_mod._RWF_NOWAIT is None, reason="no preadv2 RWF_NOWAIT here")


@needs_nowait
def test_a_folder_reads_small_cached_objects_on_the_loop_and_the_rest_in_the_pool(tmp_path):
    s = folder(write_tree(tmp_path, LAKE), max_inflight=4)
    s.INLINE_MAX_BYTES = 100_000  # BIG (200 kB) is over it

    async def body(s: FolderStorage):
        for key, data in LAKE.items():  # just written: in the page cache
            assert await s.get(key) == data
        assert s.stats["get_inline"] == len(LAKE) - 1
        assert s.threads == 1  # BIG's read alone
        for missing in ("nope", "FFFFFFFF--0-639"):  # a folder is no object either way
            with pytest.raises(ObjectNotFound):
                await s.get(missing)
        assert s.inline and s.stats["get"] == len(LAKE) + 2 and s.stats["get_inline"] == len(LAKE) - 1

    run(body, s)


@needs_nowait
def test_a_folder_object_not_in_the_page_cache_is_read_in_the_pool(tmp_path):
    path = write_tree(tmp_path, LAKE) / BIG
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(20):  # writeback may still hold pages on the first tries
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages leave the cache
            try:
                os.preadv(fd, [bytearray(16)], 0, storage_mod._RWF_NOWAIT or 0)  # needs_nowait: never None
            except BlockingIOError:
                break
            time.sleep(0.05)
        else:
            pytest.skip("this filesystem keeps the file cached (tmpfs?)")
    finally:
        os.close(fd)
    s = folder(tmp_path, max_inflight=4)

    async def body(s: FolderStorage):
        assert await s.get(BIG) == LAKE[BIG]
        assert s.stats["get_inline"] == 0 and s.threads == 1
        assert s.inline  # not being cached is no reason to stop trying

    run(body, s)


@needs_nowait
def test_a_few_slow_inline_reads_send_every_later_read_to_the_pool(tmp_path):
    s = folder(write_tree(tmp_path, LAKE), max_inflight=4)
    s.INLINE_SLOW = -1.0  # every read is slow, as on a mount where open() waits for the network

    async def body(s: FolderStorage):
        for _ in range(s.INLINE_SLOW_READS):  # one slow read may be bad luck; a few are the mount
            assert s.inline
            assert await s.get(".config.json") == LAKE[".config.json"]
        assert s.stats["get_inline"] == s.INLINE_SLOW_READS and not s.inline and not s.threads
        for key, data in LAKE.items():
            assert await s.get(key) == data
        assert s.stats["get_inline"] == s.INLINE_SLOW_READS and s.threads >= 1

    run(body, s)


# -- S3 and GCS behind the fault proxy -------------------------------------------------


@pytest.fixture(params=["S3", "GCS"])
def proxied(request):
    """(proxy, open(**kw)) for the plain lake on moto or the emulator, reached through a FaultProxy."""
    kind = request.param
    if kind == "S3":
        host, port = request.getfixturevalue("moto_server").removeprefix("http://").split(":")
        bucket = request.getfixturevalue("s3_buckets")[0]
    else:
        host, port = request.getfixturevalue("gcs_env").split(":")
        bucket = request.getfixturevalue("gcs_buckets")[0]
    with FaultProxy(host, int(port), seed=3) as proxy:
        yield proxy, lambda **kw: storage_for(kind, bucket=bucket, endpoint=proxy.url, force_path_style=True, **kw)


def test_a_slow_get_never_blocks_the_loop(proxied):
    proxy, opener = proxied
    proxy.delay = 0.5

    async def body(s: Storage):
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        t0 = time.monotonic()
        assert await s.get(BIG) == LAKE[BIG]
        elapsed = time.monotonic() - t0
        task.cancel()
        assert elapsed >= 0.5
        assert ticks >= 0.5 * elapsed / 0.01  # half the ideal count: slack for a loaded machine

    run(body, opener())


def test_a_timeout_shorter_than_the_delay_is_a_storage_error(proxied):
    proxy, opener = proxied
    proxy.delay = 4.0

    async def body(s: Storage):
        t0 = time.monotonic()
        with pytest.raises(StorageError) as info:
            await s.get(".config.json")
        assert not isinstance(info.value, ObjectNotFound)
        assert time.monotonic() - t0 < proxy.delay  # given up before the answer came

    run(body, opener(timeout=0.3))


@pytest.mark.parametrize(
    "fault",
    [{"truncate_rate": 1.0}, {"fail_rate": 1.0}, {"drop_rate": 1.0}, {"down": True}],
    ids=lambda f: next(iter(f)),
)
def test_transient_faults_are_storage_errors_never_short_bytes(proxied, fault):
    proxy, opener = proxied

    async def body(s: Storage):
        assert await s.get(BIG) == LAKE[BIG]
        with pytest.raises(ObjectNotFound):  # through the proxy, a real miss is still a miss
            await s.get("nope")
        proxy.configure(**fault)
        for call in (lambda: s.get(BIG), lambda: s.get(".config.json"), lambda: s.get("nope"), lambda: s.list()):
            # Only a truncated 404 is still a miss: its status line arrived whole.
            expected = (StorageError, ObjectNotFound) if "truncate_rate" in fault else StorageError
            with pytest.raises(expected):
                await call()
        with pytest.raises(StorageError):  # transient, so not a StorageConfigError
            await s.check()
        assert s.stats["errors"] >= 4
        assert proxy.counts["faulted"] >= 4
        proxy.reset()  # the same Storage recovers: no poisoned pool or client
        assert await s.get(BIG) == LAKE[BIG]
        assert await s.list() == KEYS

    run(body, opener(timeout=5))


# -- the proxy itself -------------------------------------------------------------------


class _Chunked(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"hello ", b"chunked ", b"world"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def chunked_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get_many(proxy: FaultProxy, n: int) -> list[str]:
    """n GETs on one keep-alive connection (reopened after a fault): status or error per request."""
    out, conn = [], None
    for _ in range(n):
        conn = conn or http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            conn.request("GET", "/x")
            resp = conn.getresponse()
            body = resp.read()
            out.append(f"{resp.status}:{body.decode()}" if resp.status == 200 else str(resp.status))
        except (OSError, http.client.HTTPException) as e:
            out.append(type(e).__name__)
            conn.close()
            conn = None
    if conn:
        conn.close()
    return out


def test_proxy_keeps_alive_reframes_chunked_and_counts(chunked_upstream):
    with FaultProxy("127.0.0.1", chunked_upstream) as proxy:
        assert _get_many(proxy, 5) == ["200:hello chunked world"] * 5
        assert proxy.counts == {
            "connections": 1,
            "seen": 5,
            "forwarded": 5,
            "failed": 0,
            "dropped": 0,
            "truncated": 0,
            "refused": 0,
            "faulted": 0,
        }
        proxy.configure(down=True)
        assert "200" not in "".join(_get_many(proxy, 2))
        assert proxy.counts["refused"] == 2 and proxy.counts["faulted"] == 2


def test_proxy_faults_replay_with_the_seed(chunked_upstream):
    def outcomes(seed: int) -> list[str]:
        with FaultProxy("127.0.0.1", chunked_upstream, seed=seed) as proxy:
            proxy.configure(fail_rate=0.3, drop_rate=0.2, truncate_rate=0.2)
            _get_many(proxy, 30)
            assert proxy.counts["seen"] == 30
            return [outcome for _, _, outcome in proxy.log]

    first = outcomes(7)
    assert first == outcomes(7)
    assert first != outcomes(8)
    assert {"failed", "dropped", "truncated", "forwarded"} <= set(first)


def test_proxy_keeps_faults_transient_when_asked(chunked_upstream):
    with FaultProxy("127.0.0.1", chunked_upstream) as proxy:
        proxy.configure(fail_rate=1.0, max_in_a_row=2)
        got = _get_many(proxy, 7)
        assert [g.startswith("200") for g in got] == [False, False, True, False, False, True, False]
        assert [o for _, _, o in proxy.log] == ["failed", "failed", "forwarded"] * 2 + ["failed"]
        proxy.reset()  # no limit again
        proxy.configure(fail_rate=1.0)
        assert not any(g.startswith("200") for g in _get_many(proxy, 4))


def test_proxy_only_forwards_to_this_machine():
    with pytest.raises(ValueError):
        FaultProxy("example.com", 80)
