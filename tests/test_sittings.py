"""An experiment with a point per seed, finished over several sittings (sims/load.py): a
sweep stopped early leaves the points done so far in its record, a fresh checkout reads
them from there instead of computing them again, and the analysis pools the points into
one run of all the seeds."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import scaling_sgd as ss
from sims import load, record

TOML = """
[experiment]
title = "a point per seed"
[teacher]
P = 2
beta = 1.0
activation = "h4"
[student]
m = 2
[data]
d = 16
[train]
engine = "sgd"
steps = 400
lr = 1e-3
seed = 0
progress = false
[sweep]
zip = [{seed = 0}, {seed = 1}, {seed = 2}]
[log]
points = 6
"""


@pytest.fixture
def exp(tmp_path, monkeypatch):
    S = tmp_path / "sims"
    S.mkdir()
    (S / "90_seeds.toml").write_text(TOML)
    for k, v in (("SIMS", S), ("RUN_ROOT", tmp_path / "results" / "sims"), ("DATA_DIR", S / "data")):
        monkeypatch.setattr(load, k, v)
    return load.load_experiment("90_seeds")


def _stop_after_first(real, asked):
    """``sweep.run_sweep`` that computes the first point it is given, then is interrupted."""

    def run(pl, out, **kw):
        asked.append([p.dir for p in pl.points])
        real(type(pl)(pl.base, pl.swept, pl.grid, pl.points[:1]), out, **kw)
        raise KeyboardInterrupt

    return run


def test_a_stopped_sweep_keeps_its_done_points_and_a_fresh_checkout_does_not_recompute_them(exp, monkeypatch):
    real = load.sweep.run_sweep
    dirs = [p.dir for p in exp.plan().points]
    file = record.path(load.DATA_DIR, exp.tag)
    asked = []
    monkeypatch.setattr(load.sweep, "run_sweep", _stop_after_first(real, asked))
    with pytest.raises(KeyboardInterrupt):
        load.run_sweep(exp)
    assert list(record.points(file)) == dirs[:1]  # the record holds the point done before the stop
    with pytest.raises(record.RecordError, match="holds 1 of the 3 points"), load.replaying():
        load.run_sweep(exp)  # an unfinished record refits nothing

    shutil.rmtree(exp.run_root)  # a fresh checkout: the run folders are gone, the record is not
    asked.clear()

    def counting(pl, out, **kw):
        asked.append([p.dir for p in pl.points])
        return real(pl, out, **kw)

    monkeypatch.setattr(load.sweep, "run_sweep", counting)
    runs = load.run_sweep(exp)
    assert asked == [dirs[1:]]  # only the two points not in the record were computed
    assert list(record.points(file)) == dirs
    # the point read from the record gives the numbers a run of its config gives
    solo = ss.run(exp.plan().points[0].config)
    np.testing.assert_array_equal(runs[0].metrics["loss"], solo.metrics["loss"])
    np.testing.assert_array_equal(runs[0].times, load.Run({}, solo.config, solo.meta, solo.metrics).times)
    # a second fresh checkout computes nothing at all
    shutil.rmtree(exp.run_root)
    asked.clear()
    assert [r.metrics["loss"].tolist() for r in load.run_sweep(exp)] == [r.metrics["loss"].tolist() for r in runs]
    assert asked == [] and not exp.run_root.exists()
    # and a replay of the finished record gives the same runs
    with load.replaying():
        again = load.run_sweep(exp)
    for a, b in zip(runs, again):
        np.testing.assert_array_equal(a.metrics["loss"], b.metrics["loss"])
        np.testing.assert_array_equal(a.times, b.times)


def test_pooled_joins_the_seed_points_into_one_run_of_all_their_replicas(exp):
    runs = load.run_sweep(exp)
    r = load.pooled(runs)
    assert r.cfg["train"]["seed"] == [0, 1, 2] and r.meta["points"] == 3 and r.meta["replicas"] == 3
    assert r.meta["wall_time_s"] == pytest.approx(sum(x.meta["wall_time_s"] for x in runs))
    np.testing.assert_array_equal(r.metrics["loss"], np.concatenate([x.metrics["loss"] for x in runs]))
    np.testing.assert_array_equal(r.metrics["seed"], [0, 1, 2])
    np.testing.assert_array_equal(r.step, runs[0].step)
    np.testing.assert_array_equal(r.times, np.concatenate([x.times for x in runs]))
    assert load.pooled(runs[:1]) is runs[0]
    other = load.Run(runs[1].settings, {**runs[1].cfg, "data": {**runs[1].cfg["data"], "d": 32}}, runs[1].meta, runs[1].metrics)
    with pytest.raises(ValueError, match="more than train.seed"):
        load.pooled([runs[0], other])
