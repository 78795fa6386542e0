"""Resumable runs: a run stopped mid-way (SIGINT, SIGTERM, kill -9) and started again with the
same config and output folder ends with the numbers of an uninterrupted run, bit for bit,
having computed only the part after its last checkpoint."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src import runner
from scaling_sgd._src.checkpoint import checkpoint_path
from scaling_sgd._src.engines.driver import simulate
from scaling_sgd._src.progress import NoProgress

ARRAYS = ("loss", "skill", "alignment", "norm2", "overlap", "diverged", "diverged_step", "step")

CONFIGS = {
    "sgd": {"train": {"engine": "sgd", "steps": 20_000, "lr": [1e-3, 2e-3], "seed": [0, 1]}},
    "reduced": {"train": {"engine": "reduced", "steps": 20_000, "lr": [1e-3], "seed": [0, 3]}, "data": {"d": 32}},
    "flow": {
        "train": {"engine": "flow", "steps": 20_000_000, "lr": [1e-3], "seed": [0, 1], "dtype": "float64"},
        "data": {"d": 64},
    },
}


def _config(engine: str) -> dict:
    raw = {"teacher": {"P": 3, "beta": 1.0}, "student": {"m": 4, "init_scale": 0.3}, "data": {"d": 16}, "log": {"points": 40}}
    for table, body in CONFIGS[engine].items():
        raw[table] = {**raw.get(table, {}), **body}
    raw["train"] = {**raw["train"], "progress": False}
    return ss.resolve_config(raw)


class _StopAfter(NoProgress):
    """A progress meter that sends this process ``sig`` after ``n`` chunks (a stop mid-run)."""

    def __init__(self, n: int, sig=signal.SIGINT):
        self.n, self.sig, self.calls = n, sig, 0

    def update(self, done, fraction=None, diverged=0):
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), self.sig)


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(CONFIGS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_resumes_to_the_uninterrupted_numbers(engine, sig, tmp_path, monkeypatch):
    cfg = _config(engine)
    whole, _ = runner.run(ss.build_spec(cfg), None)
    out = tmp_path / "run"
    monkeypatch.setattr(runner, "NoProgress", lambda: _StopAfter(3, sig))
    # small chunks, a checkpoint after every one: the stop lands mid-run
    monkeypatch.setattr(runner, "simulate", functools.partial(simulate, first_budget=8))
    part, meta = runner.run(ss.build_spec(cfg), out, keep_partial=True, checkpoint_s=0.0)
    assert meta["partial"] and 0 < meta["last_step"] < int(whole["step"][-1])
    assert checkpoint_path(out).is_file()
    monkeypatch.setattr(runner, "NoProgress", NoProgress)
    again, meta2 = runner.run(ss.build_spec(cfg), out, checkpoint_s=0.0)
    # the rerun computed only what was left
    assert 0 < meta2["resumed_from_step"] < int(whole["step"][-1])
    assert meta2["resumed_from_step"] >= meta["last_step"]
    for k in ARRAYS:
        if k in whole:
            np.testing.assert_array_equal(again[k], whole[k], err_msg=k)
    assert not checkpoint_path(out).exists()  # the finished run removed it
    np.testing.assert_array_equal(ss.load_run(out).loss, whole["loss"])


def test_a_checkpoint_of_another_config_is_not_used(tmp_path, monkeypatch):
    cfg = _config("sgd")
    other = ss.resolve_config({**cfg, "train": {**cfg["train"], "lr": [1e-3, 3e-3]}})
    out = tmp_path / "run"
    monkeypatch.setattr(runner, "NoProgress", lambda: _StopAfter(3))
    monkeypatch.setattr(runner, "simulate", functools.partial(simulate, first_budget=8))
    runner.run(ss.build_spec(other), out, keep_partial=True, checkpoint_s=0.0)
    assert checkpoint_path(out).is_file()
    monkeypatch.setattr(runner, "NoProgress", NoProgress)
    whole, _ = runner.run(ss.build_spec(cfg), None)
    got, meta = runner.run(ss.build_spec(cfg), out, force=True, checkpoint_s=0.0)
    assert "resumed_from_step" not in meta
    np.testing.assert_array_equal(got["loss"], whole["loss"])


SLOW_CONFIG = """
[teacher]
P = 3
[student]
m = 4
init_scale = 0.3
[data]
d = 256
[train]
steps = 2_000_000
lr = 1e-4
seed = [0, 1]
progress = false
[log]
points = 60
"""


@pytest.mark.slow
def test_kill_9_then_the_run_resumes(tmp_path):
    """A real ``scaling-sgd run`` killed with SIGKILL after a checkpoint: ``ss.run`` of the
    same config into the same folder finishes it from there, and its arrays equal an
    uninterrupted run's."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(SLOW_CONFIG)
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "SCALING_SGD_CHECKPOINT_S": "0",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "run"
    ck = checkpoint_path(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling_sgd.cli", "run", str(cfg), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more chunks and checkpoints
    assert proc.poll() is None, "the run ended before it could be killed: make it longer"
    proc.kill()
    proc.wait()
    assert ck.is_file() and not (out / "metrics.npz").exists()
    res = ss.run(cfg, out=out, progress=False)
    whole = ss.run(cfg, progress=False)
    assert 0 < res.meta["resumed_from_step"] < int(whole.step[-1])  # only the rest was computed
    for k in ARRAYS:
        if k in whole.metrics:
            np.testing.assert_array_equal(res.metrics[k], whole.metrics[k], err_msg=k)
    assert not ck.exists()
