"""The prepared GPU check (benchmarks/gpu_check.sh) runs its whole code path on the CPU at
tiny sizes (``--cpu-dry-run``) and writes a JSON whose figures are consistent."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_run_writes_its_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["mode"] == "cpu-dry-run" and rep["environment"]["backend"] == "cpu"
    assert rep["bounds"]["normals_per_s"] > 0 and rep["bounds"]["matmul_flop_per_s"] > 0
    for row in rep["sgd"]:
        rate = row["samples_per_s"]
        assert math.isfinite(rate) and rate > 0
        # the fractions are the rate over the bounds measured in the same process
        assert row["of_gaussian_bound"] == pytest.approx(rate * row["d"] / rep["bounds"]["normals_per_s"])
        assert row["of_matmul_bound"] == pytest.approx(rate * 4 * row["d"] * row["m"] / rep["bounds"]["matmul_flop_per_s"])
    flow = rep["flow"]
    assert flow["finished"] and flow["last_step"] == flow["steps"] and flow["diverged"] == 0
    # the same device twice gives the same numbers, bit for bit
    assert rep["consistency"] and all(r["max_rel_diff"] == 0.0 and r["agrees"] for r in rep["consistency"])
