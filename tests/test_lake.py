"""The lake's ends: the newest ledger from the first key of a listing, the
oldest by searching the key space (a few rounds of one-key listings), for
every layout, on a real folder."""

from __future__ import annotations

import os
import random
import sys
import threading

import pytest

from stellar_live_source.core.keys import Layout
from stellar_live_source.lake import lake as lake_module
from stellar_live_source.lake.lake import Lake
from stellar_live_source.tools.pack import ledgers_of, renumber, write_lake

from .conftest import LEDGERS, needs_testdata
from .service_support import MAX_OBJECT_BYTES as MAX
from .service_support import lake_settings, storage_for


@pytest.mark.parametrize("lpf,fpp", [(64, 10), (1, 64000), (8, 3), (1, 1), (64, 1)])
async def test_the_oldest_object_is_found_by_search_not_scan(tmp_path, lpf, fpp):
    rng = random.Random(f"{lpf}/{fpp}")
    layout = Layout(lpf, fpp)
    for trial in range(6):
        root = tmp_path / f"{trial}"
        first = rng.randrange(2, 10**8)
        starts = sorted({layout.file_start(first + i * lpf) for i in range(rng.randrange(1, 40))})
        for s in starts:  # empty files: the search only lists
            path = root / layout.object_key(s)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        (root / ".config.json").write_text("{}")
        storage = storage_for("FS", bucket=str(root))
        lake = Lake(storage, layout, lake_settings())
        try:
            calls = storage.stats.get("list", 0)
            assert await lake.oldest_key() == layout.object_key(starts[0])
            # at most 13 rounds of 8 probes per level (partition, file), whatever the lake holds
            assert storage.stats["list"] - calls <= 2 * (2 + 13 * 8)
        finally:
            await lake.close()


async def test_an_empty_lake_has_no_ends(tmp_path):
    (tmp_path / ".config.json").write_text("{}")
    lake = Lake(storage_for("FS", bucket=str(tmp_path)), Layout(64, 10), lake_settings())
    try:
        assert await lake.oldest_key() is None
        assert await lake.oldest() is None and await lake.newest() is None
    finally:
        await lake.close()


@needs_testdata
@pytest.mark.parametrize("lpf,fpp", [(8, 3), (1, 64000)])
async def test_keys_that_are_not_the_layouts_are_stepped_over(tmp_path, lpf, fpp):
    """A README at the root, editor and OS litter, stray uploads inside a
    partition, a partition-shaped folder with no objects, more litter before
    the newest key than one listing returns: newest and oldest are still the
    lake's, for the service's start-up and for `latest`/`oldest`."""
    source = list(ledgers_of([LEDGERS / "testnet" / "lighthorizon_1410048-1410367" / "1410048.xdr"], MAX))
    first, count = 1000, 40
    write_lake(tmp_path, renumber(source, first, count), ledgers_per_file=lpf, files_per_partition=fpp)
    layout = Layout(lpf, fpp)
    junk = ["readme.txt", ".DS_Store", "zzz/notes.txt", "0000/notes", "00000000-readme.txt"]
    junk += [f".a{i:02}" for i in range(20)]  # sort before every key: more than one listing's worth
    newest_key, oldest_key = layout.object_key(first + count - 1), layout.object_key(first)
    for key in (newest_key, oldest_key):
        folder = key.rpartition("/")[0]
        junk += [f"{folder}/notes.txt", f"{folder}/{Layout(64, 1).object_key(64)}", f"{key}.tmp"]
    if fpp > 1:  # a partition folder of an older range holding no object of the layout
        junk += [f"{layout.partition_dir(0)}/notes.txt", f"{layout.partition_dir(0)}/{layout.file_name(0)}.part"]
    for key in junk:
        path = tmp_path / key.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a ledger")
    lake = await Lake.open(storage_for("FS", bucket=str(tmp_path)), lake_settings())
    try:
        assert (await lake.newest(), await lake.oldest()) == (first + count - 1, first)
        assert await lake.oldest_key() == oldest_key
    finally:
        await lake.close()


@needs_testdata
async def test_small_objects_decode_on_the_loop_and_large_ones_in_nicer_threads(tmp_path, monkeypatch):
    """A thread handoff costs more than decoding 64 small ledgers; a few
    large ledgers would hold the event loop for milliseconds, so they decode
    in threads that the loop preempts (DECODE_NICE nicer, on Linux)."""
    small = list(ledgers_of(sorted((LEDGERS / "testnet" / "lighthorizon_1410048-1410367").glob("*.xdr"))[:64], MAX))
    large = list(ledgers_of(sorted((LEDGERS / "synthetic").glob("stellar-rpc__*.xdr.zstd")), MAX))[:4]
    write_lake(tmp_path / "small", renumber(small, 2, 62), ledgers_per_file=64)
    write_lake(tmp_path / "large", renumber(large, 2, 6), ledgers_per_file=8)
    threads, nices = [], []
    real = lake_module.decode.frame_object

    def frame_object(*a, **kw):
        threads.append(threading.current_thread())
        if sys.platform == "linux":
            nices.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(*a, **kw)

    monkeypatch.setattr(lake_module.decode, "frame_object", frame_object)
    for name in ("small", "large"):
        lake = await Lake.open(storage_for("FS", bucket=str(tmp_path / name)), lake_settings())
        try:
            obj = await lake.object(0)
            assert obj is not None
            assert (obj.start, obj.end) == ((2, 63) if name == "small" else (2, 7))
        finally:
            await lake.close()
    assert threads[0] is threading.main_thread() and threads[1] is not threading.main_thread()
    if sys.platform == "linux":
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert nices == [own, min(19, own + lake_module.DECODE_NICE)]
