from collections.abc import Iterable, Sequence

from typing_extensions import Buffer

# seq, lcm_v, protocol, hash, prev, hash_ok
_LedgerFacts = tuple[int, int, int, bytes, bytes, bool]

def header_span(buf: Buffer, offset: int, length: int) -> tuple[int, int, int, int, int]: ...
def index_ledgers(buf: Buffer, spans: Iterable[Sequence[int]], first: int = ...) -> list[_LedgerFacts]: ...

# frames, first ledger's previousLedgerHash, last ledger's hash, total frame bytes, fallback ledgers
_Framed = tuple[list[bytes], bytes | None, bytes | None, int, int]

# network: the stellar.v1 RawLedger frames (as v1_frames makes) instead of the RawLedger ones
def frame_ledgers(
    buf: Buffer, spans: Sequence[Sequence[int]], start: int, end: int, verify: bool = ..., network: str | None = ...
) -> _Framed: ...

# stellar.v1 RawLedger frames of RawLedger frames (network, closed_at appended), total frame bytes
def v1_frames(frames: Iterable[Buffer], network: str) -> tuple[list[bytes], int]: ...

# RawLedger frames of stellar.v1 RawLedger frames (the fields 1 and 2 prefix cut out), total frame bytes
def raw_frames(frames: Iterable[Buffer]) -> tuple[list[bytes], int]: ...
