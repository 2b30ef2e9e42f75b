"""The application: starts the parts in order, stops them in reverse.

Start: the HTTP listeners (health, metrics), the gRPC server (the ledger
service, ``grpc.health.v1`` and reflection) not yet serving, then the lake
(checked, its manifest read) and its newest ledger: ready. The oldest ledger is
looked up in the background. SIGTERM/SIGINT: not ready, streams told to end
with UNAVAILABLE (clients resume elsewhere), stop with grace, close the lake.

Readiness is one rule (``ops.readiness``): ``/ready`` and the gRPC health
status of both the ``""`` service and the ledger service follow it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__, api
from ..control.flowctl import Registrar
from ..control.identity import identity, numbers
from ..core import BACKEND, index
from ..core.zstd import ZSTD_VERSION
from ..errors import ConfigError
from ..lake.lake import Lake
from ..ops import tracing
from ..ops.config import Config, load
from ..ops.metrics import CallObserver
from ..ops.readiness import DRAINING, STARTING, STORAGE
from ..ops.reload import Change, FileWatcher, Reloader, watched_files
from .door import Door
from .http import Listener, health_app, metrics_app
from .keys import ApiKeys
from .service import RawLedgerService
from .stream import OPEN_READAHEADS
from .tls import TlsWatcher
from .v1 import METRICS_LABEL, V1Service

if TYPE_CHECKING:
    from ..parts import Parts

log = logging.getLogger("stellar_live_source.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Bound:
    """Where the running app listens (the ports the kernel chose where 0 was asked)."""

    grpc_port: int
    health_port: int | None
    metrics_port: int | None


class App:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.config = parts.config
        self.metrics = parts.metrics
        self.readiness = parts.readiness
        self.lake: Lake | None = None
        self.service = RawLedgerService(
            parts.stream_settings, parts.metrics, parts.config.server.max_concurrent_streams
        )
        self.service.update(parts.config)
        self.v1 = V1Service(self)  # stellar.v1.RawLedgerService: the same lake, cache and limits
        # The door (API keys, per-client limits) in front of every ledger RPC.
        # A reload calls ``door.update(config)``: limits for new calls, the
        # keys file path (``keys.update``) and the service's limits.
        self.keys = ApiKeys(parts.config.security.api_keys_file)
        self.door = Door(parts.config, self.keys, parts.metrics)
        self.door.on_update(self.service.update)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.bound: Bound | None = None
        self._listeners: list[Listener] = []
        self.tls: TlsWatcher | None = None  # TLS_ENABLED: the files, watched; update(config) on reload
        self._background: set[asyncio.Task[Any]] = set()
        self._oldest_lookup: asyncio.Task[None] | None = None
        self._tip_refresh: asyncio.Task[None] | None = None
        self.readiness.watch(self._readiness_changed)
        self.metrics.readiness_changed(self.readiness.reasons)
        self.reloader: Reloader | None = None
        self._file_watch: asyncio.Task[None] | None = None
        self.registrar: Registrar | None = None  # ENABLE_FLOWCTL: the control plane's client
        self.hard_exit: Callable[[int], object] = os._exit  # a second signal: no drain, no cleanup

    # -- start --
    async def start(self) -> Bound:
        """Listen, then open the lake: ready when this returns."""
        bound = await self.listen()
        await self.open()
        return bound

    async def listen(self) -> Bound:
        """Every listener bound and answering, not yet ready."""
        try:
            return await self._listen()
        except BaseException:
            await self.stop(0)  # whatever started, stopped: a failed start leaves nothing behind
            raise

    async def _listen(self) -> Bound:
        c = self.config
        host = c.server.host
        health_port = metrics_port = None
        if c.security.tls_enabled:  # the files checked before anything listens
            self.tls = TlsWatcher(c.security, self.metrics)
            log.info("TLS on every port%s", " (mutual on gRPC: TLS_CLIENT_CA_PATH)" if self.tls.mutual else "")
        if c.server.health_enabled:
            health_port = await self._http(
                health_app(self.health_report, self.readiness), "HEALTH_PORT", c.server.health_port
            )
        if c.monitoring.metrics_enabled:
            metrics_port = await self._http(
                metrics_app(self.metrics.registry), "METRICS_PORT", c.monitoring.metrics_port
            )
        tracing.setup(c.monitoring.tracing_enabled)  # TRACING_ENABLED and the OTEL_* variables
        if c.security.api_key_required or c.security.api_keys_file:
            self.keys.load()  # ConfigError naming API_KEYS_FILE: refused before anything is served
        # Real ledgers pass 4 MiB: never cap what is sent; requests are tiny.
        self.server = grpc.aio.server(
            # The observer outermost: it sees every call end, the door's refusals too.
            interceptors=[
                CallObserver(self.metrics, api.SERVICE),
                CallObserver(self.metrics, api.V1_SERVICE, METRICS_LABEL),
                self.door,
            ],
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", 1 << 20),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.server.add_generic_rpc_handlers((self.service.handler(), self.v1.handler()))
        # grpcio's servicer reports "" as SERVING until told otherwise: not before the rule says so.
        await self._publish_health()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (api.SERVICE, api.V1_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server, pool=api.POOL)
        try:
            address = f"{_bracketed(host)}:{c.server.port}"
            if self.tls is not None:
                port = self.server.add_secure_port(address, self.tls.server_credentials())
            else:
                port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises where older releases returned 0
            raise ConfigError(f"SERVER_PORT={c.server.port}: cannot listen on {host}: {exc}") from None
        if port == 0:
            raise ConfigError(f"SERVER_PORT={c.server.port}: cannot listen on {host}")
        await self.server.start()
        self.keys.start()
        if self.tls is not None:
            self.tls.start()
        self.bound = Bound(port, health_port, metrics_port)
        log.info("listening on %s: %s", host, ", ".join(f"{k} {v}" for k, v in ports(self.bound).items() if v))
        self._start_registrar()
        return self.bound

    def _start_registrar(self) -> None:
        """ENABLE_FLOWCTL: register with the control plane and heartbeat, in the
        background (``control.flowctl``); the lake's part of the identity once open."""
        bound = self.bound
        if not self.config.flowctl.enabled or bound is None:
            return
        self.registrar = Registrar(
            self.config,
            lambda: identity(self.config, self.lake, bound.grpc_port, bound.health_port, os.environ),
            lambda: (self.readiness.status, numbers(self.metrics, self.service.active, self.lake)),
        )
        self.registrar.start()

    async def _http(self, app: Any, setting: str, port: int) -> int:
        listener = Listener(app, self.tls.http_context() if self.tls is not None else None)
        self._listeners.append(listener)
        try:
            return await listener.start(self.config.server.host, port)
        except OSError as exc:
            raise ConfigError(f"{setting}={port}: cannot listen on {self.config.server.host}: {exc.strerror}") from None

    async def open(self) -> None:
        """Open the lake and learn its newest ledger: then ready."""
        try:
            lake = self.lake = await self.parts.open_lake()
            self.metrics.watch_lake(lake)
            self.metrics.watch_readahead(lambda: sum(a.held for a in OPEN_READAHEADS))
            lake.breaker.watch(self._breaker_changed)
            self.service.lake = lake
            newest = await lake.newest()
        except BaseException:
            await self.stop(0)
            raise
        self.readiness.release(STARTING)
        self._oldest_lookup = asyncio.ensure_future(self._look_up_oldest())
        self._tip_refresh = asyncio.ensure_future(self._keep_newest(lake))
        log.info(
            "serving %s (%s, newest ledger %s); core %s, zstd %s",
            lake.storage.description,
            lake.layout,
            newest,
            BACKEND,
            ZSTD_VERSION,
        )

    async def _look_up_oldest(self) -> None:
        """Find the oldest ledger in the background, so /health reports it
        from the start rather than after the first stream that needed it."""
        assert self.lake is not None
        try:
            await self.lake.oldest()
        except Exception as exc:  # storage trouble: a stream that needs it looks again
            log.warning("the lake's oldest ledger is not known yet: %s", exc)

    async def _keep_newest(self, lake: Lake) -> None:
        """Look up the newest ledger every POLL_INTERVAL while serving, unless
        the tip watcher does (someone waits at the tip): /health, the
        lake_newest_ledger gauge and the streams' lag stay true with no
        stream at the tip. One listing per poll (the newest object is read
        only when it changed)."""
        while True:
            await asyncio.sleep(lake.settings.poll_interval)
            if lake.watching:
                continue
            try:
                await lake.newest(refresh=True)
            except Exception as exc:  # storage trouble: the breaker and readiness say so; poll again
                log.debug("refreshing the newest ledger: %s", exc)

    async def settled(self) -> None:
        """Until start-up's own reads are done (the background lookup of the oldest ledger)."""
        if self._oldest_lookup is not None:
            await asyncio.gather(self._oldest_lookup, return_exceptions=True)

    # -- reload --
    def enable_reload(
        self, environ: Mapping[str, str] | None = None, config_file: str | None = None, interval: float = 1.0
    ) -> Reloader:
        """Reload on ``reload()`` (SIGHUP under ``run``) and when a watched file
        changes: the configuration is loaded as at start (``environ`` over
        ``config_file``, by default CONFIG_FILE), checked and applied whole."""
        env = os.environ if environ is None else environ
        path = config_file if config_file is not None else env.get("CONFIG_FILE", "")
        self.reloader = Reloader(
            self.config,
            lambda: load(env, config_file=path),
            self.apply_config,
            config_file=path,
            environ=env,
            count=lambda result: self.metrics.config_reloads.labels(result).inc(),
        )
        watcher = FileWatcher(
            lambda: watched_files(path), lambda moved: self.reload(f"{', '.join(moved)} changed"), interval
        )
        self._file_watch = asyncio.ensure_future(watcher.run())
        return self.reloader

    def reload(self, why: str = "reload") -> str | None:
        """One reload now: applied, refused or invalid (None before ``enable_reload``)."""
        if self.reloader is None:
            log.warning("%s: ignored, the service is still starting", why)
            return None
        return self.reloader.reload(why)

    def apply_config(self, new: Config, changed: list[Change]) -> None:
        """A reload checked by the Reloader (no restart-class setting differs):
        live settings at once, new-streams settings for calls that start after.
        TLS first: a bad new set of files raises ConfigError before anything changed."""
        if self.tls is not None:
            self.tls.update(new)  # new paths loaded and checked now; the files themselves it watches
        logging.getLogger().setLevel(new.monitoring.log_level.upper())
        self.metrics.sli.objective = new.monitoring.slo_availability
        st = new.storage
        if self.lake is not None:  # read at each retry and each tip poll: open streams included
            self.lake.settings = replace(
                self.lake.settings,
                retry_attempts=st.retry_attempts,
                retry_backoff=st.retry_backoff,
                poll_interval=st.poll_interval,
            )
            self.lake.breaker.update(new)  # live: the next storage operation uses them
        # Each stream captured its settings when it started; new calls take these.
        self.service.settings = replace(
            self.service.settings,
            readahead_bytes=st.readahead_bytes,
            missing_object_wait=st.missing_object_wait,
            poll_interval=st.poll_interval,
            range_max_ledgers=new.stream.range_max_ledgers,
            range_max_bytes=new.stream.range_max_bytes,
        )
        # API_KEY_REQUIRED and the limits for new calls, the keys file path, the service's own limits
        # (MAX_CONCURRENT_STREAMS among them); the keys file itself the keys watch.
        self.door.update(new)
        self.config = new  # GRACEFUL_SHUTDOWN_TIMEOUT is read from here at stop

    def _breaker_changed(self, breaker: Any) -> None:
        """Not ready while the storage's circuit breaker is open or probing;
        ready again when it closes. Liveness (/health) is not touched."""
        if breaker.state_name == "closed":
            self.readiness.release(STORAGE)
        else:
            self.readiness.hold(STORAGE, f"storage circuit breaker {breaker.state_name}: {breaker.cause}")

    # -- readiness to gRPC health --
    def _readiness_changed(self) -> None:
        self.metrics.readiness_changed(self.readiness.reasons)
        task = asyncio.ensure_future(self._publish_health())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_health(self) -> None:
        status = SERVING if self.readiness.ready else NOT_SERVING
        for service in ("", api.SERVICE, api.V1_SERVICE):
            await self.health.set(service, status)

    # -- stop --
    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.server.graceful_shutdown_timeout if grace is None else grace
        self.readiness.hold(DRAINING, "the server is shutting down")
        if self.registrar is not None:  # STOPPING and unregister, beside the drain (within a second)
            farewell = asyncio.ensure_future(self.registrar.stop())
            self._background.add(farewell)
            farewell.add_done_callback(self._background.discard)
            self.registrar = None
        await self.health.enter_graceful_shutdown()  # NOT_SERVING first: load balancers stop sending
        self.service.draining.set()
        if self._file_watch is not None:
            await cancelled(self._file_watch)
        if self.server is not None:
            await self.server.stop(grace)
            # Dropped now, on this loop, rather than left to the cyclic GC of a
            # later moment (the app and its parts reference each other): a
            # stopped grpc.aio server collected later, its loop gone, was seen
            # to crash the process in the collector (pure-twin test runs).
            self.server = None
        for listener in reversed(self._listeners):
            await listener.stop()
        self._listeners.clear()
        await self.keys.stop()
        if self.tls is not None:
            await self.tls.stop()
        if self._oldest_lookup is not None:
            await cancelled(self._oldest_lookup)
        if self._tip_refresh is not None:
            await cancelled(self._tip_refresh)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.lake is not None:
            await self.lake.close()
        else:
            await self.parts.storage.close()
        await asyncio.to_thread(tracing.shutdown)  # the last spans exported (a blocking flush: off the loop)

    async def run(self, ports_file: str | None = None, config_file: str | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully (a second
        one exits at once with status 1); reload on SIGHUP and file changes."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        bound = await self.listen()
        if ports_file:
            write_ports(ports_file, bound)
        await self.open()
        self.enable_reload(config_file=config_file)
        stop = asyncio.Event()

        def signalled(sig: signal.Signals) -> None:
            if stop.is_set():
                log.warning("%s again: exiting now, without draining", sig.name)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                sys.stderr.flush()
                self.hard_exit(1)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled, sig)
        await stop.wait()
        log.info("signal received: draining")
        await self.stop()

    def health_report(self) -> dict[str, Any]:
        lake = self.lake
        return {
            "status": "SERVING" if self.readiness.ready else "NOT_SERVING",
            "ready": self.readiness.ready,
            "reasons": self.readiness.reasons,
            "version": __version__,
            "core_backend": BACKEND,
            "zstd": ZSTD_VERSION,
            "header_hash": index.SHA256,
            "storage": self.parts.storage.description,
            "network": lake.network if lake else None,
            "exporter_version": lake.exporter_version if lake else None,
            "newest_ledger": lake.newest_known if lake else None,
            "oldest_ledger": lake.oldest_known if lake else None,
            "active_streams": self.service.active,
            "cache_bytes": lake.cache.bytes if lake else 0,
        }


async def cancelled(task: asyncio.Task[Any] | asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it
    runs on: a cancellation it swallowed (Python 3.11's ``asyncio.wait_for``
    can, when what it waits for finishes at that moment) must not leave it
    running, nor ``stop`` waiting for it forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled():
        task.exception()  # retrieved: an error it ended with is not reported as never retrieved


def ports(bound: Bound) -> dict[str, int | None]:
    return {"grpc": bound.grpc_port, "health": bound.health_port, "metrics": bound.metrics_port}


def write_ports(path: str, bound: Bound) -> None:
    """The ports bound, as JSON, written whole (a reader never sees half a file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(ports(bound), f)
    os.replace(tmp, path)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
