"""API keys (issue 13): the keys file and its watcher, and the door in front of
every ledger RPC: right, wrong and missing keys in both header forms, health
and reflection open, failures counted by reason and no key anywhere in
metrics or logs."""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stellar_live_source import api
from stellar_live_source.errors import ConfigError
from stellar_live_source.server import keys as keys_module
from stellar_live_source.server.door import peer_ip, presented_key
from stellar_live_source.server.keys import ApiKeys, fingerprint, parse_keys

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, env_for, running_app, until

FIRST = 1410048
KEY_A = "sk-alice-0123456789abcdef"
KEY_B = "sk-bare-fedcba9876543210"
WRONG = "sk-nobody-0000000000000000"
KEYS_TEXT = f"# test keys\n\nalice:{KEY_A}\n  # indented comment\n{KEY_B}\n\n"


# -- the keys file --
def test_keys_file_formats():
    keys = parse_keys(KEYS_TEXT)
    assert sorted(keys) == sorted(["alice", fingerprint(KEY_B)])
    assert KEY_B not in fingerprint(KEY_B) and fingerprint(KEY_B).startswith("key-")
    assert all(KEY_A.encode() not in d and KEY_B.encode() not in d for d in keys.values())  # digests only


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "alice:\n", ":sk-x\n", "a:k1\na:k2\n", "a:k1\nb:k1\n", "a:two words\n"]
)
def test_bad_keys_files_are_refused_without_quoting_a_key(text):
    with pytest.raises(ValueError) as err:
        parse_keys(text)
    assert "k1" not in str(err.value) and "sk-x" not in str(err.value) and "words" not in str(err.value)


def test_unreadable_or_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        ApiKeys(str(tmp_path / "absent")).load()
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        ApiKeys("").load()
    bad = tmp_path / "bad"
    bad.write_text(f"alice:{KEY_A}\nalice:{KEY_B}\n")
    with pytest.raises(ConfigError) as err:
        ApiKeys(str(bad)).load()
    assert KEY_A not in str(err.value) and KEY_B not in str(err.value)


def test_compare_is_constant_time_against_every_key(tmp_path, monkeypatch):
    path = tmp_path / "keys"
    path.write_text("".join(f"k{i}:secret-{i}\n" for i in range(5)))
    keys = ApiKeys(str(path))
    keys.load()
    calls: list[tuple[bytes, bytes]] = []
    real = keys_module.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    for presented, want in [("secret-0", "k0"), ("secret-4", "k4"), ("nope", None), ("", None)]:
        calls.clear()
        assert keys.name_of(presented) == want
        assert len(calls) == 5  # every key, whether the first matched or none did
        assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: the length says nothing


def _symlinked_secret(root: Path, version: str, text: str) -> None:
    """A Kubernetes Secret volume: keys -> ..data/keys, ..data -> ..<version>, swapped atomically."""
    (root / f"..{version}").mkdir()
    (root / f"..{version}" / "keys").write_text(text)
    tmp = root / "..data_tmp"
    os.symlink(f"..{version}", tmp)
    os.replace(tmp, root / "..data")
    if not (root / "keys").is_symlink():
        os.symlink("..data/keys", root / "keys")


async def test_keys_reload_on_symlink_swap_and_keep_old_on_a_bad_file(tmp_path, caplog):
    _symlinked_secret(tmp_path, "v1", f"alice:{KEY_A}\n")
    keys = ApiKeys(str(tmp_path / "keys"), interval=0.02)
    keys.load()
    assert keys.name_of(KEY_A) == "alice" and keys.name_of(KEY_B) is None
    keys.start()
    try:
        _symlinked_secret(tmp_path, "v2", f"bob:{KEY_B}\n")
        await until(lambda: keys.name_of(KEY_B) == "bob", 5, "the swapped Secret read")
        assert keys.name_of(KEY_A) is None
        caplog.set_level(logging.INFO, "stellar_live_source")
        _symlinked_secret(tmp_path, "v3", "bob:\n")  # invalid: the old keys stay
        await asyncio.sleep(0.2)
        assert keys.name_of(KEY_B) == "bob"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "API_KEYS_FILE" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once, not at every poll
        os.unlink(tmp_path / "..data")  # unreadable: still the old keys
        await asyncio.sleep(0.1)
        assert keys.name_of(KEY_B) == "bob"
        _symlinked_secret(tmp_path, "v4", f"carol:{KEY_A}\n")
        await until(lambda: keys.name_of(KEY_A) == "carol", 5, "a good file after bad ones")
    finally:
        await keys.stop()
    text = caplog.text
    assert KEY_A not in text and KEY_B not in text


def test_header_forms_and_peers():
    assert presented_key([("authorization", "Bearer abc")]) == "abc"
    assert presented_key([("authorization", "bearer  abc ")]) == "abc"
    assert presented_key([("authorization", "Basic abc")]) is None
    assert presented_key([("x-api-key", "abc")]) == "abc"
    assert presented_key([("other", "abc")]) is None and presented_key(None) is None
    assert peer_ip("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert peer_ip("ipv6:[::1]:5555") == "::1"
    assert peer_ip("ipv6:%5B::1%5D:5555").startswith("%5B") or True  # tolerated, never raises
    assert peer_ip("unix:/tmp/s") == "unix:/tmp/s" and peer_ip("") == "unknown"


# -- the door, over loopback --
def auth_env(keys_file: Path, **extra: object) -> dict[str, str]:
    return env_for(
        SHARED_LAKE,
        API_KEY_REQUIRED="true",
        API_KEYS_FILE=str(keys_file),
        ALLOW_INSECURE_API_KEYS="true",
        LOG_LEVEL="debug",
        **extra,
    )


async def call(channel: Any, method: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    """One call of the ledger service; its final status."""
    try:
        if method == "stream":
            req = api.StreamLedgersRequest(start_ledger=FIRST, end_ledger=FIRST + 2).SerializeToString()
            stream = channel.unary_stream(api.STREAM_METHOD)(req, metadata=metadata, timeout=10)
            got = [m async for m in stream]
            assert len(got) == 3
        else:
            req = api.GetLedgerRangeRequest(start_ledger=FIRST, end_ledger=FIRST + 3).SerializeToString()
            await channel.unary_unary(api.RANGE_METHOD)(req, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def channel(addr: str) -> Any:
    """A loopback channel, typed loosely: these tests send raw bytes and metadata by hand."""
    return grpc.aio.insecure_channel(addr)


def scrape(port: int | None) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def counter(text: str, name: str, **labels: str) -> float:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@needs_testdata
async def test_keys_right_wrong_and_missing_on_every_rpc(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    keys_file = tmp_path / "keys"
    keys_file.write_text(KEYS_TEXT)
    async with running_app(auth_env(keys_file)) as (app, addr), channel(addr) as ch:
        assert app.lake is not None
        fetches = app.lake.fetches
        for method in ("stream", "range"):
            for key in (KEY_A, KEY_B):
                assert await call(ch, method, (("authorization", f"Bearer {key}"),)) == grpc.StatusCode.OK
                assert await call(ch, method, (("x-api-key", key),)) == grpc.StatusCode.OK
        reads = app.lake.fetches - fetches
        for method in ("stream", "range"):
            for md in ((("authorization", f"Bearer {WRONG}"),), (("x-api-key", WRONG),)):
                assert await call(ch, method, md) == grpc.StatusCode.UNAUTHENTICATED
            absent: list[tuple[tuple[str, str], ...]] = [(), (("authorization", f"Basic {KEY_A}"),)]
            for md2 in [*absent, (("authorization", "Bearer "),)]:
                assert await call(ch, method, md2) == grpc.StatusCode.UNAUTHENTICATED
        assert app.lake.fetches - fetches == reads  # refused before any storage work
        assert not app.door.open_calls  # every call released its count

        # health and reflection: open without a key
        health = health_pb2_grpc.HealthStub(ch)
        resp = await health.Check(health_pb2.HealthCheckRequest(service=api.SERVICE), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for a in answers for s in a.list_services_response.service]
        assert api.SERVICE in names

        text = await asyncio.to_thread(scrape, app.bound.metrics_port if app.bound else None)
    assert counter(text, "stellar_live_source_auth_failures_total", reason="wrong") == 4
    assert counter(text, "stellar_live_source_auth_failures_total", reason="missing") == 6
    for secret in (KEY_A, KEY_B, WRONG):
        assert secret not in text
        assert secret not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


@needs_testdata
async def test_without_api_key_required_no_key_is_needed(tmp_path):
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        assert await call(ch, "stream", ()) == grpc.StatusCode.OK
        assert await call(ch, "range", (("x-api-key", WRONG),)) == grpc.StatusCode.OK


@needs_testdata
async def test_the_keys_file_is_reloaded_while_serving(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"alice:{KEY_A}\n")
    async with running_app(auth_env(keys_file)) as (app, addr), channel(addr) as ch:
        app.keys.interval = 0.05
        assert await call(ch, "range", (("x-api-key", KEY_B),)) == grpc.StatusCode.UNAUTHENTICATED
        tmp = tmp_path / "keys.new"
        tmp.write_text(f"alice:{KEY_A}\nbob:{KEY_B}\n")
        os.replace(tmp, keys_file)
        assert await app.keys.check() or app.keys.name_of(KEY_B) == "bob"
        assert await call(ch, "range", (("x-api-key", KEY_B),)) == grpc.StatusCode.OK


def test_api_key_required_without_a_keys_file_refuses_to_start():
    from stellar_live_source import parts
    from stellar_live_source.ops.config import load
    from stellar_live_source.server.app import App

    env = env_for(SHARED_LAKE, API_KEY_REQUIRED="true", ALLOW_INSECURE_API_KEYS="true")

    async def start() -> None:
        app = App(parts.build(load(env)))
        await app.start()
        await app.stop(0)

    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        asyncio.run(start())
