"""Who this service is, as ``stellar.v1.RawLedgerService/GetInfo`` answers and
flowctl registration sends it (one description for both), and the numbers
its heartbeats and ``HealthCheck`` report."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, api
from ..core import BACKEND
from ..ops.config import Config

NAME = "stellar-live-source"
DESCRIPTION = "Streams Stellar ledgers (LedgerCloseMeta XDR) from a datalake over gRPC"
#: Where GetInfo and registration say input comes from: none (a source).
INPUT_EVENT_TYPES: tuple[str, ...] = ()


def advertise_host(config: Config, environ: Mapping[str, str]) -> str:
    """The host a control plane dials: FLOWCTL_ADVERTISE_HOST, else POD_IP
    (set by Kubernetes' downward API), else this host's name. Never 0.0.0.0."""
    return config.flowctl.advertise_host or environ.get("POD_IP", "") or socket.gethostname()


@dataclass(frozen=True)
class Identity:
    service_id: str  # FLOWCTL_SERVICE_ID, else the name
    component_id: str  # FLOWCTL_COMPONENT_ID ("" when not set)
    version: str
    output_event_types: tuple[str, ...]
    endpoint: str  # host:port of the gRPC server
    health_endpoint: str  # http(s)://host:port/health ("" with HEALTH_ENABLED=false)
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = NAME
    description: str = DESCRIPTION


def identity(
    config: Config,
    lake: Any,
    grpc_port: int,
    health_port: int | None,
    environ: Mapping[str, str],
) -> Identity:
    """This service's identity once it listens (``lake``: the open lake, or
    None before it opened: its network and exporter version are then empty)."""
    host = advertise_host(config, environ)
    hostport = f"[{host}]:" if ":" in host else f"{host}:"
    scheme = "https" if config.security.tls_enabled else "http"
    types = tuple(t.strip() for t in config.flowctl.output_event_types.split(",") if t.strip())
    return Identity(
        service_id=config.flowctl.service_id or NAME,
        component_id=config.flowctl.component_id,
        version=__version__,
        output_event_types=types,
        endpoint=f"{hostport}{grpc_port}",
        health_endpoint=f"{scheme}://{hostport}{health_port}/health" if health_port else "",
        metadata={
            "network": getattr(lake, "network", "") or "",
            "storage_type": config.storage.type,
            "lake": lake.storage.description if lake is not None else "",
            "exporter_version": getattr(lake, "exporter_version", "") or "",
            "version": __version__,
            "core_backend": BACKEND,
        },
    )


def component_info(me: Identity, service_id: str) -> Any:
    """``me`` as a ``flowctl.v1.ComponentInfo`` under ``service_id``: what
    registration sends and GetInfo answers."""
    source = api.POOL.FindEnumTypeByName("flowctl.v1.ComponentType").values_by_name["COMPONENT_TYPE_SOURCE"]
    return api.message("flowctl.v1.ComponentInfo")(
        id=service_id,
        name=me.name,
        description=me.description,
        version=me.version,
        type=source.number,
        input_event_types=list(INPUT_EVENT_TYPES),
        output_event_types=list(me.output_event_types),
        endpoint=me.endpoint,
        metadata=me.metadata,
    )


def numbers(metrics: Any, active_streams: int, lake: Any) -> dict[str, float]:
    """What heartbeats and HealthCheck report: ledgers and bytes sent and
    errors since start, streams open now, and the lake's newest ledger (0:
    not known yet)."""
    get = metrics.registry.get_sample_value
    errors = sum(s.value for m in metrics.errors.collect() for s in m.samples if s.name.endswith("_total"))
    newest = getattr(lake, "newest_known", None) if lake is not None else None
    return {
        "ledgers_sent": get("stellar_live_source_ledgers_sent_total") or 0.0,
        "errors": float(errors),
        "bytes_sent": get("stellar_live_source_bytes_sent_total") or 0.0,
        "active_streams": float(active_streams),
        "newest_ledger": float(newest or 0),
    }


def as_strings(values: Mapping[str, float]) -> dict[str, str]:
    """Numbers as decimal strings (``flowctl.v1`` maps are string to string): integers without a point."""
    return {k: str(int(v)) if float(v).is_integer() else repr(float(v)) for k, v in values.items()}
