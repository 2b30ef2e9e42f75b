"""The service's small HTTP listeners, on aiohttp's web server: health
(``/health``, ``/ready``) on one port and Prometheus ``/metrics`` on another.

aiohttp parses the requests: a malformed request line, a header past its
limits or a client that goes quiet costs that client a 4xx or its connection,
never the event loop. Nothing is logged per request (probes come every few
seconds).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import http_exceptions, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..ops.readiness import Readiness

# An idle keep-alive connection is closed after this long: probes reconnect cheaply.
KEEPALIVE_SECONDS = 15.0


class _QuietBadRequests(logging.Filter):
    """aiohttp logs every request it cannot parse at ERROR with a traceback:
    a client could flood the logs. Such a client gets its 400; the log a
    debug line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args, record.exc_info, record.exc_text = "bad request: %s", (exc.message,), None, None
            return log.isEnabledFor(logging.DEBUG)
        return True


log = logging.getLogger("stellar_live_source.http")
log.addFilter(_QuietBadRequests())


def health_app(report: Callable[[], dict[str, Any]], readiness: Readiness) -> web.Application:
    """``/health``: liveness, 200 while the process runs (draining included),
    with the JSON report; ``/ready``: 200 when ready, else 503, with the same
    report and the reasons."""

    async def health(_: web.Request) -> web.Response:
        return _json(200, report())

    async def ready(_: web.Request) -> web.Response:
        body = report()
        return _json(200 if body["ready"] else 503, body)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    return app


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """``/metrics`` in Prometheus' text format, from the service's own registry."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


class Listener:
    """One aiohttp application on one port (0: any free port)."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context  # TLS (never asking for a client certificate), or plain HTTP
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS, logger=log)
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound. The socket is made here so that the port
        the kernel chose is known without asking aiohttp's internals."""
        sock = socket.create_server((host, port), family=_family(host), reuse_port=False)
        try:
            await self._runner.setup()
            await web.SockSite(self._runner, sock, ssl_context=self._ssl_context).start()
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
