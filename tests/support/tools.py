"""The delivery tools (hadolint, kubectl, helm, kubernetes-validate,
check-jsonschema, promtool) the packaging tests run: from ``.tools/bin``
(``make tools``) or the PATH. Under CI (``CI`` set) a missing tool fails the
test, so a green CI run means every check really ran; elsewhere it skips,
naming how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"


def tool(name: str) -> str:
    """The path of ``name``, or the test fails (CI) or skips (elsewhere)."""
    local = TOOLS / name
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    how = "apt-get install prometheus" if name == "promtool" else "make tools"
    message = f"{name} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(name: str, *args: str | Path, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``name args...``, its output captured; a non-zero exit fails the test with that output."""
    out = subprocess.run(
        [tool(name), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"{name} {' '.join(map(str, args))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out
