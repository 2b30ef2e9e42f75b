"""Builds the compiled core: every ``ext/**/*.pyx`` becomes an extension
module named after its path under ``ext/`` (``ext/stellar_live_source/core/_walk_c.pyx``
-> ``stellar_live_source.core._walk_c``).

zstd is vendored (decoder only, ``ext/vendor/zstd``, zstd 1.5.7, BSD) and
compiled into ``_zstd_c``, so a plain ``pip install`` and cibuildwheel's images
need nothing beyond a C compiler.

``STELLAR_LIVE_SOURCE_DEBUG=1`` at build time turns on the core's debug-only
invariant checks (``invariant()`` in the .pyx files, ``SLS_CORE_DEBUG`` in C):
a failed one prints what broke and aborts, so fuzzing and the tests catch it.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
EXT = Path("ext")
ZSTD = EXT / "vendor" / "zstd"
DEBUG = os.environ.get("STELLAR_LIVE_SOURCE_DEBUG", "") not in ("", "0")


def zstd_sources():
    files = sorted((ROOT / ZSTD / "common").glob("*.c")) + sorted((ROOT / ZSTD / "decompress").glob("*.c"))
    return [str(p.relative_to(ROOT)) for p in files]


def extensions():
    from Cython.Build import cythonize

    macros = [("SLS_CORE_DEBUG", "1")] if DEBUG else [("NDEBUG", "1")]
    cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
    if sys.platform == "win32":
        cflags = []
    only = os.environ.get("STELLAR_LIVE_SOURCE_BUILD_ONLY", "")  # dev: rebuild one module
    exts = []
    for pyx in sorted((ROOT / EXT / "stellar_live_source").rglob("*.pyx")):
        if only and pyx.stem not in only.split(","):
            continue
        rel = pyx.relative_to(ROOT)
        name = ".".join(rel.relative_to(EXT).with_suffix("").parts)
        sources = [str(rel)]
        include_dirs = [str(EXT)]
        ext_macros = list(macros)
        if pyx.stem == "_zstd_c":
            sources += zstd_sources()
            include_dirs.append(str(ZSTD))
            # python-zstandard's bundled zstd also builds without the asm
            # Huffman decoder; it keeps the build portable to every wheel target.
            ext_macros += [("ZSTD_DISABLE_ASM", "1"), ("ZSTD_LEGACY_SUPPORT", "0"), ("XXH_NAMESPACE", "SLS_ZSTD_")]
        exts.append(
            Extension(name, sources, include_dirs=include_dirs, define_macros=ext_macros, extra_compile_args=cflags)
        )
    return cythonize(
        exts,
        include_path=[str(EXT)],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        quiet=True,
    )


setup(ext_modules=extensions())
