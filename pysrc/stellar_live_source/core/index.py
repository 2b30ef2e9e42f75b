"""Ledger-sequence indexing: compiled, or its pure twin (see ``_backend``)."""

from ._backend import select

_impl = select("_index")

frame_ledgers = _impl.frame_ledgers
header_span = _impl.header_span
index_ledgers = _impl.index_ledgers
SHA256 = _impl.SHA256  # what hashes the headers: "libcrypto" (called directly) or "hashlib"

__all__ = ["SHA256", "frame_ledgers", "header_span", "index_ledgers"]
