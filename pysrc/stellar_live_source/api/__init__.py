"""The gRPC APIs' messages, built at import time from compiled descriptor sets
of the files under ``proto/`` (``make protos`` writes them; ``api.build`` says
which file goes where):

- ``raw_ledger_service``: the Go original's API (``raw_ledger_service.binpb``);
- ``stellar.v1``: flow-proto's ledger service and the ``flowctl.v1`` types it
  answers with (``stellar_v1.binpb``);
- the flowctl control planes, ``flowctl.v1.ControlPlaneService`` and the legacy
  ``flowctl.ControlPlane`` (``flowctl.binpb``): the service is their client.

Loading descriptors instead of shipping generated ``_pb2`` code keeps the
package free of protobuf's gencode/runtime version lock. The server never
builds these messages on its hot path (frames are pre-built bytes); clients,
tests, reflection and the control-plane client use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The well-known types the descriptor sets import, registered in the default pool.
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory, timestamp_pb2  # noqa: F401

HERE = Path(__file__).parent
#: descriptor set -> the proto files in it, dependencies first
DESCRIPTOR_SETS = {
    "raw_ledger_service.binpb": ("raw_ledger_service/raw_ledger_service.proto",),
    "stellar_v1.binpb": ("flowctl/v1/common.proto", "stellar/v1/raw_ledger.proto"),
    "flowctl.binpb": ("flowctl/v1/common.proto", "flowctl/v1/control_plane.proto", "flowctl/control_plane.proto"),
}

PACKAGE = "raw_ledger_service"
SERVICE = f"{PACKAGE}.RawLedgerService"
STREAM_METHOD = f"/{SERVICE}/StreamRawLedgers"
RANGE_METHOD = f"/{SERVICE}/GetLedgerRange"
DESCRIPTOR_SET = HERE / "raw_ledger_service.binpb"

V1_SERVICE = "stellar.v1.RawLedgerService"
FLOWCTL_V1_SERVICE = "flowctl.v1.ControlPlaneService"
FLOWCTL_LEGACY_SERVICE = "flowctl.ControlPlane"


def _load() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.Default()
    for name in DESCRIPTOR_SETS:
        files = descriptor_pb2.FileDescriptorSet.FromString((HERE / name).read_bytes())
        for f in files.file:
            try:
                pool.FindFileByName(f.name)
            except KeyError:
                pool.Add(f)
    return pool


POOL = _load()


def message(full_name: str) -> Any:
    """The message class of ``full_name`` (``package.Message``)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


def _message(name: str) -> Any:
    return message(f"{PACKAGE}.{name}")


StreamLedgersRequest = _message("StreamLedgersRequest")
RawLedger = _message("RawLedger")
GetLedgerRangeRequest = _message("GetLedgerRangeRequest")
GetLedgerRangeResponse = _message("GetLedgerRangeResponse")

__all__ = [
    "DESCRIPTOR_SETS",
    "FLOWCTL_LEGACY_SERVICE",
    "FLOWCTL_V1_SERVICE",
    "GetLedgerRangeRequest",
    "GetLedgerRangeResponse",
    "POOL",
    "RANGE_METHOD",
    "RawLedger",
    "SERVICE",
    "STREAM_METHOD",
    "StreamLedgersRequest",
    "V1_SERVICE",
    "message",
]
