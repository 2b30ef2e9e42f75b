"""The gRPC service ``stellar.v1.RawLedgerService`` (flow-proto), served beside
``raw_ledger_service`` on the same port, from the same lake, cache and limits.

Its streams and range calls are the other service's (``RawLedgerService.stream``
and ``.ledger_range``: the same slots under ``MAX_CONCURRENT_STREAMS``, pace,
draining and metrics) sending another shape of each object's frames: the
``stellar.v1`` RawLedger frames (the network's passphrase and the ledger's
close time beside sequence and ledger), built by the core once per object:
straight from the decompressed buffer when a v1 call fetches the object
(``Lake.object`` with the shape's network), else from its RawLedger frames
(``Lake.v1_frames``). ``GetInfo`` answers with the identity flowctl
registration sends (``control.identity``), ``HealthCheck`` with the readiness
rule as a ``flowctl.v1.HealthStatus``. The door and the call observer stand in
front of every method, as for the other service.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2

from .. import api
from ..control import identity
from ..errors import BadRequest, LiveSourceError
from ..lake.lake import Lake
from ..lake.objects import LakeObject
from .service import Malformed, _parser
from .traced import request_attrs, traced

if TYPE_CHECKING:
    from .app import App

PUBNET = "Public Global Stellar Network ; September 2015"
TESTNET = "Test SDF Network ; September 2015"
FUTURENET = "Test SDF Future Network ; October 2022"
#: The names a request's ``network`` may give instead of a passphrase.
NETWORKS = {"pubnet": PUBNET, "mainnet": PUBNET, "testnet": TESTNET, "futurenet": FUTURENET}

PREFIX = f"/{api.V1_SERVICE}/"
STREAM_METHOD = f"{PREFIX}StreamRawLedgers"
RANGE_METHOD = f"{PREFIX}GetLedgerRange"
#: The ``method`` label of this service's calls in the metrics: ``stellar.v1.<Method>``.
METRICS_LABEL = "stellar.v1."

HealthCheckRequest = api.message("flowctl.v1.HealthCheckRequest")
HealthCheckResponse = api.message("flowctl.v1.HealthCheckResponse")
StreamLedgersRequest = api.message("stellar.v1.StreamLedgersRequest")
GetLedgerRangeRequest = api.message("stellar.v1.GetLedgerRangeRequest")


def check_network(asked: str, served: str) -> None:
    """BadRequest naming the field unless ``asked`` (empty, a name, or a
    passphrase) is the network served (``served``: "" when not known)."""
    if not asked:
        return
    if not served:
        raise BadRequest(
            f"network {asked!r}: this service does not know which network its lake holds;"
            " set NETWORK_PASSPHRASE (or the manifest's networkPassphrase), or leave network empty"
        )
    if NETWORKS.get(asked.lower(), asked) != served:
        names = [n for n, p in NETWORKS.items() if p == served]
        raise BadRequest(
            f"network {asked!r} is not the network served here ({served!r}); leave network empty or give "
            + (f"{' or '.join(names)} or " if names else "")
            + "its passphrase"
        )


def health_status(name: str) -> int:
    """A readiness status (``Readiness.status``) as a flowctl.v1.HealthStatus number."""
    return int(api.POOL.FindEnumTypeByName("flowctl.v1.HealthStatus").values_by_name[f"HEALTH_STATUS_{name}"].number)


class V1Frames:
    """The ``stellar.v1`` shape of a lake's objects (``stream.Shape``): built
    by the lake once per object and network, started as read-ahead lands
    each object so that they are ready when the stream reaches it."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.network = lake.network

    def prepare(self, obj: LakeObject) -> None:
        self.lake.prepare_v1(obj, self.network)

    async def frames(self, obj: LakeObject) -> list[bytes]:
        return await self.lake.v1_frames(obj, self.network)


class V1Service:
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def service(self) -> Any:
        return self.app.service

    def frames_of(self, lake: Lake) -> V1Frames:
        return V1Frames(lake)

    async def _checked(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """The frames this call sends, once its request is known good."""
        svc = self.service
        if isinstance(request, Malformed):
            await svc._malformed(context, request)
        try:
            lake = svc._lake()
            check_network(request.network, lake.network)
        except LiveSourceError as exc:
            await svc._refuse(context, exc)
        return self.frames_of(lake)

    async def stream_raw_ledgers(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        frames_of = await self._checked(request, context)
        await self.service.stream(context, request.start_ledger, 0, frames_of)

    async def get_ledger_range(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        frames_of = await self._checked(request, context)
        out: bytes = await self.service.ledger_range(context, request.start_ledger, request.end_ledger, frames_of)
        return out

    async def get_info(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if isinstance(request, Malformed):
            await self.service._malformed(context, request)
        app = self.app
        bound = app.bound
        me = identity.identity(
            app.config, app.lake, bound.grpc_port if bound else 0, bound.health_port if bound else None, os.environ
        )
        registrar = app.registrar
        # What flowctl registration sends, with the ID the control plane gave when it gave one.
        service_id = registrar.service_id if registrar is not None and registrar.service_id else me.service_id
        info = identity.component_info(me, service_id)
        out: bytes = info.SerializeToString()
        return out

    async def health_check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if isinstance(request, Malformed):
            await self.service._malformed(context, request)
        app = self.app
        readiness = app.readiness
        numbers = identity.numbers(app.metrics, self.service.active, app.lake)
        reply = HealthCheckResponse(
            status=health_status(readiness.status),
            metrics=identity.as_strings(numbers),
            message="; ".join(readiness.reasons.values()),
        )
        if request.include_details:
            for name, status, message in self.components():
                reply.components.add(component_name=name, status=health_status(status), message=message)
        out: bytes = reply.SerializeToString()
        return out

    def components(self) -> list[tuple[str, str, str]]:
        """``(name, readiness status, message)`` of the parts HealthCheck details."""
        app, svc = self.app, self.service
        lake = app.lake
        if lake is None:
            parts = [("lake", "STARTING", "not open yet")]
        else:
            newest = lake.newest_known
            parts = [
                (
                    "lake",
                    "HEALTHY" if newest is not None else "STARTING",
                    f"{lake.storage.description}; newest ledger {newest if newest is not None else 'not known yet'}",
                )
            ]
            breaker = lake.breaker
            state = breaker.state_name
            parts.append(
                (
                    "storage",
                    "HEALTHY" if state == "closed" else "DEGRADED",
                    f"circuit breaker {state}" + (f": {breaker.cause}" if state != "closed" and breaker.cause else ""),
                )
            )
        draining = svc.draining.is_set()
        parts.append(
            (
                "grpc",
                "STOPPING" if draining else "HEALTHY",
                f"{svc.active} streams and {svc.ranges} range calls open of {svc.max_streams}"
                + ("; draining" if draining else ""),
            )
        )
        return parts

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            api.V1_SERVICE,
            {
                "GetInfo": grpc.unary_unary_rpc_method_handler(
                    traced(f"{PREFIX}GetInfo", self.get_info, False, request_attrs),
                    request_deserializer=_parser(empty_pb2.Empty),
                ),
                "HealthCheck": grpc.unary_unary_rpc_method_handler(
                    traced(f"{PREFIX}HealthCheck", self.health_check, False, request_attrs),
                    request_deserializer=_parser(HealthCheckRequest),
                ),
                "StreamRawLedgers": grpc.unary_stream_rpc_method_handler(
                    traced(STREAM_METHOD, self.stream_raw_ledgers, True, request_attrs),
                    request_deserializer=_parser(StreamLedgersRequest),
                ),
                "GetLedgerRange": grpc.unary_unary_rpc_method_handler(
                    traced(RANGE_METHOD, self.get_ledger_range, False, request_attrs),
                    request_deserializer=_parser(GetLedgerRangeRequest),
                ),
            },
        )
