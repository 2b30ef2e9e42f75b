"""Coverage-guided fuzzing of the XDR walkers and indexers with atheris.

Coverage comes from the pure-Python twin (atheris instruments it; its code
mirrors the generated C line for line); every input also runs through the
compiled twin, and the two must agree exactly: same spans and facts, or the
same error at the same offset in the same type.

    pip install atheris
    python tests/fuzz/fuzz_walk.py -max_total_time=3600 [corpus_dir]

(``make fuzz``; FUZZ_SECONDS sets the time.) The seed corpus is built from the
real ledgers in ../shared/testdata when it is there. Any exception other than
the core's own errors, and any crash, is a finding. For native coverage of
the generated C, build with ``CFLAGS=-fsanitize=fuzzer-no-link`` and clang.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import atheris

with atheris.instrument_imports():
    # A script: its own folder is on sys.path (the type checker sees it as tests.fuzz.agree).
    from agree import assert_twins_agree  # type: ignore[import-not-found]

    # Imported inside the block so that atheris instruments them (coverage comes from them).
    from stellar_live_source.core import _index_py, _walk_gen_py, _walk_py  # noqa: F401 - see above

from stellar_live_source.core import _index_c, _walk_c

COMPILED = SimpleNamespace(walk=_walk_c, index=_index_c)
PURE = SimpleNamespace(walk=_walk_py, index=_index_py)

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "ledgers"


def one_input(data: bytes) -> None:
    if data:
        mode, fallback, body = data[0] % 3, bool(data[0] & 4), data[1:]
        assert_twins_agree(COMPILED, PURE, mode, fallback, body)


def seed_corpus() -> str:
    folder = tempfile.mkdtemp(prefix="fuzz-walk-")
    for i, path in enumerate(sorted(TESTDATA.glob("**/*.xdr"))[:40]):
        (Path(folder) / f"raw{i}").write_bytes(b"\x01" + path.read_bytes())
    return folder


if __name__ == "__main__":
    args = sys.argv + (
        [seed_corpus()] if TESTDATA.exists() and not any(not a.startswith("-") for a in sys.argv[1:]) else []
    )
    atheris.Setup(args, one_input)
    atheris.Fuzz()
