"""``python -m stellar_live_source.xdrgen [--check] [--root DIR]``: regenerate the walkers.

Reads the XDR definitions of the pinned stellar-sdk and writes the Cython
walker (``ext/stellar_live_source/core/_walk_gen.pxi``) and its pure twin
(``pysrc/stellar_live_source/core/_walk_gen_py.py``). ``--check`` writes
nothing and exits 1 when either file differs from what would be generated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .emit import emit_cython, emit_python
from .grammar import load_stellar_sdk, sdk_version
from .plan import Plan

#: Where the generated files live, relative to the project root.
TARGETS = {
    "cython": Path("ext/stellar_live_source/core/_walk_gen.pxi"),
    "python": Path("pysrc/stellar_live_source/core/_walk_gen_py.py"),
}


def project_root(start: Path) -> Path:
    """The source checkout around ``start`` (the generator writes source, not an install)."""
    for folder in [start, *start.parents]:
        if (folder / "ext" / "stellar_live_source").is_dir():
            return folder
    raise SystemExit(f"not inside a source checkout of stellar-live-source-datalake: {start}")


def generate(root: Path) -> dict[Path, str]:
    plan = Plan(load_stellar_sdk())
    version = sdk_version()
    return {root / TARGETS["cython"]: emit_cython(plan, version), root / TARGETS["python"]: emit_python(plan, version)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stellar_live_source.xdrgen", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether the committed files are current")
    ap.add_argument("--root", type=Path, default=None, help="the project checkout (default: around the working folder)")
    args = ap.parse_args(argv)
    root = args.root or project_root(Path.cwd())
    stale = []
    for path, text in generate(root).items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(root)}", file=sys.stderr)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
