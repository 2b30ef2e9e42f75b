"""Ledger-sequence indexing: compiled, or its pure twin (see ``_backend``)."""

from . import walk
from ._backend import select

_impl = select("_index")

frame_ledgers = _impl.frame_ledgers
header_span = _impl.header_span
index_ledgers = _impl.index_ledgers
raw_frames = _impl.raw_frames
v1_frames = _impl.v1_frames
SHA256 = walk.SHA256  # what hashes the headers (the walker's header_hash_is)

__all__ = ["SHA256", "frame_ledgers", "header_span", "index_ledgers", "raw_frames", "v1_frames"]
