"""Ledger-sequence indexing: compiled, or its pure twin (see ``_backend``)."""

from ._backend import select

_impl = select("_index")

frame_ledgers = _impl.frame_ledgers
header_span = _impl.header_span
index_ledgers = _impl.index_ledgers

__all__ = ["frame_ledgers", "header_span", "index_ledgers"]
