"""A flowctl control plane for the tests, built from the same descriptors the
service calls with (``stellar_live_source.api``), for both APIs:
``flowctl.v1.ControlPlaneService`` and the legacy ``flowctl.ControlPlane``.

It records what it is sent, hands out service IDs of its own (so a test sees
that the one returned is used), answers a heartbeat from a service it does not
know with NOT_FOUND (``restart`` forgets every service, as a restarted control
plane does), fails every call with a given status while ``fail`` is set, and
answers nothing while ``hang`` is set. ``silent_endpoint`` is a socket that
accepts and never speaks (not even HTTP/2)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2

from stellar_live_source import api

V1_METHODS = {
    # method: (request, response; None: Empty)
    "RegisterComponent": ("flowctl.v1.RegisterRequest", "flowctl.v1.RegisterResponse"),
    "Heartbeat": ("flowctl.v1.HeartbeatRequest", None),
    "UnregisterComponent": ("flowctl.v1.UnregisterRequest", None),
}
LEGACY_METHODS = {
    "Register": ("flowctl.ServiceInfo", "flowctl.RegistrationAck"),
    "Heartbeat": ("flowctl.ServiceHeartbeat", None),
}


@dataclass
class ControlPlane:
    kind: str = "v1"  # or "legacy"
    registrations: list[Any] = field(default_factory=list)
    heartbeats: list[Any] = field(default_factory=list)
    unregistrations: list[Any] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    fail: grpc.StatusCode | None = None
    hang: bool = False
    amnesiac: bool = False  # registers and forgets at once: every heartbeat NOT_FOUND
    calls: int = 0
    in_flight: int = 0
    most_in_flight: int = 0  # calls being answered at once, at most
    address: str = ""
    issued: list[str] = field(default_factory=list)  # the service IDs handed out, in order
    _server: Any = None

    async def start(self, port: int = 0) -> str:
        self._server = grpc.aio.server()
        service = api.FLOWCTL_V1_SERVICE if self.kind == "v1" else api.FLOWCTL_LEGACY_SERVICE
        methods = V1_METHODS if self.kind == "v1" else LEGACY_METHODS
        handlers = {}
        for name, (request, response) in methods.items():
            answer = api.message(response) if response else empty_pb2.Empty
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._handler(name),
                request_deserializer=api.message(request).FromString,
                response_serializer=answer.SerializeToString,
            )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        bound = self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()
        self.address = f"127.0.0.1:{bound}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    def restart(self) -> None:
        """Forget every service, as a control plane that restarted does."""
        self.known.clear()

    def settled(self) -> bool:
        """Registered with the lake open (its network known) and heartbeating with the last ID handed out."""
        if not self.registrations or not self.heartbeats:
            return False
        last = self.registrations[-1]
        info = last.component if self.kind == "v1" else last
        return bool(info.metadata["network"]) and self.heartbeats[-1].service_id == self.issued[-1]

    def status_of(self, heartbeat: Any) -> str:
        """A v1 heartbeat's status without its prefix (``HEALTHY``)."""
        enum = api.POOL.FindEnumTypeByName("flowctl.v1.HealthStatus")
        return enum.values_by_number[heartbeat.status].name.removeprefix("HEALTH_STATUS_")

    def _handler(self, name: str) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.hang:
                    await asyncio.Event().wait()  # never answers; the caller's deadline ends it
                if self.fail is not None:
                    await context.abort(self.fail, "told to fail")
                return await getattr(self, f"_{name}")(request, context)
            finally:
                self.in_flight -= 1

        return handle

    # -- v1 --
    async def _RegisterComponent(self, request: Any, context: Any) -> Any:
        self.registrations.append(request)
        service_id = f"cp-{request.component.id}-{len(self.issued) + 1}"
        self.issued.append(service_id)
        if not self.amnesiac:
            self.known.add(service_id)
        return api.message("flowctl.v1.RegisterResponse")(service_id=service_id, assigned_topics=["ledgers"])

    async def _UnregisterComponent(self, request: Any, context: Any) -> Any:
        self.unregistrations.append(request)
        self.known.discard(request.service_id)
        return empty_pb2.Empty()

    # -- legacy --
    async def _Register(self, request: Any, context: Any) -> Any:
        self.registrations.append(request)
        service_id = f"{request.service_id}-ack{len(self.issued) + 1}"
        self.issued.append(service_id)
        self.known.add(service_id)
        return api.message("flowctl.RegistrationAck")(service_id=service_id, topic_names=["ledgers"])

    # -- both --
    async def _Heartbeat(self, request: Any, context: Any) -> Any:
        if request.service_id not in self.known:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"service {request.service_id} not registered")
        self.heartbeats.append(request)
        return empty_pb2.Empty()


@contextlib.asynccontextmanager
async def control_plane(kind: str = "v1", port: int = 0) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(kind)
    await cp.start(port)
    try:
        yield cp
    finally:
        await cp.stop()


def free_port() -> int:
    """A port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def silent_endpoint() -> AsyncIterator[tuple[str, list[int]]]:
    """An endpoint that accepts connections and never sends a byte: (address, connections accepted)."""
    accepted: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", accepted
    finally:
        for w in writers:
            w.close()
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)
