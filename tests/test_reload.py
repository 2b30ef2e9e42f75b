"""Hot reload (issue 13, lifecycle): SIGHUP and watched-file changes; live
settings apply at once without breaking open streams, new-streams settings
apply to later calls, a restart-class change is refused whole, an invalid
file changes nothing, and the environment still wins over the file."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from stellar_live_source.client import Client
from stellar_live_source.ops.reload import FileWatcher

from .conftest import needs_testdata
from .service_support import (
    SHARED_LAKE,
    env_for,
    http_get,
    read_lines,
    running_app,
    server_process,
    status_of,
    until,
)

pytestmark = needs_testdata

FIRST, LAST = 1410048, 1410367
LAST_OBJECT = "FFEA7C7F--1409920-1410559/FFEA7AFF--1410304-1410367.xdr.zst"

BASE: dict[str, Any] = {
    "monitoring": {"log_level": "info"},
    "storage": {"poll_interval": "100ms"},
    "server": {"max_concurrent_streams": 5},
}


def write(path: Path, doc: dict[str, Any] | str) -> None:
    """The file replaced whole (a new inode, as an editor or a ConfigMap swap would)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    os.replace(tmp, path)


def with_(**sections: dict[str, Any]) -> dict[str, Any]:
    return {name: {**BASE.get(name, {}), **sections.get(name, {})} for name in {*BASE, *sections}}


def env_with_file(lake: Path | str, config: Path, **extra: object) -> dict[str, str]:
    """A server's environment that leaves what the file sets to the file."""
    env = env_for(lake, CONFIG_FILE=config, **extra)
    for name in ("LOG_LEVEL", "POLL_INTERVAL"):
        if name not in extra:
            env.pop(name)
    return env


def reloads(app: Any, result: str) -> float:
    return app.metrics.config_reloads.labels(result)._value.get()


def records(caplog: Any, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_file_change_during_an_open_stream_applies_at_once_and_the_stream_gets_every_ledger(tmp_path, caplog):
    lake = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, lake)
    last_object = lake / LAST_OBJECT
    held_back = tmp_path / "held_back.xdr.zst"
    shutil.move(last_object, held_back)  # the newest object arrives later: the stream waits at the tip
    config = tmp_path / "config.yaml"
    write(config, BASE)
    env = env_with_file(lake, config)
    root = logging.getLogger()
    level = root.level
    caplog.set_level(logging.INFO, "stellar_live_source")
    try:
        async with running_app(env) as (app, addr):
            assert app.lake is not None
            app.enable_reload(env, interval=0.05)
            received: list[int] = []

            async def consume() -> None:
                async with Client(addr, max_retries=0) as client:
                    async for seq, _ in client.stream(FIRST, LAST, timeout=60):
                        received.append(seq)

            task = asyncio.create_task(consume())
            await until(lambda: app.lake is not None and app.lake.waiters == 1, 20, "the stream waiting at the tip")
            assert received == list(range(FIRST, LAST - 63))

            write(
                config,
                with_(
                    monitoring={"log_level": "debug"},
                    storage={"poll_interval": "50ms", "readahead_bytes": "8MiB"},
                    server={"max_concurrent_streams": 1},
                ),
            )
            await until(lambda: reloads(app, "applied") == 1, 10, "the file change applied")
            assert root.level == logging.DEBUG
            assert app.lake.settings.poll_interval == 0.05  # live: the tip watcher polls at the new pace
            assert app.service.settings.readahead_bytes == 8 << 20  # new-streams
            assert app.service.max_streams == 1
            (applied,) = records(caplog, "changed: applied")
            assert "LOG_LEVEL=debug" in applied and "POLL_INTERVAL=50ms" in applied
            assert "MAX_CONCURRENT_STREAMS=1" in applied and "READAHEAD_BYTES=8MiB" in applied

            code, details, _ = await status_of(addr, FIRST, FIRST)  # a new call meets the new limit
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details

            shutil.move(held_back, last_object)
            await asyncio.wait_for(task, 20)  # the open stream goes on, at the new poll interval
            assert received == list(range(FIRST, LAST + 1))
            assert (reloads(app, "refused"), reloads(app, "invalid")) == (0, 0)
    finally:
        root.setLevel(level)


async def test_a_reload_touching_restart_settings_is_refused_whole_one_line_each(tmp_path, caplog):
    config = tmp_path / "config.yaml"
    write(config, BASE)
    env = env_with_file(SHARED_LAKE, config)
    level = logging.getLogger().level
    async with running_app(env) as (app, _):
        app.enable_reload(env, interval=3600)
        before = app.config
        write(
            config,
            with_(
                monitoring={"log_level": "debug"},  # live, but the reload is refused whole
                storage={"cache_bytes": "128MiB", "timeout": "5s"},
                stream={"decode_workers": 3},
            ),
        )
        assert app.reload("SIGHUP") == "refused"
        assert app.config is before and app.reloader is not None and app.reloader.config is before
        assert logging.getLogger().level != logging.DEBUG
        refused = records(caplog, "SIGHUP: refused:")
        assert len(refused) == 3, refused
        for name in ("STORAGE_TIMEOUT", "CACHE_BYTES", "DECODE_WORKERS"):
            assert sum(f"refused: {name} changed" in line for line in refused) == 1, refused
        assert "needs a restart" in refused[0] and "old configuration stays" in refused[0]
        assert reloads(app, "refused") == 1 and reloads(app, "applied") == 0
        # The whole reload was refused: back to the running values, it applies.
        write(config, with_(monitoring={"log_level": "warning"}))
        assert app.reload("SIGHUP") == "applied"
        assert logging.getLogger().level == logging.WARNING
    logging.getLogger().setLevel(level)


async def test_an_invalid_reload_changes_nothing_and_says_why_in_one_line(tmp_path, caplog):
    config = tmp_path / "config.yaml"
    write(config, BASE)
    env = env_with_file(SHARED_LAKE, config)
    async with running_app(env) as (app, addr):
        app.enable_reload(env, interval=3600)
        before = app.config
        write(config, "server: [max_concurrent_streams: 1\n")
        assert app.reload("SIGHUP") == "invalid"
        write(config, with_(server={"max_concurrent_streams": 0}, monitoring={"log_level": "loud"}))
        assert app.reload("SIGHUP") == "invalid"
        assert app.config is before and app.service.max_streams == 5
        invalid = records(caplog, "configuration not reloaded")
        assert len(invalid) == 2, invalid
        assert "not valid YAML" in invalid[0]
        assert "max_concurrent_streams" in invalid[1] and "must be at least 1" in invalid[1]
        assert "LOG_LEVEL" in invalid[1] and "must be one of" in invalid[1]
        assert all("\n" not in line for line in invalid)
        assert reloads(app, "invalid") == 2
        code, _, n = await status_of(addr, FIRST, FIRST + 2)
        assert (code, n) == (grpc.StatusCode.OK, 3)


async def test_a_file_change_to_a_key_the_environment_sets_is_logged_as_having_no_effect(tmp_path, caplog):
    config = tmp_path / "config.yaml"
    write(config, BASE)
    env = env_with_file(SHARED_LAKE, config, MAX_CONCURRENT_STREAMS=7)
    async with running_app(env) as (app, _):
        app.enable_reload(env, interval=3600)
        assert app.service.max_streams == 7
        write(config, with_(server={"max_concurrent_streams": 9}))
        assert app.reload("SIGHUP") == "applied"
        assert app.service.max_streams == 7
        (line,) = records(caplog, "has no effect")
        assert "server.max_concurrent_streams" in line and "the environment sets MAX_CONCURRENT_STREAMS" in line
        assert records(caplog, "SIGHUP: nothing changed")


def test_a_kubernetes_style_symlink_swap_is_seen(tmp_path):
    """A ConfigMap volume: config.yaml -> ..data/config.yaml, ..data -> a
    timestamped folder, swapped atomically by renaming a new ..data link."""
    for name, level in (("..v1", "info"), ("..v2", "debug")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"monitoring: {{log_level: {level}}}\n")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    path = str(tmp_path / "config.yaml")
    seen: list[list[str]] = []
    watcher = FileWatcher(lambda: [path], seen.append, interval=0.01)
    assert watcher.poll() == []
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert watcher.poll() == [path]
    assert watcher.poll() == []


def wait_line(proc: Any, text: str, timeout: float = 10) -> str:
    """The next line of the server's output holding ``text`` (others skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        (line,) = read_lines(proc, 1, timeout=max(0.1, deadline - time.monotonic()))
        if text in line:
            return line


def test_sighup_and_a_file_change_reload_a_running_server(tmp_path):
    config = tmp_path / "config.yaml"
    write(config, BASE)
    with server_process(env_with_file(SHARED_LAKE, config)) as srv:
        srv.proc.send_signal(signal.SIGHUP)
        wait_line(srv.proc, "SIGHUP: nothing changed")
        write(config, with_(server={"max_concurrent_streams": 2}, storage={"retry_attempts": 3}))
        line = wait_line(srv.proc, "config.yaml changed: ")  # the watcher polls each second
        assert "applied" in line and "MAX_CONCURRENT_STREAMS=2" in line and "RETRY_ATTEMPTS=3" in line, line
        write(config, with_(server={"max_concurrent_streams": 2}, storage={"cache_bytes": "1MiB"}))
        line = wait_line(srv.proc, "config.yaml changed: ")
        assert "refused: CACHE_BYTES changed" in line, line
        metrics = http_get(srv.url("/metrics"))[1].decode()
        for result, n in (("applied", 2), ("refused", 1), ("invalid", 0)):
            assert f'stellar_live_source_config_reloads_total{{result="{result}"}} {n}.0' in metrics


async def test_a_reload_of_keys_and_limits_during_a_stream_applies_to_new_calls_and_the_stream_goes_on(tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, lake)
    last_object = lake / LAST_OBJECT
    held_back = tmp_path / "held_back.xdr.zst"
    shutil.move(last_object, held_back)
    (tmp_path / "keys-a").write_text("alice:key-alice-1\nbob:key-bob-1\n")
    (tmp_path / "keys-b").write_text("# rotated\nbob:key-bob-2\n")
    security = {"api_key_required": True, "allow_insecure_api_keys": True}
    config = tmp_path / "config.yaml"
    write(config, with_(security={**security, "api_keys_file": str(tmp_path / "keys-a")}))
    env = env_with_file(lake, config)
    async with running_app(env) as (app, addr):
        assert app.lake is not None
        app.enable_reload(env, interval=3600)
        received: list[int] = []

        async def consume() -> None:
            async with Client(addr, max_retries=0, api_key="key-alice-1") as client:
                async for seq, _ in client.stream(FIRST, LAST, timeout=60):
                    received.append(seq)

        task = asyncio.create_task(consume())
        await until(lambda: app.lake is not None and app.lake.waiters == 1, 20, "the stream waiting at the tip")

        write(
            config,
            with_(
                security={**security, "api_keys_file": str(tmp_path / "keys-b")},
                limits={"max_streams_per_client": 1, "rate_limit_rps": 5},
            ),
        )
        assert app.reload("SIGHUP") == "applied"
        assert (app.door.limits.max_streams_per_client, app.door.limits.rate_limit_rps) == (1, 5)
        await until(lambda: app.keys.name_of("key-bob-2") == "bob", 10, "the new keys file read")

        async def first_of(key: str) -> tuple[grpc.StatusCode, int]:
            n = 0
            async with Client(addr, max_retries=0, api_key=key) as client:
                try:
                    async for _ in client.stream(FIRST, FIRST + 1, timeout=20):
                        n += 1
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), n
            return grpc.StatusCode.OK, n

        assert await first_of("key-alice-1") == (grpc.StatusCode.UNAUTHENTICATED, 0)  # gone from the new file
        assert await first_of("key-bob-2") == (grpc.StatusCode.OK, 2)

        shutil.move(held_back, last_object)
        await asyncio.wait_for(task, 20)  # the stream opened with the old key goes on
        assert received == list(range(FIRST, LAST + 1))
