"""zstd decompression of datalake objects.

Re-exports the compiled ``_zstd_c`` or its pure twin ``_zstd_py``, whichever
``_backend`` selects; both have the same API and messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import select

_impl = select("_zstd")

if TYPE_CHECKING:  # one static type for both twins
    from ._zstd_py import ZSTD_VERSION, content_size, decompress
else:
    ZSTD_VERSION = _impl.ZSTD_VERSION
    content_size = _impl.content_size
    decompress = _impl.decompress

__all__ = ["ZSTD_VERSION", "content_size", "decompress"]
