from collections.abc import Buffer, Iterable, Sequence

# seq, lcm_v, protocol, hash, prev, hash_ok
LedgerFacts = tuple[int, int, int, bytes, bytes, bool]

def header_span(buf: Buffer, offset: int, length: int) -> tuple[int, int, int, int, int]: ...
def index_ledgers(buf: Buffer, spans: Iterable[Sequence[int]], first: int = ...) -> list[LedgerFacts]: ...
