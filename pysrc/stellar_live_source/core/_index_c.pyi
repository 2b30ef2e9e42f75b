from collections.abc import Iterable, Sequence

from typing_extensions import Buffer

# seq, lcm_v, protocol, hash, prev, hash_ok
LedgerFacts = tuple[int, int, int, bytes, bytes, bool]

def header_span(buf: Buffer, offset: int, length: int) -> tuple[int, int, int, int, int]: ...
def index_ledgers(buf: Buffer, spans: Iterable[Sequence[int]], first: int = ...) -> list[LedgerFacts]: ...
