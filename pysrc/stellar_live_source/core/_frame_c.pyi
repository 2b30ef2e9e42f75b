"""RawLedger protobuf framing (compiled); see ``_frame_py`` for the pure twin."""

from collections.abc import Sequence

from typing_extensions import Buffer

def raw_ledger_frame(sequence: int, buf: Buffer, offset: int, length: int) -> bytes: ...
def raw_ledger_frames(
    buf: Buffer, sequences: Sequence[int], offsets: Sequence[int], lengths: Sequence[int]
) -> list[bytes]: ...
def parse_raw_ledger(frame: Buffer) -> tuple[int, bytes]: ...
