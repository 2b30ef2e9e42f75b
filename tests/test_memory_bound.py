"""The documented memory bound (docs/capacity.md) holds for a real server
process with 32 backfilling streams whose clients read slower than storage,
so that every stream's read-ahead fills:

    CACHE_BYTES + MAX_CONCURRENT_STREAMS x (READAHEAD_BYTES + largest decompressed object)
    + DECODE_WORKERS x largest object + baseline

where the baseline is the same server's resident memory, idle, once it has
opened the lake, plus PER_STREAM for each stream (its gRPC call, its tasks,
and the allocator's overhead on the objects it holds: measured here at about
0.15 MB). The budgets are small beside the objects (about 300 KB each) so
that the bound is tight: read-ahead that ignored its byte budget would hold
a hundred objects per stream, about a gigabyte."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest
import zstandard

from stellar_live_source.client import Client
from stellar_live_source.tools.pack import renumber, write_lake

from .conftest import needs_testdata
from .service_storage_support import run_ledgers
from .service_support import env_for, server_process

pytestmark = needs_testdata

STREAMS = 32
LPF = 64  # real testnet ledgers, 64 to an object: about 300 KB decoded
SPAN = 16  # objects between two streams' starts: each reads objects of its own
CACHE_BYTES = 4 << 20
READAHEAD_BYTES = 2 << 20
DECODE_WORKERS = 2
PER_STREAM = 256 << 10  # docs/capacity.md
SAMPLING = 6.0  # seconds of streaming sampled, after every stream has its first ledger


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backfill-lake")
    write_lake(root, renumber(run_ledgers("v0"), LPF, STREAMS * SPAN * LPF), ledgers_per_file=LPF)
    return root


def rss(pid: int) -> int:
    """The process's resident memory in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def largest_decompressed(root: Path) -> int:
    return max(zstandard.get_frame_parameters(p.read_bytes()).content_size for p in root.rglob("*.xdr.zst"))


class Sampler(threading.Thread):
    """Samples a process's RSS every 20 ms until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))
            self.samples += 1


async def backfill(addr: str) -> list[int]:
    """STREAMS slow clients, each from its own part of the lake, read for
    SAMPLING seconds once all have begun; the ledgers each received."""
    received = [0] * STREAMS
    began = asyncio.Event()

    async def one(i: int, client: Client) -> None:
        async with contextlib.aclosing(client.stream(LPF + i * SPAN * LPF, 0)) as ledgers:
            async for _ in ledgers:
                received[i] += 1
                if all(received):
                    began.set()
                await asyncio.sleep(0.05)  # a client slower than storage: read-ahead fills and stays full

    async with Client(addr) as client:
        tasks = [asyncio.create_task(one(i, client)) for i in range(STREAMS)]
        try:
            await asyncio.wait_for(began.wait(), 30)
            await asyncio.sleep(SAMPLING)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return received


def test_32_backfilling_streams_stay_under_the_documented_memory_bound(lake):
    largest = largest_decompressed(lake)
    env = env_for(
        lake,
        CACHE_BYTES=CACHE_BYTES,
        READAHEAD_BYTES=READAHEAD_BYTES,
        MAX_CONCURRENT_STREAMS=STREAMS,
        DECODE_WORKERS=DECODE_WORKERS,
        LOG_LEVEL="warning",
    )
    with server_process(env) as srv:
        time.sleep(0.5)
        baseline = max(rss(srv.proc.pid) for _ in range(5))
        sampler = Sampler(srv.proc.pid)
        sampler.start()
        try:
            received = asyncio.run(backfill(srv.addr))
        finally:
            sampler.done.set()
            sampler.join()
    bound = CACHE_BYTES + STREAMS * (READAHEAD_BYTES + largest + PER_STREAM) + DECODE_WORKERS * largest + baseline
    mib = 1 << 20
    print(
        f"\nRSS: baseline {baseline / mib:.0f} MiB, peak {sampler.peak / mib:.0f} MiB, bound {bound / mib:.0f} MiB "
        f"({sampler.samples} samples); largest object {largest / 1000:.0f} KB; ledgers per stream {min(received)}+"
    )
    assert sampler.peak <= bound, f"peak RSS {sampler.peak / mib:.0f} MiB over the bound {bound / mib:.0f} MiB"
    # The streams did fill their read-ahead: half the read-ahead term at least was in use.
    assert sampler.peak - baseline >= STREAMS * READAHEAD_BYTES / 2
    assert min(received) >= 50
