"""A lake read over plain HTTP (STORAGE_TYPE=HTTP): the tests' object server
serves a test lake folder under http://127.0.0.1:PORT/BUCKET, and the real
service streams it over gRPC. The HTTP store cannot list: the lake finds its
extension, newest and oldest by HEAD requests (counted here), and the tip
watcher asks for the next object and the one after it."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from stellar_live_source import parts
from stellar_live_source.core.keys import Layout
from stellar_live_source.errors import LakeConfigError, StorageConfigError
from stellar_live_source.lake.http import HTTPStorage
from stellar_live_source.lake.probe import KeyProbe, find_anchor
from stellar_live_source.ops.config import load

from .conftest import LEDGERS
from .service_support import SHARED_LAKE, collect, env_for, index_by_seq, running_app, sha, status_of, until
from .support.objectserver import ObjectServer

BUCKET = "lake"
TOKEN = "s3cr3t-t0ken"
DATASTORE = LEDGERS / "testnet" / "datastore_testbucket_997-999"  # 1 ledger per file, 64000 per partition
# The shared lake: 64 ledgers per file, 10 per partition, five objects.
FIRST, LAST, PER_FILE = 1410048, 1410367, 64
SHARED_KEYS = sorted(p.relative_to(SHARED_LAKE).as_posix() for p in SHARED_LAKE.rglob("*.xdr.zst"))[::-1]


def lake_copy(src: Path, dest: Path, ext: str) -> Path:
    """``src`` copied to ``dest`` with its objects under extension ``ext``."""
    shutil.copytree(src, dest)
    for path in list(dest.rglob("*.xdr.zst")):
        path.rename(path.with_name(path.name.removesuffix(".xdr.zst") + ext))
    return dest


def http_env(server: ObjectServer, **extra: object) -> dict[str, str]:
    env = env_for("", STORAGE_TYPE="HTTP", HTTP_BASE_URL=f"{server.url}/{BUCKET}", **extra)
    del env["BUCKET_NAME"]
    return env


@pytest.fixture
def server() -> Iterator[ObjectServer]:
    with ObjectServer() as s:
        yield s


def expect_exact(got: list[tuple[int, bytes]], first: int, last: int) -> None:
    index = index_by_seq()
    assert [seq for seq, _ in got] == list(range(first, last + 1))
    for seq, data in got:
        assert sha(data) == index[seq]["sha256"], seq


@pytest.mark.parametrize("ext", [".xdr.zst", ".xdr.zstd"])
@pytest.mark.parametrize(
    ("lake", "first", "last"), [(SHARED_LAKE, FIRST, LAST), (DATASTORE, 997, 999)], ids=["lpf64", "lpf1"]
)
async def test_streams_both_layouts_and_extensions_byte_exact(tmp_path, server, lake, first, last, ext):
    server.load_folder(BUCKET, lake_copy(lake, tmp_path / "lake", ext))
    async with running_app(http_env(server, HTTP_SEARCH_FROM=first + 1)) as (app, addr):
        assert app.lake is not None and app.lake.layout.extension == ext
        assert app.lake.newest_known == last
        await until(lambda: app.lake is not None and app.lake.oldest_known == first, what="the oldest ledger")
        expect_exact(await collect(addr, first, last), first, last)
    assert server.stats["list"] == 0 and server.stats["head"] > 0


async def test_search_for_newest_and_oldest_counted_in_requests(server):
    server.load_folder(BUCKET, SHARED_LAKE)
    config = load(http_env(server, HTTP_SEARCH_FROM=FIRST + 2 * PER_FILE))  # the middle object
    lake = await parts.build(config).open_lake()
    try:
        opened = server.stats["head"]
        assert opened == 3  # the start-up check's, and the anchor under both extensions (asked at once)
        assert await lake.newest() == LAST
        newest_heads = server.stats["head"] - opened
        assert await lake.oldest() == FIRST
        oldest_heads = server.stats["head"] - opened - newest_heads
        # From the middle of five objects: two each way, and the first missing beyond.
        bound = 2 * math.ceil(math.log2(3)) + 3
        assert 2 <= newest_heads <= bound and 2 <= oldest_heads <= bound
        assert server.stats["list"] == 0
    finally:
        await lake.close()


class FakeLake:
    """Object indexes [first, last] of a layout, as an existence check that counts."""

    def __init__(self, layout: Layout, first_seq: int, last_seq: int) -> None:
        self.layout, self.asked = layout, 0
        self.first, self.last = layout.file_start(first_seq), last_seq

    async def exists(self, key: str) -> bool:
        self.asked += 1
        start, _, ext = self.layout.parse_key(key)
        return ext == ".xdr.zst" and self.first <= start <= self.last and key == self.layout.object_key(start)


@pytest.mark.parametrize(
    ("first", "last", "search_from"),
    [(2, 60_000_000, 0), (5_000_000, 60_000_000, 0), (30_000_000, 60_000_000, 45_000_000), (2, 3, 0)],
)
async def test_gallop_and_bisect_take_a_few_dozen_requests_for_60_million_ledgers(first, last, search_from):
    layout = Layout(1, 64000)
    lake = FakeLake(layout, first, last)
    anchor = await find_anchor(layout, lake.exists, search_from)
    assert anchor is not None and anchor[1] == ".xdr.zst"
    anchor_asks = lake.asked
    assert anchor_asks <= 2 * 32  # both extensions, ledger 2 and the powers of two
    probe = KeyProbe(layout, lake.exists, anchor[0])
    lake.asked = 0
    assert await probe.newest_key() == layout.object_key(last)
    bound = 2 * math.ceil(math.log2(last - first + 2)) + 4
    assert lake.asked <= bound, (lake.asked, bound)
    lake.asked = 0
    assert await probe.oldest_key() == layout.object_key(first)
    assert lake.asked <= bound, (lake.asked, bound)
    # At the tip nothing new: the next object and the one after, two requests.
    lake.asked = 0
    assert await probe.newest_key() == layout.object_key(last)
    assert lake.asked == 2


async def test_a_lake_without_ledger_2_or_a_power_of_two_needs_http_search_from(server):
    server.load_folder(BUCKET, SHARED_LAKE)
    with pytest.raises(LakeConfigError, match="HTTP_SEARCH_FROM"):
        await parts.build(load(http_env(server))).open_lake()
    with pytest.raises(LakeConfigError, match="HTTP_SEARCH_FROM=5000"):
        await parts.build(load(http_env(server, HTTP_SEARCH_FROM=5000))).open_lake()


async def test_a_missing_object_with_later_ones_ends_the_stream_not_found(server):
    server.load_folder(BUCKET, SHARED_LAKE)
    gap = SHARED_KEYS[1]  # ledgers 1410112-1410175
    server.delete(BUCKET, gap)
    async with running_app(http_env(server, HTTP_SEARCH_FROM=FIRST, MISSING_OBJECT_WAIT="500ms")) as (app, addr):
        assert app.lake is not None and app.lake.newest_known == LAST  # asked past the gap
        code, details, n = await status_of(addr, FIRST, 0)
    assert code == grpc.StatusCode.NOT_FOUND and n == PER_FILE
    assert gap.split("/")[-1].removesuffix(".xdr.zst") in details


async def test_503s_and_bodies_cut_short_are_retried(server):
    server.load_folder(BUCKET, SHARED_LAKE)
    env = http_env(server, HTTP_SEARCH_FROM=FIRST, RETRY_ATTEMPTS=3, CACHE_BYTES="1MiB")
    async with running_app(env) as (_, addr):
        server.rule(SHARED_KEYS[2], 503, times=2)
        server.rule(SHARED_KEYS[3], "truncate", times=1)
        got = await collect(addr, FIRST, LAST)
    expect_exact(got, FIRST, LAST)
    assert server.stats["status_503"] >= 2 and server.stats["truncated"] == 1


async def test_extra_headers_are_sent_and_never_shown(server, caplog):
    server.auth = f"bearer:{TOKEN}"
    server.load_folder(BUCKET, SHARED_LAKE)
    with pytest.raises(StorageConfigError, match="HTTP_BASE_URL=.*access denied"):
        await parts.build(load(http_env(server, HTTP_SEARCH_FROM=FIRST))).open_lake()
    caplog.set_level(logging.DEBUG)
    env = http_env(server, HTTP_SEARCH_FROM=FIRST, HTTP_HEADER_AUTHORIZATION=f"Bearer {TOKEN}")
    async with running_app(env) as (app, addr):
        expect_exact(await collect(addr, FIRST, FIRST + 70), FIRST, FIRST + 70)
        assert app.lake is not None and TOKEN not in app.lake.storage.description
    assert server.stats["refused"] >= 1 and server.stats["authorized"] > 0
    assert TOKEN not in caplog.text


async def test_live_tail_objects_appear_while_a_client_streams(server):
    for key in SHARED_KEYS[:3]:
        server.put(BUCKET, key, (SHARED_LAKE / key).read_bytes())
    async with running_app(http_env(server, HTTP_SEARCH_FROM=FIRST)) as (app, addr):
        assert app.lake is not None and app.lake.newest_known == FIRST + 3 * PER_FILE - 1
        streaming = asyncio.create_task(collect(addr, FIRST, LAST, timeout=20))
        await until(lambda: app.lake is not None and app.lake.waiters > 0, what="a stream waiting at the tip")
        for key in SHARED_KEYS[3:]:
            server.put(BUCKET, key, (SHARED_LAKE / key).read_bytes())
            await asyncio.sleep(0.3)
        got = await asyncio.wait_for(streaming, 20)
    expect_exact(got, FIRST, LAST)


class _Page(BaseHTTPRequestHandler):
    """A web server that answers every path with the same HTML page."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "13")
        self.end_headers()

    def do_GET(self) -> None:
        self.do_HEAD()
        self.wfile.write(b"<html></html>")

    def log_message(self, *args: object) -> None:
        pass


async def test_a_server_that_answers_every_path_is_refused_at_start():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        env = env_for("", STORAGE_TYPE="HTTP", HTTP_BASE_URL=f"http://127.0.0.1:{httpd.server_port}/lake")
        with pytest.raises(StorageConfigError, match="HTTP_BASE_URL=.*answers 200 for"):
            await parts.build(load(env)).open_lake()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_password_in_the_url_is_refused_and_never_shown():
    with pytest.raises(StorageConfigError, match="HTTP_HEADER_AUTHORIZATION") as caught:
        HTTPStorage("https://user:hunter2@lake.example/pubnet", "", (), 5, 4)
    assert "hunter2" not in str(caught.value)
    storage = HTTPStorage("https://lake.example/x", "pubnet", (("X-Api-Key", "k3y"),), 5, 4)
    storage.descend("ledgers")
    assert storage.description == "https://lake.example/x/pubnet/ledgers/" and not storage.can_list
    assert "k3y" not in repr(storage)
