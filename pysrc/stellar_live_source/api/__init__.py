"""The gRPC API's messages, built at import time from the compiled descriptor
of ``proto/raw_ledger_service/raw_ledger_service.proto``.

Loading the descriptor instead of shipping generated ``_pb2`` code keeps the
package free of protobuf's gencode/runtime version lock. The server never
builds these messages on its hot path (frames are pre-built bytes); clients,
tests and reflection use them.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "raw_ledger_service"
SERVICE = f"{PACKAGE}.RawLedgerService"
STREAM_METHOD = f"/{SERVICE}/StreamRawLedgers"
RANGE_METHOD = f"/{SERVICE}/GetLedgerRange"
DESCRIPTOR_SET = Path(__file__).with_name("raw_ledger_service.binpb")


def _load() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.Default()
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    for f in files.file:
        try:
            pool.FindFileByName(f.name)
        except KeyError:
            pool.Add(f)
    return pool


POOL = _load()


def _message(name: str):
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


StreamLedgersRequest = _message("StreamLedgersRequest")
RawLedger = _message("RawLedger")
GetLedgerRangeRequest = _message("GetLedgerRangeRequest")
GetLedgerRangeResponse = _message("GetLedgerRangeResponse")

__all__ = [
    "SERVICE",
    "STREAM_METHOD",
    "RANGE_METHOD",
    "POOL",
    "StreamLedgersRequest",
    "RawLedger",
    "GetLedgerRangeRequest",
    "GetLedgerRangeResponse",
]
