"""Datalake object keys, pure-Python twin of ``_keys_c``.

Maps a ledger sequence to the key Stellar's ledger exporter writes it under
(inverted-hex partition folder and file name) and parses keys back, accepting
only keys that the layout itself would produce. Behaviour, messages included,
matches the compiled module exactly.
"""

from __future__ import annotations

import re

__all__ = ["EXTENSIONS", "Layout"]

#: ``.xdr.zst`` since August 2025, ``.xdr.zstd`` before.
EXTENSIONS = (".xdr.zst", ".xdr.zstd")

_MAX = 0xFFFFFFFF
_DIGITS = re.compile(r"[0-9]*")
_PARTITION_LIKE = re.compile(r"[0-9A-Fa-f]{8}--")


def _seq(seq: object) -> int:
    if isinstance(seq, int) and 0 <= seq <= _MAX:
        return seq
    raise ValueError(f"ledger sequence must be an int in 0..4294967295, got {seq!r}")


def _ext(extension: object) -> str:
    for ext in EXTENSIONS:
        if extension == ext:
            return ext
    raise ValueError(f"extension must be one of {EXTENSIONS}, got {extension!r}")


class Layout:
    """How an exporter groups ledgers into files and files into partitions."""

    __slots__ = ("ledgers_per_file", "files_per_partition", "extension", "ledgers_per_partition")
    # Set once in __init__ (read-only after, as the compiled Layout's properties).
    ledgers_per_file: int
    files_per_partition: int
    extension: str
    ledgers_per_partition: int

    def __init__(self, ledgers_per_file: int, files_per_partition: int, extension: str = ".xdr.zst") -> None:
        for name, value in (("ledgers_per_file", ledgers_per_file), ("files_per_partition", files_per_partition)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        per_partition = ledgers_per_file * files_per_partition
        if per_partition > _MAX:
            raise ValueError(f"ledgers_per_file * files_per_partition must fit in uint32, got {per_partition}")
        setattr_ = object.__setattr__  # the instance is immutable, like the compiled one
        setattr_(self, "ledgers_per_file", int(ledgers_per_file))
        setattr_(self, "files_per_partition", int(files_per_partition))
        setattr_(self, "extension", _ext(extension))
        setattr_(self, "ledgers_per_partition", int(per_partition))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Layout attribute {name!r} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Layout attribute {name!r} is read-only")

    def file_start(self, seq: int) -> int:
        seq = _seq(seq)
        return seq - seq % self.ledgers_per_file

    def file_end(self, seq: int) -> int:
        return min(self.file_start(seq) + self.ledgers_per_file - 1, _MAX)

    def partition_start(self, seq: int) -> int:
        seq = _seq(seq)
        return seq - seq % self.ledgers_per_partition

    def partition_end(self, seq: int) -> int:
        return min(self.partition_start(seq) + self.ledgers_per_partition - 1, _MAX)

    def partition_dir(self, seq: int) -> str:
        start = self.partition_start(seq)
        if self.files_per_partition == 1:
            return ""
        end = min(start + self.ledgers_per_partition - 1, _MAX)
        return f"{_MAX - start:08X}--{start}-{end}"

    def file_name(self, seq: int, extension: str | None = None) -> str:
        start = self.file_start(seq)
        ext = self.extension if extension is None else _ext(extension)
        if self.ledgers_per_file == 1:
            return f"{_MAX - start:08X}--{start}{ext}"
        end = min(start + self.ledgers_per_file - 1, _MAX)
        return f"{_MAX - start:08X}--{start}-{end}{ext}"

    def object_key(self, seq: int, extension: str | None = None) -> str:
        name = self.file_name(seq, extension)
        folder = self.partition_dir(seq)
        return f"{folder}/{name}" if folder else name

    def parse_key(self, key: str) -> tuple[int, int, str]:
        """``(file_start, file_end, extension)`` of a key this layout would write.

        Anything before the partition folder is taken as a prefix; a parent
        component shaped like a partition folder must be the right one.
        """
        if not isinstance(key, str):
            raise TypeError(f"key must be str, got {type(key).__name__}")
        slash = key.rfind("/")
        name = key[slash + 1 :]
        for ext in EXTENSIONS:
            if name.endswith(ext):
                break
        else:
            raise ValueError(f"bad datalake key {key!r} for {self!r}: no extension of {EXTENSIONS}")
        stem = name[: -len(ext)]
        digits_at = _DIGITS.match(stem, 10) if stem[8:10] == "--" else None
        digits = digits_at.group() if digits_at else ""
        if not 1 <= len(digits) <= 10 or int(digits) > _MAX:
            raise ValueError(f"bad datalake key {key!r} for {self!r}: malformed file name")
        start = int(digits)
        # Regenerating and comparing checks hex, alignment, width and spelling at once.
        expected = self.file_name(start, ext)
        if name != expected:
            raise ValueError(f"bad datalake key {key!r} for {self!r}: file name should be {expected!r}")
        if slash >= 0:
            parent = key[key.rfind("/", 0, slash) + 1 : slash]
            if self.files_per_partition == 1:
                if _PARTITION_LIKE.match(parent):
                    raise ValueError(f"bad datalake key {key!r} for {self!r}: layout has no partition folders")
            else:
                folder = self.partition_dir(start)
                if parent != folder and _PARTITION_LIKE.match(parent):
                    raise ValueError(f"bad datalake key {key!r} for {self!r}: partition folder should be {folder!r}")
        return start, min(start + self.ledgers_per_file - 1, _MAX), ext

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return (self.ledgers_per_file, self.files_per_partition, self.extension) == (
            other.ledgers_per_file,
            other.files_per_partition,
            other.extension,
        )

    def __hash__(self) -> int:
        return hash((self.ledgers_per_file, self.files_per_partition, self.extension))

    def __reduce__(self):
        return Layout, (self.ledgers_per_file, self.files_per_partition, self.extension)

    def __repr__(self) -> str:
        return (
            f"Layout(ledgers_per_file={self.ledgers_per_file}, "
            f"files_per_partition={self.files_per_partition}, extension={self.extension!r})"
        )
