"""zstd decompression (compiled, vendored libzstd); see ``_zstd_py`` for the pure twin."""

from typing import Final

from typing_extensions import Buffer

ZSTD_VERSION: Final[str]

def decompress(data: Buffer, max_size: int) -> bytes: ...
def content_size(data: Buffer) -> int | None: ...
def prefaulted_bytes() -> int: ...
