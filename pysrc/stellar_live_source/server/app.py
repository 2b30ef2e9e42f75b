"""The application: starts the parts in order, stops them in reverse.

Start: storage, lake, gRPC server (service, health, reflection), HTTP health,
metrics; then SERVING. SIGTERM/SIGINT: NOT_SERVING, streams told to end with
UNAVAILABLE (clients resume elsewhere), stop with grace, close the lake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__, api
from ..core import BACKEND, index
from ..core.zstd import ZSTD_VERSION
from ..lake.lake import Lake, LakeSettings
from ..lake.storage import open_storage
from ..ops.metrics import Metrics
from .service import RawLedgerService
from .stream import StreamSettings

log = logging.getLogger("stellar_live_source.server")


@dataclass
class Bound:
    """Where the running app listens (ports chosen by the OS when 0 was asked)."""

    grpc_port: int
    health_port: int | None
    metrics_port: int | None


def configured_storage(config):
    """The storage backend the configuration names."""
    st = config.storage
    return open_storage(
        st.type,
        bucket=st.bucket_name,
        prefix=st.path,
        region=st.region or None,
        endpoint=st.endpoint or None,
        force_path_style=st.force_path_style,
        timeout=st.timeout,
        pool_size=st.pool_size,
    )


def lake_settings(config) -> LakeSettings:
    st = config.storage
    return LakeSettings(
        # Only what the operator set may contradict the lake's manifest.
        ledgers_per_file=st.ledgers_per_file if "LEDGERS_PER_FILE" in config.explicit else None,
        files_per_partition=st.files_per_partition if "FILES_PER_PARTITION" in config.explicit else None,
        retry_attempts=st.retry_attempts,
        retry_backoff=st.retry_backoff,
        poll_interval=st.poll_interval,
        cache_bytes=st.cache_bytes,
        max_object_bytes=st.max_object_bytes,
        verify=config.stream.verify_hash_chain,
        unknown_arms=config.stream.xdr_unknown_arms,
    )


class App:
    def __init__(self, config):
        self.config = config
        self.metrics = Metrics()
        self.lake: Lake | None = None
        self._storage = None
        self.server: grpc.aio.Server | None = None
        self.service: RawLedgerService | None = None
        self.health = health.aio.HealthServicer()
        self._http: asyncio.Server | None = None
        self._metrics_server = None
        self.bound: Bound | None = None
        self._oldest_lookup: asyncio.Task | None = None

    async def start(self) -> Bound:
        try:
            return await self._start()
        except BaseException:
            await self.stop(0)  # whatever started, stopped: a failed start leaves nothing behind
            raise

    async def _start(self) -> Bound:
        c = self.config
        st = c.storage
        self._storage = storage = configured_storage(c)
        self.lake = await Lake.open(storage, lake_settings(c))
        self.metrics.watch_lake(self.lake)
        self.service = RawLedgerService(
            self.lake,
            StreamSettings(
                buffer_size=st.buffer_size,
                num_workers=st.num_workers,
                readahead_bytes=st.readahead_bytes,
                missing_object_wait=st.missing_object_wait,
                poll_interval=st.poll_interval,
                verify=c.stream.verify_hash_chain,
                range_max_ledgers=c.stream.range_max_ledgers,
                range_max_bytes=c.stream.range_max_bytes,
            ),
            self.metrics,
            c.server.max_concurrent_streams,
        )

        health_port = None
        if c.server.health_port is not None and c.server.health_port >= 0:
            self._http = await asyncio.start_server(self._http_health, c.server.host, c.server.health_port)
            health_port = self._http.sockets[0].getsockname()[1]
        metrics_port = None
        if c.monitoring.metrics_enabled:
            self._metrics_server, _ = self.metrics.serve(c.server.host, c.monitoring.metrics_port)
            metrics_port = self._metrics_server.server_port
        # Real ledgers pass 4 MiB: never cap what is sent; requests are tiny.
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", 1 << 20),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.server.add_generic_rpc_handlers((self.service.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (api.SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server, pool=api.POOL
        )
        port = self.server.add_insecure_port(f"{_host(c.server.host)}:{c.server.port}")
        if port == 0:
            raise OSError(f"cannot bind the gRPC port {c.server.host}:{c.server.port}")
        await self.server.start()

        newest = await self.lake.newest()  # before SERVING: /health never shows a lake without its tip
        self._oldest_lookup = asyncio.ensure_future(self._look_up_oldest())
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(api.SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.bound = Bound(port, health_port, metrics_port)
        log.info(
            "serving %s (%s ledgers, newest %s) on %s:%d; core %s, zstd %s",
            storage.description,
            self.lake.layout.extension,
            newest,
            c.server.host,
            port,
            BACKEND,
            ZSTD_VERSION,
        )
        return self.bound

    async def _look_up_oldest(self) -> None:
        """Find the oldest ledger in the background, so /health reports it
        from the start rather than after the first stream that needed it."""
        try:
            await self.lake.oldest()
        except Exception as exc:  # storage trouble: a stream that needs it looks again
            log.warning("the lake's oldest ledger is not known yet: %s", exc)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.server.graceful_shutdown_timeout if grace is None else grace
        await self.health.enter_graceful_shutdown()  # NOT_SERVING first: load balancers stop sending
        if self.service is not None:
            self.service.draining.set()
        if self.server is not None:
            await self.server.stop(grace)
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._oldest_lookup is not None:
            self._oldest_lookup.cancel()
            await asyncio.gather(self._oldest_lookup, return_exceptions=True)
        if self.lake is not None:
            await self.lake.close()
        elif self._storage is not None:
            await self._storage.close()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: draining")
        await self.stop()

    def health_report(self) -> dict:
        lake = self.lake
        return {
            "status": "SERVING" if self.bound is not None and not self.service.draining.is_set() else "NOT_SERVING",
            "version": __version__,
            "core_backend": BACKEND,
            "zstd": ZSTD_VERSION,
            "header_hash": index.SHA256,
            "storage": lake.storage.description if lake else None,
            "newest_ledger": lake._newest[1] if lake and lake._newest else None,
            "oldest_ledger": lake._oldest if lake else None,
            "active_streams": self.service.active if self.service else 0,
            "cache_bytes": lake.cache.bytes if lake else 0,
        }

    async def _http_health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """GET /health (JSON report) and /ready; a minimal HTTP/1.0 answer."""
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            report = self.health_report()
            ok = report["status"] == "SERVING"
            if path.startswith("/health") or path.startswith("/ready"):
                status = "200 OK" if ok else "503 Service Unavailable"
                body = json.dumps(report).encode()
            else:
                status, body = "404 Not Found", b'{"error": "not found"}'
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
