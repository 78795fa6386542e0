"""Divergence in the loop: the largest stable lr (one compiled program, then refined), the
command line's ``lr-scan`` and its line for a run whose replicas all diverged, and a
parser that answers without JAX."""

import subprocess
import sys

import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src.engines import driver
from scaling_sgd.cli import main

from helpers import TINY_TOML, small_config

# reduced, two seeds: cheap, and its stability edge lies below lr = 0.01
SCAN = {"train.engine": "reduced", "train.steps": 400, "log.points": 6, "train.seed": [0, 1], "student.init_scale": 0.3}


@pytest.mark.slow
def test_stable_lr_is_the_edge_between_a_stable_and_a_diverging_rate_in_one_program():
    cfg = small_config(**{**SCAN, "train.lr": 0.01})
    # the scan's program: 4 rates x 2 seeds
    ss.run(small_config(**{**SCAN, "train.lr": [1.0, 2.0, 3.0, 4.0], "log.overlap": False}))
    n0 = driver.compiled_programs()
    scan = ss.scan_lr(cfg, points=4)
    assert driver.compiled_programs() == n0  # the grid, its moves and the refinement share one program
    best = scan.lr
    assert best is not None and best == ss.stable_lr(cfg, points=4)
    tried = dict((lr, k) for lr, k, _ in scan.tried)
    assert tried[best] == 0
    above = min(lr for lr in tried if lr > best)
    assert tried[above] > 0  # the next rate tried above it diverged
    assert above / best < 2 ** (1 / 5) * 1.0001  # refined to within one step of the fine grid
    # a run of the config at that rate: no replica diverges; at the rate above, one does
    assert not ss.run(small_config(**{**SCAN, "train.lr": best})).metrics["diverged"].any()
    assert ss.run(small_config(**{**SCAN, "train.lr": above})).metrics["diverged"].any()


@pytest.mark.slow
def test_lr_scan_command_and_the_all_diverged_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY_TOML.replace("steps = 20", "steps = 2000").replace("lr = 1e-3", "lr = 500.0"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--set", "student.init_scale=1.0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    line = [x for x in err if "every replica diverged" in x]
    assert len(line) == 1 and "by step" in line[0] and "of 2,000" in line[0] and "try lr = " in line[0]
    suggested = float(line[0].split("try lr = ")[1].split()[0])
    assert 0 < suggested < 500.0
    res = ss.load_run(tmp_path / "r")
    assert res.meta["all_diverged_at"] < 2000 and np.all(res.metrics["diverged"])
    assert main(["lr-scan", str(cfg), "--points", "4", "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "largest stable lr:" in out and "diverged" in out


def test_the_parser_the_package_and_config_errors_do_not_import_jax(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TOML.replace("[student]", "[student]\nbogus = 1"))
    code = (
        "import sys, scaling_sgd, scaling_sgd.cli as c\n"
        "c._parser().format_help()\n"
        "assert 'jax' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
        f"assert c.main(['run', {str(bad)!r}]) == 2\n"
        "c.load_resolved(" + repr(str(bad).replace("bad", "ok")) + ", [])\n"
        "heavy = [m for m in ('jax', 'optax', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    (tmp_path / "ok.toml").write_text(TINY_TOML.replace("[train]", "[train]\nengine = 'flow'"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1 and "student.bogus" in r.stderr  # the one line of the bad config
