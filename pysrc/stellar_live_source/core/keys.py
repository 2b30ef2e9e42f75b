"""Datalake object keys: ledger sequence <-> exporter object key.

Re-exports the compiled ``_keys_c`` or its pure twin ``_keys_py``, whichever
``_backend`` selects; both have the same API and messages. See
``Layout.object_key`` and ``Layout.parse_key``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import select

_impl = select("_keys")

if TYPE_CHECKING:  # one static type for both twins
    from ._keys_py import EXTENSIONS, Layout
else:
    EXTENSIONS = _impl.EXTENSIONS
    Layout = _impl.Layout

__all__ = ["EXTENSIONS", "Layout"]
