"""XDR batch splitting: the compiled walker, or its pure twin (see ``_backend``)."""

from ._backend import select

_impl = select("_walk")

DEFAULT_MAX_DEPTH = _impl.DEFAULT_MAX_DEPTH
TYPE_NAMES = _impl.TYPE_NAMES
SDK_CLASSES = _impl.SDK_CLASSES
split_batch = _impl.split_batch
split_ledgers = _impl.split_ledgers
walk_type = _impl.walk_type
SHA256 = _impl.SHA256  # what hashes the headers: "libcrypto" (called directly) or "hashlib"

__all__ = ["DEFAULT_MAX_DEPTH", "SHA256", "TYPE_NAMES", "SDK_CLASSES", "split_batch", "split_ledgers", "walk_type"]
