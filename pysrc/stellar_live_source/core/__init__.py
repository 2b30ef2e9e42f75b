"""The decoding core: zstd, XDR batch splitting, ledger indexing, layout keys
and RawLedger framing. Each piece is a compiled module with a pure-Python twin;
``_backend`` picks one."""

from ._backend import BACKEND

__all__ = ["BACKEND"]
