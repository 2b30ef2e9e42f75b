from typing_extensions import Buffer

DEFAULT_MAX_DEPTH: int
DEBUG: bool  # built with the debug-only invariant checks
TYPE_NAMES: tuple[str, ...]
SDK_CLASSES: tuple[str, ...]
RECURSIVE: tuple[int, ...]
SHA256: str  # what hashes headers: "libcrypto" (the one hashlib loaded, called directly) or "hashlib"

_Span = tuple[int, int, bool]  # offset, length, delimited by the hash-chain fallback

def split_batch(buf: Buffer, max_depth: int = ..., fallback: bool = ...) -> tuple[int, int, list[_Span]]: ...
def split_ledgers(
    buf: Buffer,
    offset: int = ...,
    end: int = ...,
    count: int = ...,
    max_depth: int = ...,
    fallback: bool = ...,
    first: int = ...,
) -> list[_Span]: ...
def walk_type(name: str, buf: Buffer, max_depth: int = ...) -> int: ...
