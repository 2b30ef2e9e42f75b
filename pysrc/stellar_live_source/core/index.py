"""Ledger-sequence indexing: compiled, or its pure twin (see ``_backend``)."""

from ._backend import select

_impl = select("_index")

header_span = _impl.header_span
index_ledgers = _impl.index_ledgers

__all__ = ["header_span", "index_ledgers"]
