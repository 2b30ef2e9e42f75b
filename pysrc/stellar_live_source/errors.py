"""Every error the package raises: one root, grouped by what a caller does
about it (as asyncpg groups its exceptions), and one table from each group to
the gRPC status a stream ends with and the exit code of the command.

    LiveSourceError
    ├── BadData            the lake holds bytes that are not what they claim: alert, never retried
    │   ├── CoreError          an object or file does not decode (also a ValueError)
    │   │   ├── ZstdError          not zstd, or past the size cap
    │   │   ├── XdrError           not the XDR grammar, or an inconsistent batch
    │   │   └── HashError          a header hash, or the chain inside an object, is wrong
    │   ├── CorruptObject      an object failed to decode twice; names the key
    │   └── ChainBroken        consecutive objects do not chain
    ├── Unavailable        transient: retry, or resume from the last ledger + 1
    │   ├── StorageError       one storage call failed (5xx, reset, timeout, a body cut short)
    │   ├── RetriesExhausted   storage failed after every retry
    │   ├── StorageUnavailable the storage's circuit breaker is open: fails fast, names the cause
    │   ├── Draining           the server is shutting down
    │   └── TooManyStreams     every stream slot is taken
    ├── NotInLake          the lake does not hold what was asked for
    │   ├── ObjectNotFound     a key does not exist (an answer, not a failure)
    │   ├── LedgerMissing      a gap while later ledgers exist, after MISSING_OBJECT_WAIT
    │   ├── EmptyLake          the lake holds no ledgers
    │   └── OutOfRange         below the lake's oldest ledger
    ├── BadRequest         the request is wrong: fix it
    │   └── UsageError         a command line that cannot be run
    ├── BadInputFile       a file given to a command cannot be read
    └── ConfigError        the configuration is wrong: every problem listed at once
        ├── StorageConfigError  no such bucket or folder, credentials refused
        └── LakeConfigError     settings that contradict the lake's manifest

The importable client raises gRPC's own errors, its documented API; the
command maps their status codes to exit codes with ``exit_code_for_status``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "EXIT_INTERRUPTED",
    "BadData",
    "BadInputFile",
    "BadRequest",
    "ChainBroken",
    "ConfigError",
    "CoreError",
    "CorruptObject",
    "Draining",
    "EmptyLake",
    "HashError",
    "LakeConfigError",
    "LedgerMissing",
    "LiveSourceError",
    "NotInLake",
    "ObjectNotFound",
    "OutOfRange",
    "Outcome",
    "RetriesExhausted",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "TooManyStreams",
    "Unavailable",
    "UsageError",
    "XdrError",
    "ZstdError",
    "exit_code_for_status",
    "outcome",
]


class LiveSourceError(Exception):
    """The root of every error of this package."""


class BadData(LiveSourceError):
    """Bytes in the lake (or a file) that are not what they claim to be."""


class CoreError(BadData, ValueError):
    """An object or file does not decode: the input is not what it claims to be."""


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
    """A ledger header's hash is wrong, or consecutive ledgers of one object do not chain."""


class CorruptObject(BadData):
    """An object failed to decode or verify twice, or was refused unread (larger
    than MAX_OBJECT_BYTES, not a regular file, a link out of the lake); the
    message names the key and why."""


class ChainBroken(BadData):
    """A ledger does not name the hash of the ledger before it, across objects."""


class Unavailable(LiveSourceError):
    """Transient: the same request may succeed later."""


class StorageError(Unavailable):
    """One storage call failed in a way a retry may mend (timeouts, 5xx, resets, bodies cut short)."""


class RetriesExhausted(Unavailable):
    """Storage failed after every retry."""


class StorageUnavailable(Unavailable):
    """The storage's circuit breaker is open: failed at once, without asking
    storage; the message names the last failure (the cause)."""


class Draining(Unavailable):
    """The server is shutting down; resume on another instance."""


class TooManyStreams(Unavailable):
    """Every stream slot is taken; retry later."""


class NotInLake(LiveSourceError):
    """The lake does not hold what was asked for."""


class ObjectNotFound(NotInLake):
    """The key does not exist (404, NoSuchKey, no such file): an answer, not a failure."""


class LedgerMissing(NotInLake):
    """A ledger is missing while later ledgers exist, longer than the exporter may take."""


class EmptyLake(NotInLake):
    """The lake holds no ledgers."""


class OutOfRange(NotInLake):
    """The ledger asked for is below the lake's oldest."""


class BadRequest(LiveSourceError):
    """The request cannot be served as asked; the message names the field."""


class UsageError(BadRequest):
    """A command line that cannot be run as given."""


class BadInputFile(LiveSourceError):
    """A file or folder given to a command does not exist or cannot be read."""


class ConfigError(LiveSourceError):
    """The configuration is wrong: ``problems`` holds every problem found, one
    per line of ``str()``."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StorageConfigError(ConfigError):
    """Found when storage is first asked: no such bucket or folder, credentials refused."""


class LakeConfigError(ConfigError):
    """The settings contradict the lake (its manifest), or the lake cannot be served as configured."""


class Outcome(NamedTuple):
    status: str  # the name of a grpc.StatusCode (this module imports no gRPC)
    exit_code: int


#: What each group means to a gRPC client and to a shell: the most specific class wins.
OUTCOMES: dict[type, Outcome] = {
    LiveSourceError: Outcome("INTERNAL", 1),
    BadData: Outcome("DATA_LOSS", 1),
    NotInLake: Outcome("NOT_FOUND", 1),
    OutOfRange: Outcome("OUT_OF_RANGE", 1),
    BadInputFile: Outcome("INVALID_ARGUMENT", 1),
    BadRequest: Outcome("INVALID_ARGUMENT", 2),
    ConfigError: Outcome("FAILED_PRECONDITION", 2),
    Unavailable: Outcome("UNAVAILABLE", 3),
    TooManyStreams: Outcome("RESOURCE_EXHAUSTED", 3),
}
EXIT_OK = 0
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


def outcome(exc: LiveSourceError) -> Outcome:
    """The gRPC status and exit code of an error: its nearest class in ``OUTCOMES``."""
    for cls in type(exc).__mro__:
        found = OUTCOMES.get(cls)
        if found is not None:
            return found
    raise TypeError(f"{type(exc).__name__} is not a LiveSourceError")


def exit_code_for_status(status: str) -> int:
    """The exit code for a call that ended with this gRPC status (by name):
    what the server's error would have exited with; 1 for statuses no error
    of ours ends with (a deadline, an internal error)."""
    if status == "OK":
        return EXIT_OK
    return max((o.exit_code for o in OUTCOMES.values() if o.status == status), default=1)
