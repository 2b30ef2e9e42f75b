"""The wheels cibuildwheel builds, as pyproject.toml configures it: CPython 3.11
to 3.14 on manylinux and musllinux (x86_64, aarch64), macOS (arm64, x86_64)
and Windows (AMD64). Listed by cibuildwheel itself (building needs a container
engine or the other systems)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from .support.tools import ROOT, run

PYTHONS = ("cp311", "cp312", "cp313", "cp314")
EXPECTED = {
    "linux": {
        f"{py}-{libc}_{arch}" for py in PYTHONS for libc in ("manylinux", "musllinux") for arch in ("x86_64", "aarch64")
    },
    "macos": {f"{py}-macosx_{arch}" for py in PYTHONS for arch in ("arm64", "x86_64")},
    "windows": {f"{py}-win_amd64" for py in PYTHONS},
}


@pytest.mark.parametrize("platform", sorted(EXPECTED))
def test_cibuildwheel_selects_every_target(platform):
    out = run("cibuildwheel", "--print-build-identifiers", "--platform", platform, ROOT)
    assert set(out.stdout.split()) == EXPECTED[platform]


def test_the_wheel_test_command_runs_both_twins_without_a_shell_prefix():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    command = config["test-command"]
    assert command.startswith("python {project}/tests/wheel_tests.py ") and "=" not in command.split()[0]
    assert "-m " not in command  # no marker filter: the whole suite
    assert config["test-extras"] == ["test"]


def test_wheel_tests_runs_the_suite_twice_and_fails_when_either_run_fails(tmp_path):
    # A suite with one test that passes only on the compiled core: the wrapper must fail.
    (tmp_path / "test_which.py").write_text(
        "import os\n"
        "def test_compiled():\n"
        "    assert os.environ.get('STELLAR_LIVE_SOURCE_NO_EXTENSIONS', '') in ('', '0')\n"
    )
    args = [sys.executable, str(ROOT / "tests" / "wheel_tests.py"), str(tmp_path), "-q", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if k != "STELLAR_LIVE_SOURCE_NO_EXTENSIONS"}
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 1, out.stdout
    assert "the suite on the compiled core" in out.stdout and "the suite on the pure twins forced" in out.stdout
    assert out.stdout.count("1 passed") == 1 and out.stdout.count("1 failed") == 1
