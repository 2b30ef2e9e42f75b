"""A smoke run of the load test script (``benchmarks/load.py``), so it cannot
rot: two tip streams for about 3 seconds against a real `serve`, no pinning.
Only that it runs and reports: never a time."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_testdata

pytestmark = [needs_testdata, pytest.mark.timeout(60)]


def test_load_script_tip_smoke(tmp_path):
    figures_file = tmp_path / "figures.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--mode", "tip", "--streams", "2"]
    cmd += ["--seconds", "3", "--cadence", "0.25", "--pin", "off", "--json", str(figures_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=45, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^settings: .*POLL_INTERVAL=100ms", out, re.M), out
    m = re.search(r"^throughput: ([\d,.]+) ledgers/s, ([\d,.]+) MB/s", out, re.M)
    assert m and float(m.group(1).replace(",", "")) > 0, out
    assert re.search(r"^latency landing->client ms: p50 [\d.]+ p90 [\d.]+ p99 [\d.]+ max [\d.]+", out, re.M), out
    assert re.search(r"^errors: 0 .*refused: 0", out, re.M), out
    (figures,) = [json.loads(line) for line in figures_file.read_text().splitlines()]
    assert figures["samples"] == figures["expected"] > 0
    assert figures["run"]["pinned"] is False
