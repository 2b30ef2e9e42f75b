"""Runs the test suite on an installed build twice: on the compiled core, then
with the pure-Python twins forced (STELLAR_LIVE_SOURCE_NO_EXTENSIONS=1, set
here rather than by a shell prefix, so that it works on Windows too).

    python tests/wheel_tests.py [pytest arguments...]

cibuildwheel's test command (pyproject.toml) and `make wheel-check` run it.
Exits non-zero if either run fails."""

from __future__ import annotations

import os
import subprocess
import sys

PURE = "STELLAR_LIVE_SOURCE_NO_EXTENSIONS"


def main(args: list[str]) -> int:
    failed = 0
    for label, extra in (("compiled core", {PURE: ""}), ("pure twins forced", {PURE: "1"})):
        print(f"== the suite on the {label}", flush=True)
        code = subprocess.call([sys.executable, "-m", "pytest", *args], env={**os.environ, **extra})
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
