"""Errors of the decoding core. Each one names where in the input it happened."""

from __future__ import annotations


class CoreError(ValueError):
    """Base of every decoding error: the input is not what it claims to be."""


class ZstdError(CoreError):
    """The object is not valid zstd, or decompresses past the size cap."""


class XdrError(CoreError):
    """The XDR does not follow the grammar, or the batch is inconsistent.

    ``offset`` is the byte offset in the decompressed buffer, ``type_name`` the
    XDR type being read, ``ledger`` the index of the ledger in its container
    (None when the error is outside any ledger).
    """

    def __init__(self, reason: str, offset: int, type_name: str, ledger: int | None = None):
        self.reason = reason
        self.offset = offset
        self.type_name = type_name
        self.ledger = ledger
        where = f"ledger #{ledger}" if ledger is not None else "batch"
        super().__init__(f"{where}: {reason} at byte {offset} reading {type_name}")


class HashError(CoreError):
    """A ledger header's hash is wrong, or consecutive ledgers do not chain."""


# Why an XDR walk stopped: codes shared by the compiled walker, its pure twin
# and the generator that writes both.
E_TRUNCATED = 1
E_UNKNOWN_ARM = 2
E_TOO_LONG = 3
E_PADDING = 4
E_BOOL = 5
E_DEPTH = 6

WALK_ERRORS = {
    E_TRUNCATED: "input ends before the value does",
    E_UNKNOWN_ARM: "unknown union arm or enum value",
    E_TOO_LONG: "length or count above the declared maximum",
    E_PADDING: "non-zero padding",
    E_BOOL: "bool or optional flag not 0 or 1",
    E_DEPTH: "nesting deeper than the depth limit",
}
