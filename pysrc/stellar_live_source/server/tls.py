"""TLS for the gRPC port (mutual when a client CA is set) and the HTTP listeners,
from files that can be replaced while the service runs.

The files are read and checked here: a half-configured setup (a certificate
without its key, a file that cannot be read, a key that does not match the
certificate, an expired certificate, a client CA file holding no CA) is a
``ConfigError`` naming the setting and the file.

Rotation: a watcher task polls the files with ``os.stat`` (following
symlinks, so a Kubernetes Secret's atomic ``..data`` swap is seen), and when
one changed it reads and checks the set again off the event loop. A good set
is published; a bad one is logged once and the old one kept. gRPC asks
``_fetch`` at every handshake, on its own threads: it only hands over what the
watcher already loaded (or None when nothing changed), never reads a file or
touches the event loop. The HTTP listeners' ``ssl.SSLContext`` switches each
new connection to the newest context (in its SNI callback, which OpenSSL calls
for every handshake, SNI or not); open connections and streams keep theirs.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..ops.config import Config, SecurityConfig
    from ..ops.metrics import Metrics

log = logging.getLogger("stellar_live_source.tls")

#: How often the watcher looks at the files, in seconds.
POLL_SECONDS = 1.0

Signature = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True)
class Paths:
    cert: str
    key: str
    client_ca: str  # "": no client certificate asked for

    @classmethod
    def of(cls, security: SecurityConfig) -> Paths:
        return cls(security.tls_cert_path, security.tls_key_path, security.tls_client_ca_path)

    def named(self) -> list[tuple[str, str]]:
        pairs = [("TLS_CERT_PATH", self.cert), ("TLS_KEY_PATH", self.key)]
        return pairs + ([("TLS_CLIENT_CA_PATH", self.client_ca)] if self.client_ca else [])


@dataclass(frozen=True)
class Material:
    """One checked set of files."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None
    not_after: float  # the leaf certificate's expiry, Unix seconds
    serial: int


def _read(setting: str, path: str) -> bytes:
    if not path:
        raise ConfigError(f"TLS_ENABLED=true needs {setting}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"{setting}={path!r}: cannot read it ({exc.strerror})") from None


def load(paths: Paths, now: datetime.datetime | None = None) -> Material:
    """The files read and checked; ConfigError naming the setting and the file."""
    cert_pem = _read("TLS_CERT_PATH", paths.cert)
    key_pem = _read("TLS_KEY_PATH", paths.key)
    ca_pem = _read("TLS_CLIENT_CA_PATH", paths.client_ca) if paths.client_ca else None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"TLS_CERT_PATH={paths.cert!r}: holds no PEM certificate") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"TLS_KEY_PATH={paths.key!r}: holds no unencrypted PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ConfigError(f"TLS_KEY_PATH={paths.key!r} does not match the certificate in TLS_CERT_PATH={paths.cert!r}")
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(
            f"TLS_CERT_PATH={paths.cert!r}: the certificate expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if ca_pem is not None:
        try:
            cas = x509.load_pem_x509_certificates(ca_pem)
        except ValueError:
            raise ConfigError(f"TLS_CLIENT_CA_PATH={paths.client_ca!r}: holds no PEM certificate") from None
        if not any(_is_ca(c) for c in cas):
            raise ConfigError(f"TLS_CLIENT_CA_PATH={paths.client_ca!r}: holds no CA certificate")
    return Material(cert_pem, key_pem, ca_pem, leaf.not_valid_after_utc.timestamp(), leaf.serial_number)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signature(paths: Paths) -> Signature:
    """What identifies each file's content, through symlinks: a swap or a rewrite changes it."""
    out: list[tuple[int, int, int] | None] = []
    for _, path in paths.named():
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _http_context(m: Material) -> ssl.SSLContext:
    """A server context for the HTTP listeners: the same certificate, never asks for a client's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a chain from files only: a private temporary file, gone at once.
    fd, name = tempfile.mkstemp(prefix="sls-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(m.key_pem.rstrip(b"\n") + b"\n" + m.cert_pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)
    return ctx


def _grpc_configuration(m: Material) -> Any:
    return grpc.ssl_server_certificate_configuration([(m.key_pem, m.cert_pem)], root_certificates=m.client_ca_pem)


@dataclass(frozen=True)
class _Loaded:
    generation: int
    material: Material
    grpc_config: Any
    http_context: ssl.SSLContext


class TlsWatcher:
    """The TLS files, checked at construction (ConfigError), then watched."""

    def __init__(self, security: SecurityConfig, metrics: Metrics | None = None, interval: float | None = None) -> None:
        self.interval = POLL_SECONDS if interval is None else interval
        self._metrics = metrics
        self._paths = Paths.of(security)
        self._signature = _signature(self._paths)
        self._current = self._build(load(self._paths), 1)
        self._served = 1  # the generation gRPC was last handed
        self._failed: str | None = None  # the last bad set's message, logged once
        self._task: asyncio.Task[None] | None = None
        self._publish_gauge()
        # The listeners' own context: each handshake is switched to the newest one.
        self._base = self._current.http_context
        self._base.sni_callback = self._sni

    @property
    def mutual(self) -> bool:
        return bool(self._paths.client_ca)

    @property
    def material(self) -> Material:
        return self._current.material

    @property
    def generation(self) -> int:
        return self._current.generation

    def _build(self, m: Material, generation: int) -> _Loaded:
        return _Loaded(generation, m, _grpc_configuration(m), _http_context(m))

    def _publish_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.tls_cert_expiry.set(self._current.material.not_after)

    # -- what listeners use --
    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC credentials that pick up new certificates at the next handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._current.grpc_config, self._fetch, require_client_authentication=self.mutual
        )

    def http_context(self) -> ssl.SSLContext:
        return self._base

    def _fetch(self) -> Any:
        """On gRPC's threads, at every handshake: the newest configuration once, else None."""
        current = self._current  # one read: the watcher replaces it whole
        if current.generation == self._served:
            return None
        self._served = current.generation
        return current.grpc_config

    def _sni(self, sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self._current.http_context
        if current is not self._base:
            sock.context = current

    # -- watching --
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # never the end of watching: the next look may succeed
                log.exception("checking the TLS files failed")

    async def check(self) -> bool:
        """Look at the files once; True when a new set was loaded."""
        paths = self._paths
        signature = await asyncio.to_thread(_signature, paths)
        if signature == self._signature:
            return False
        try:
            material = await asyncio.to_thread(load, paths)
            loaded = await asyncio.to_thread(self._build, material, self._current.generation + 1)
        except (ConfigError, ssl.SSLError, OSError) as exc:
            message = str(exc)
            if message != self._failed:
                log.error("TLS files changed but cannot be used, keeping the previous certificate: %s", message)
                self._failed = message
            return False
        if paths != self._paths:  # update() moved on meanwhile
            return False
        self._signature, self._failed = signature, None
        self._current = loaded
        self._publish_gauge()
        log.info(
            "TLS certificate reloaded from %s (serial %x, expires %s UTC)",
            paths.cert,
            material.serial,
            datetime.datetime.fromtimestamp(material.not_after, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
        return True

    def update(self, config: Config) -> None:
        """New paths from a configuration reload, loaded and checked now (blocking
        file reads: call it off the event loop or accept a few small reads).
        ConfigError, and the old set kept, when the new set is bad or when mutual
        TLS would be switched on or off (fixed when the port was opened)."""
        paths = Paths.of(config.security)
        if bool(paths.client_ca) != self.mutual:
            raise ConfigError(f"TLS_CLIENT_CA_PATH={paths.client_ca!r}: switching mutual TLS on or off needs a restart")
        if paths == self._paths:
            return
        signature = _signature(paths)
        loaded = self._build(load(paths), self._current.generation + 1)
        self._paths, self._signature, self._failed = paths, signature, None
        self._current = loaded
        self._publish_gauge()
        log.info("TLS files now %s", ", ".join(f"{k}={v}" for k, v in paths.named()))
