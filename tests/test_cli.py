"""Command line: bad input is one line naming the key, exit 2, nothing lost."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling_sgd.cli import main

from helpers import TINY_TOML

GOOD = TINY_TOML


@pytest.fixture
def good_cfg(tmp_path):
    p = tmp_path / "good.toml"
    p.write_text(GOOD)
    return p


BAD = [
    (["--set", "teacher.P=20"], "teacher.P"),
    (["--set", "student.m=0"], "student.m"),
    (["--set", "teacher.beta=-1"], "teacher.beta"),
    (["--set", "train.lr=0"], "train.lr"),
    (["--set", "train.lr=[1e-3, -2e-3]"], "train.lr"),
    (["--set", "teacher.activation=''"], "teacher.activation"),
    (["--set", "teacher.activation={}"], "teacher.activation"),
    (["--set", "teacher.activation=h99"], "teacher.activation"),
    (["--set", "train.steps=0"], "train.steps"),
    (["--set", "train.steps=1.5"], "train.steps"),
    (["--set", "data.d='many'"], "data.d"),
    (["--set", "train.bogus=1"], "train.bogus"),
    (["--set", "nonsense.x=1"], "nonsense"),
    (["--set", "train.engine=magic"], "train.engine"),
    (["--set", "train.optimizer=nope"], "train.optimizer"),
    (["--set", "train.optimizer_kwargs={foo=1}"], "train.optimizer_kwargs"),
    (["--set", "train.engine='reduced'", "--set", "train.optimizer=adam"], "train.optimizer"),
    (["--set", "train.dtype=float16"], "train.dtype"),
    (["--set", "teacher.a=[1.0]"], "teacher.a"),
    (["--set", "analysis.threshold=2"], "analysis.threshold"),
    (["--set", "train.engine='reduced'", "--set", "data.d=4"], "data.d"),
    (["--set", "log.overlap=maybe"], "log.overlap"),
]


@pytest.mark.parametrize("extra,key", BAD)
def test_bad_config_exits_2_naming_the_key(good_cfg, tmp_path, capsys, extra, key):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = main(["run", str(good_cfg), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and key in err[0] and "accepted" in err[0], err
    assert sorted(os.listdir(out)) == ["keep.txt"]  # nothing written, nothing lost


def test_missing_file_and_bad_toml(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[teacher\nP=")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "not valid TOML" in err


def test_run_writes_results_format(good_cfg, tmp_path):
    out = tmp_path / "res"
    assert main(["run", str(good_cfg), "--out", str(out), "--set", "train.lr=[1e-3,2e-3]"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["train"]["lr"] == [1e-3, 2e-3] and len(cfg["hash"]) == 16
    assert {"jax", "backend", "device"} <= set(cfg["environment"]) and cfg["wall_time_s"] > 0
    with np.load(out / "metrics.npz") as z:
        R, T = 4, z["step"].size
        assert z["step"].dtype == np.int64 and z["step"][0] == 0 and z["step"][-1] == 20
        assert np.all(np.diff(z["step"]) > 0)
        assert z["loss"].shape == (R, T) and z["skill"].shape == (R, T, 2) and z["alignment"].shape == (R, T, 2)
        assert z["norm2"].shape == (R, T, 2) and z["overlap"].shape == (R, T, 2, 2)
        assert z["diverged"].dtype == bool and z["diverged_step"].dtype == np.int64
        assert list(z["seed"]) == [0, 1, 0, 1] and list(z["lr"]) == [1e-3, 1e-3, 2e-3, 2e-3]
    assert not list(out.glob(".*tmp"))


def test_console_script_installed(good_cfg, tmp_path):
    exe = Path(sys.executable).parent / "scaling-sgd"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "scaling_sgd.cli"]
    r = subprocess.run([*cmd, "run", str(good_cfg), "--set", "data.d=1"], capture_output=True, text=True)
    assert r.returncode == 2 and "teacher.P" in r.stderr


def test_results_files_are_readable_like_plain_files(good_cfg, tmp_path):
    out = tmp_path / "perm"
    assert main(["run", str(good_cfg), "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "metrics.npz"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("command", ["run", "demo"])
def test_an_interrupted_run_or_demo_writes_the_part_done_and_exits_130(good_cfg, tmp_path, monkeypatch, command):
    """Ctrl-C between chunks (the driver's Interrupted, raised here after the first half of
    the log points): the command writes those log points as a run marked partial, exits
    130, and the same command again runs it to the end."""
    from scaling_sgd._src import runner
    from scaling_sgd._src.engines.driver import Interrupted

    real = runner.simulate

    def stopped(*a, **k):
        raw = real(*a, **k)
        half = raw["step"].size // 2
        part = {key: (v[:, :half] if getattr(v, "ndim", 0) >= 2 else v) for key, v in raw.items()}
        raise Interrupted(dict(part, step=raw["step"][:half]), "SIGINT")

    out = tmp_path / "out"
    args = (
        [command, str(good_cfg), "--out", str(out)]
        if command == "run"
        else ["demo", "--config", str(good_cfg), "--out", str(out)]
    )
    monkeypatch.setattr(runner, "simulate", stopped)
    assert main(args) == 130
    meta = json.loads((out / "config.json").read_text())
    assert meta["partial"] is True and meta["interrupted_by"] == "SIGINT"
    with np.load(out / "metrics.npz") as z:
        assert z["loss"].shape[1] == z["step"].size < 6  # the first half of the 6 log points
    monkeypatch.setattr(runner, "simulate", real)
    assert main(args) == 0
    with np.load(out / "metrics.npz") as z:
        assert z["step"].size == 6
