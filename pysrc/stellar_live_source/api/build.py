"""Writes the descriptor sets of ``api.DESCRIPTOR_SETS`` from ``proto/``
(``make protos``; needs grpcio-tools, a test dependency). Run from the
repository root."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from . import DESCRIPTOR_SETS, HERE

PROTO = Path("proto")


def build(out: Path = HERE, proto: Path = PROTO) -> list[Path]:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    well_known = str(resources.files("grpc_tools") / "_proto")
    written = []
    for name, files in DESCRIPTOR_SETS.items():
        target = out / name
        args = ["protoc", f"-I{proto}", f"-I{well_known}", "--include_source_info", f"--descriptor_set_out={target}"]
        if protoc.main([*args, *files]) != 0:
            raise SystemExit(f"protoc failed on {', '.join(files)}")
        written.append(target)
    return written


if __name__ == "__main__":
    for path in build():
        print(path, file=sys.stderr)
