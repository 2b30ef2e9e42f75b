"""RawLedger protobuf framing: finished gRPC wire bytes from a decompressed buffer.

Re-exports the compiled ``_frame_c`` or its pure twin ``_frame_py``, whichever
``_backend`` selects; both have the same API and messages. The service hands
``raw_ledger_frame(s)`` output to gRPC as already-serialized RawLedger messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import select

_impl = select("_frame")

if TYPE_CHECKING:  # one static type for both twins
    from ._frame_py import parse_raw_ledger, raw_ledger_frame, raw_ledger_frames
else:
    raw_ledger_frame = _impl.raw_ledger_frame
    raw_ledger_frames = _impl.raw_ledger_frames
    parse_raw_ledger = _impl.parse_raw_ledger

__all__ = ["parse_raw_ledger", "raw_ledger_frame", "raw_ledger_frames"]
