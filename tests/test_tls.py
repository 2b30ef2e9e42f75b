"""TLS and mutual TLS on the gRPC port and the HTTP listeners, with certificates
the tests make: handshakes (good, no client certificate, wrong CA), start-up
refusing half-configured setups, rotation during an open stream, the expiry
gauge; the client and the CLI's TLS files and API key."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellar_live_source import api
from stellar_live_source.client import Client
from stellar_live_source.core.frame import raw_ledger_frame
from stellar_live_source.core.keys import Layout
from stellar_live_source.errors import ConfigError
from stellar_live_source.ops.config import load
from stellar_live_source.server import tls

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, cli_process, env_for, running_app, until
from .tls_support import Issued, SecretDir, issue, make_ca, write_atomic

pytestmark = needs_testdata

FIRST, LAST = 1410048, 1410367
LAYOUT = Layout(64, 10)
GAUGE = "stellar_live_source_tls_cert_expiry_timestamp_seconds"


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    ca, other = make_ca("test CA"), make_ca("another CA")
    return {
        "ca": ca,
        "other_ca": other,
        "server": issue(ca, "server"),
        "server2": issue(other, "server, rotated"),
        "expired": issue(ca, "server, expired", expired=True),
        "client": issue(ca, "client", server=False),
        "stranger": issue(other, "stranger", server=False),
    }


def files(tmp_path: Path, pki: dict[str, Issued]) -> dict[str, str]:
    """Every certificate and key as PEM files: NAME.crt, NAME.key; ca.crt and other_ca.crt."""
    out = {}
    for name, issued in pki.items():
        (tmp_path / f"{name}.crt").write_bytes(issued.cert_pem)
        (tmp_path / f"{name}.key").write_bytes(issued.key_pem)
        out[name] = str(tmp_path / f"{name}.crt")
        out[f"{name}_key"] = str(tmp_path / f"{name}.key")
    return out


def tls_env(f: dict[str, str], lake: Path | str = SHARED_LAKE, mutual: bool = False, **extra: Any) -> dict[str, str]:
    env = env_for(lake, TLS_ENABLED="true", TLS_CERT_PATH=f["server"], TLS_KEY_PATH=f["server_key"], **extra)
    if mutual:
        env["TLS_CLIENT_CA_PATH"] = f["ca"]
    return env


def https_get(port: int | None, path: str, cafile: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=10, context=ctx) as r:
        return r.status, r.read()


def peer_serial(port: int | None, cafile: str, alpn: bool = True) -> int:
    """The serial of the certificate a new TLS connection to ``port`` is shown (verified against ``cafile``)."""
    ctx = ssl.create_default_context(cafile=cafile)
    if alpn:
        ctx.set_alpn_protocols(["h2"])
    assert port is not None
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def _health(addr: str, creds: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(addr, creds) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return resp.status


async def test_tls_streams_health_and_http_over_tls_and_the_expiry_gauge(tmp_path, pki):
    f = files(tmp_path, pki)
    async with running_app(tls_env(f)) as (app, addr):
        async with Client(addr, tls_ca=f["ca"]) as client:
            got = [s async for s, _ in client.stream(FIRST, FIRST + 4, timeout=20)]
        assert got == list(range(FIRST, FIRST + 5))
        # gRPC health is on the same TLS port.
        assert (
            await _health(addr, grpc.ssl_channel_credentials(pki["ca"].cert_pem))
            == health_pb2.HealthCheckResponse.SERVING
        )
        # Plain text to a TLS port gets nowhere.
        async with Client(addr, max_retries=0) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                _ = [x async for x in plain.stream(FIRST, FIRST, timeout=5)]
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # The HTTP listeners serve TLS from the same files; /metrics exports the expiry.
        assert app.bound is not None
        status, _ = await asyncio.to_thread(https_get, app.bound.health_port, "/health", f["ca"])
        assert status == 200
        status, body = await asyncio.to_thread(https_get, app.bound.metrics_port, "/metrics", f["ca"])
        expiry = pki["server"].cert.not_valid_after_utc.timestamp()
        assert status == 200 and _gauge(body) == expiry


def _gauge(body: bytes) -> float:
    for line in body.decode().splitlines():
        if line.startswith(GAUGE + " "):
            return float(line.split()[1])
    raise AssertionError(f"{GAUGE} not in /metrics")


async def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca_at_the_handshake(tmp_path, pki):
    f = files(tmp_path, pki)
    async with running_app(tls_env(f, mutual=True)) as (app, addr):
        async with Client(addr, tls_ca=f["ca"], tls_cert=f["client"], tls_key=f["client_key"]) as client:
            got = [s async for s, _ in client.stream(FIRST, FIRST + 2, timeout=20)]
        assert got == [FIRST, FIRST + 1, FIRST + 2]
        for cert, key in ((None, None), (f["stranger"], f["stranger_key"])):
            async with Client(addr, tls_ca=f["ca"], tls_cert=cert, tls_key=key, max_retries=0) as refused:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    _ = [x async for x in refused.stream(FIRST, FIRST, timeout=5)]
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (cert, e.value)  # no connection: the handshake failed
        # At the handshake itself: a raw TLS client without a certificate is refused before any request.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(_handshake_and_read, addr, f["ca"])
        # Probes never need a client certificate.
        assert app.bound is not None
        status, _ = await asyncio.to_thread(https_get, app.bound.health_port, "/ready", f["ca"])
        assert status == 200


def _handshake_and_read(addr: str, cafile: str) -> None:
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        # TLS 1.3: the server's refusal of the (absent) client certificate arrives with the first read.
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        if not s.recv(1):
            raise ConnectionError("closed")


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "no key",
        "key not matching",
        "unreadable cert",
        "unreadable key",
        "client CA not a CA",
        "client CA garbage",
    ],
)
async def test_a_half_configured_tls_setup_is_refused_at_start_naming_the_setting_and_the_file(tmp_path, pki, case):
    f = files(tmp_path, pki)
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    extra = {
        "expired": {"TLS_CERT_PATH": f["expired"], "TLS_KEY_PATH": f["expired_key"]},
        "no key": {"TLS_KEY_PATH": ""},
        "key not matching": {"TLS_KEY_PATH": f["client_key"]},
        "unreadable cert": {"TLS_CERT_PATH": str(tmp_path / "missing.crt")},
        "unreadable key": {"TLS_KEY_PATH": str(tmp_path)},  # a folder: cannot be read as a file
        "client CA not a CA": {"TLS_CLIENT_CA_PATH": f["client"]},
        "client CA garbage": {"TLS_CLIENT_CA_PATH": str(tmp_path / "garbage.pem")},
    }[case]
    env = tls_env(f) | extra
    with pytest.raises(ConfigError) as e:
        async with running_app(env):
            pass
    message = str(e.value)
    setting, path = {
        "expired": ("TLS_CERT_PATH", f["expired"]),
        "no key": ("TLS_KEY_PATH", ""),
        "key not matching": ("TLS_KEY_PATH", f["client_key"]),
        "unreadable cert": ("TLS_CERT_PATH", str(tmp_path / "missing.crt")),
        "unreadable key": ("TLS_KEY_PATH", str(tmp_path)),
        "client CA not a CA": ("TLS_CLIENT_CA_PATH", f["client"]),
        "client CA garbage": ("TLS_CLIENT_CA_PATH", str(tmp_path / "garbage.pem")),
    }[case]
    assert setting in message and path in message, message
    if case == "expired":
        assert "expired" in message
    if case == "key not matching":
        assert f["server"] in message  # the certificate it does not match, named too


def test_api_keys_without_tls_are_refused_unless_insecure_keys_are_allowed():
    with pytest.raises(ConfigError) as e:
        load({"API_KEY_REQUIRED": "true"})
    assert "API_KEY_REQUIRED" in str(e.value) and "ALLOW_INSECURE_API_KEYS" in str(e.value)
    assert load({"API_KEY_REQUIRED": "true", "ALLOW_INSECURE_API_KEYS": "true"}).security.api_key_required
    assert load(
        {"API_KEY_REQUIRED": "true", "TLS_ENABLED": "true", "TLS_CERT_PATH": "/c", "TLS_KEY_PATH": "/k"}
    ).security.tls_enabled


def _objects(lake: Path) -> list[Path]:
    return sorted(lake.rglob("*.xdr.zst"))


@pytest.mark.parametrize("how", ["rename", "symlink swap"])
async def test_rotation_new_connections_get_the_new_certificate_and_an_open_stream_goes_on(
    tmp_path, pki, monkeypatch, how
):
    monkeypatch.setattr(tls, "POLL_SECONDS", 0.1)
    f = files(tmp_path, pki)
    # A lake with the first two objects; the rest land after the rotation.
    lake = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, lake)
    held = tmp_path / "held"
    for p in _objects(lake):
        if LAYOUT.parse_key(str(p.relative_to(lake)))[0] not in (FIRST // 64 * 64, 1410112):
            dst = held / p.relative_to(lake)
            dst.parent.mkdir(parents=True, exist_ok=True)
            p.rename(dst)
    # The served files, replaced by a rename or as Kubernetes swaps a Secret's ..data.
    secret = SecretDir(tmp_path / "secret")
    if how == "symlink swap":
        secret.write({"tls.crt": pki["server"].cert_pem, "tls.key": pki["server"].key_pem})
        cert, key = secret.path("tls.crt"), secret.path("tls.key")
    else:
        cert, key = str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
        write_atomic(Path(cert), pki["server"].cert_pem)
        write_atomic(Path(key), pki["server"].key_pem)
    both_cas = tmp_path / "both.crt"
    both_cas.write_bytes(pki["ca"].cert_pem + pki["other_ca"].cert_pem)
    env = env_for(lake, TLS_ENABLED="true", TLS_CERT_PATH=cert, TLS_KEY_PATH=key)
    async with running_app(env) as (app, addr):
        assert app.bound is not None and app.tls is not None
        port = app.bound.grpc_port
        assert await asyncio.to_thread(peer_serial, port, str(both_cas)) == pki["server"].serial
        got: list[int] = []
        async with Client(addr, tls_ca=f["ca"]) as client:

            async def consume() -> None:
                async for seq, _ in client.stream(FIRST, LAST, timeout=60):
                    got.append(seq)

            stream = asyncio.create_task(consume())
            await until(lambda: len(got) >= 128, 20, "the ledgers of the first two objects")

            new = pki["server2"]
            if how == "symlink swap":
                secret.write({"tls.crt": new.cert_pem, "tls.key": new.key_pem})
            else:  # key first, then the certificate: the half-way set is refused, the old one kept
                write_atomic(Path(key), new.key_pem)
                await asyncio.sleep(0.3)
                assert await asyncio.to_thread(peer_serial, port, str(both_cas)) == pki["server"].serial
                write_atomic(Path(cert), new.cert_pem)
            await until(lambda: app.tls is not None and app.tls.material.serial == new.serial, 5, "the reload")
            # A new connection is shown the new certificate: gRPC and HTTP.
            assert await asyncio.to_thread(peer_serial, port, str(both_cas)) == new.serial
            assert await asyncio.to_thread(peer_serial, app.bound.health_port, str(both_cas), False) == new.serial
            async with Client(addr, tls_ca=f["other_ca"]) as fresh:
                assert [s async for s, _ in fresh.stream(FIRST, FIRST, timeout=10)] == [FIRST]
            _, body = await asyncio.to_thread(https_get, app.bound.metrics_port, "/metrics", str(both_cas))
            assert _gauge(body) == new.cert.not_valid_after_utc.timestamp()

            # The open stream goes on: the rest of the lake lands and arrives on it.
            for p in _objects(held):
                dst = lake / p.relative_to(held)
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_suffix(".tmp")
                shutil.copyfile(p, tmp)
                tmp.rename(dst)
            await asyncio.wait_for(stream, 30)
            assert got == list(range(FIRST, LAST + 1))
            assert client.retries == 0  # the same call throughout


async def test_a_bad_rotation_is_logged_once_and_the_old_certificate_kept(tmp_path, pki, caplog):
    f = files(tmp_path, pki)
    watcher = tls.TlsWatcher(load(tls_env(f)).security, interval=0.05)
    before = watcher.generation
    Path(f["server"]).write_bytes(pki["expired"].cert_pem)
    Path(f["server_key"]).write_bytes(pki["expired"].key_pem)
    watcher.start()
    try:
        await asyncio.sleep(0.4)
    finally:
        await watcher.stop()
    assert watcher.generation == before and watcher.material.serial == pki["server"].serial
    errors = [r for r in caplog.records if r.name == "stellar_live_source.tls" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "expired" in errors[0].getMessage()
    assert watcher._fetch() is None  # nothing new for gRPC


def test_update_points_the_watcher_at_new_files_or_refuses_them(tmp_path, pki):
    f = files(tmp_path, pki)
    watcher = tls.TlsWatcher(load(tls_env(f)).security)
    assert watcher._fetch() is None
    watcher.update(load(tls_env(f) | {"TLS_CERT_PATH": f["server2"], "TLS_KEY_PATH": f["server2_key"]}))
    assert watcher.material.serial == pki["server2"].serial
    assert watcher._fetch() is not None and watcher._fetch() is None  # handed to gRPC once
    with pytest.raises(ConfigError, match="TLS_KEY_PATH"):
        watcher.update(load(tls_env(f) | {"TLS_KEY_PATH": f["client_key"]}))
    assert watcher.material.serial == pki["server2"].serial  # the old set kept
    with pytest.raises(ConfigError, match="TLS_CLIENT_CA_PATH"):
        watcher.update(load(tls_env(f, mutual=True)))


# -- the client and the CLI: TLS files and the API key --


async def _recording_peer(creds: grpc.ServerCredentials | None = None):
    """A StreamRawLedgers server that records each call's metadata and sends one ledger."""
    seen: list[dict[str, str]] = []

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        await context.write(raw_ledger_frame(request.start_ledger, b"\0\0\0\0", 0, 4))

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[Any, bytes] = grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=api.StreamLedgersRequest.FromString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(api.SERVICE, {"StreamRawLedgers": handler}),))
    port = server.add_secure_port("127.0.0.1:0", creds) if creds else server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}", seen


async def test_the_client_sends_the_api_key_as_a_bearer_token_on_every_call(tmp_path, pki):
    f = files(tmp_path, pki)
    creds = grpc.ssl_server_credentials([(pki["server"].key_pem, pki["server"].cert_pem)])
    server, addr, seen = await _recording_peer(creds)
    try:
        async with Client(addr, tls_ca=f["ca"], api_key="s3cret\n") as client:
            for _ in range(2):
                assert [s async for s, _ in client.stream(7, 7)] == [7]
    finally:
        await server.stop(None)
    assert [m.get("authorization") for m in seen] == ["Bearer s3cret", "Bearer s3cret"]
    with pytest.raises(ValueError):
        Client(addr, tls_cert=f["client"])  # a certificate without its key


@pytest.mark.parametrize("source", ["env", "file"])
async def test_the_cli_takes_tls_files_and_the_key_from_the_environment_or_a_file_never_a_flag(tmp_path, pki, source):
    f = files(tmp_path, pki)
    creds = grpc.ssl_server_credentials(
        [(pki["server"].key_pem, pki["server"].cert_pem)],
        root_certificates=pki["ca"].cert_pem,
        require_client_auth=True,
    )
    server, addr, seen = await _recording_peer(creds)
    key_file = tmp_path / "key"
    key_file.write_text("\nfromfile\n")  # the first line that is not empty
    args = ["stream", "--server", addr, "--from", "5", "--to", "5", "--ca", f["ca"], "--out", str(tmp_path / "out")]
    args += ["--cert", f["client"], "--key", f["client_key"]]
    env = {"STELLAR_LIVE_SOURCE_API_KEY": "fromenv"}
    if source == "file":
        args += ["--api-key-file", str(key_file)]
    try:
        proc = cli_process(*args, env=env)
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        await server.stop(None)
    assert proc.returncode == 0, err
    assert (tmp_path / "out" / "5.xdr").read_bytes() == b"\0\0\0\0"
    key = "fromfile" if source == "file" else "fromenv"
    assert seen == [seen[0]] and seen[0]["authorization"] == f"Bearer {key}"
    assert key not in out + err
    # No flag takes a key's value.
    proc = cli_process("stream", "--server", addr, "--from", "5", "--api-key", "x")
    _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode != 0 and "unrecognized arguments" in err
