"""The Python API: run -> Result, load_run, load_sweep, named accessors, xarray."""

import numpy as np
import pytest

import scaling_sgd as ss

from helpers import small_config

RAW = {
    "teacher": {"P": 3, "beta": [1.0, 2.0]},
    "student": {"m": 4},
    "data": {"d": 16},
    "train": {"steps": 60, "lr": [1e-3, 3e-3], "seed": [0, 1, 2], "progress": False},
    "log": {"points": 6},
}


@pytest.fixture(scope="module")
def res():
    return ss.run(RAW)


@pytest.mark.slow
def test_run_accepts_a_raw_dict_numpy_scalars_and_activation_objects():
    cfg = {
        "teacher": {"P": np.int64(2), "activation": ss.hn(4)},
        "student": {"m": np.int32(2)},
        "data": {"d": np.int64(8)},
        "train": {"steps": 10, "seed": np.arange(2), "lr": np.float32(1e-3), "progress": False},
        "log": {"points": 3},
    }
    r = ss.run(cfg)
    assert r.config["data"]["d"] == 8 and type(r.config["data"]["d"]) is int
    assert r.config["teacher"]["activation"] == {"4": 1.0}  # serialisable, and what a TOML file would say
    assert r.config["train"]["seed"] == [0, 1]
    # the same numbers as the equivalent plain config
    plain = ss.run(
        {
            **cfg,
            "teacher": {"P": 2, "activation": "h4"},
            "student": {"m": 2},
            "data": {"d": 8},
            "train": {"steps": 10, "seed": [0, 1], "lr": float(np.float32(1e-3)), "progress": False},
        }
    )
    np.testing.assert_array_equal(r.loss, plain.loss)
    with pytest.raises(ss.ConfigError, match="data.d"):
        ss.run({"data": {"d": np.float64(8.5)}})


def test_result_accessors_follow_the_replica_grid(res):
    grid = ss._src.config.replica_grid(res.config)
    assert res.R == 12 and res.loss.shape == (12, res.step.size) and res.skill.shape[-1] == 3
    np.testing.assert_array_equal(res.replicas["seed"], grid["seed"])
    np.testing.assert_array_equal(res.replicas["beta"], grid["beta"])
    sub = res.sel(beta=2.0, lr=3e-3)
    assert sub.R == 3 and np.all(sub.replicas["beta"] == 2.0) and np.all(sub.replicas["lr"] == 3e-3)
    np.testing.assert_array_equal(sub.loss, res.loss[(res.metrics["beta"] == 2.0) & (res.metrics["lr"] == 3e-3)])
    lab = res.unstack()
    assert lab.dims("skill") == ("beta", "lr", "seed", "step", "direction")
    assert lab["loss"].shape == (2, 2, 3, res.step.size)
    # element (beta=2, lr=1e-3, seed=1) is the replica with those settings
    r = np.flatnonzero((res.metrics["beta"] == 2.0) & (res.metrics["lr"] == 1e-3) & (res.metrics["seed"] == 1))[0]
    np.testing.assert_array_equal(lab["loss"][1, 0, 1], res.loss[r])
    with pytest.raises(AttributeError, match="no attribute or metric"):
        _ = res.not_a_metric
    rows = np.array([0, 1, 5])  # not a beta x lr x seed product
    R = res.R
    odd = ss.Result(
        res.config,
        {k: (v[rows] if np.ndim(v) and np.shape(v)[0] == R and k != "step" else v) for k, v in res.metrics.items()},
        res.meta,
    )
    with pytest.raises(ValueError, match="not a full"):
        odd.unstack()


def test_meta_rate_counts_every_sample_of_every_replica(res):
    """``samples_per_s`` is steps x batch size x replicas over the run's wall time."""
    m, B = res.meta, res.config["train"]["batch_size"]
    assert m["replicas"] == res.R == 12
    assert m["samples_per_s"] * m["wall_time_s"] == pytest.approx(int(res.step[-1]) * B * res.R, rel=1e-12)


def test_schema_size_per_replica_step_counts_the_logged_numbers(res):
    """``size_per_replica_step`` is the count of numbers each replica logs at a log point:
    the observables of a run, with and without the optional ones."""
    from scaling_sgd._src.model import OPTIONAL_OBSERVABLES
    from scaling_sgd._src.schema import LOGGED, size_per_replica_step

    sizes = {"direction": res.skill.shape[-1], "neuron": res.config["student"]["m"]}
    logged = {k: res.metrics[k][0, 0].size for k in LOGGED if k in res.metrics}
    assert size_per_replica_step(sizes, overlap=True) == sum(logged.values())
    assert "overlap" in logged  # (the default logs it)
    no_optional = sum(n for k, n in logged.items() if k not in OPTIONAL_OBSERVABLES)
    assert size_per_replica_step(sizes, overlap=False) == no_optional < sum(logged.values())


def test_emergence_times_never_count_a_diverged_replica():
    r = ss.run(small_config(**{"train.lr": [1e-3, 50.0], "train.steps": 300, "log.points": 30}))
    assert list(r.diverged) == [False, True]
    t, cens = r.emergence_times()
    assert np.all(np.isnan(t[1])) and not cens[1].any()


def test_load_run_round_trip_and_xarray(res, tmp_path):
    out = tmp_path / "run"
    r = ss.run(RAW, out=out)
    back = ss.load_run(out)
    for k in r.metrics:
        np.testing.assert_array_equal(back.metrics[k], r.metrics[k])
    assert back.config == r.config and back.path == out and not back.partial
    xr = pytest.importorskip("xarray")
    ds = back.to_xarray()
    assert isinstance(ds, xr.Dataset)
    # the replicated settings are dimensions, beside the schema's own
    assert ds["skill"].dims == ("beta", "lr", "seed", "step", "direction")
    assert ds["overlap"].dims == ("beta", "lr", "seed", "step", "neuron", "direction")
    assert ds["a"].dims == ("beta", "lr", "seed", "direction") and ds["diverged"].dims == ("beta", "lr", "seed")
    assert ds["beta"].values.tolist() == [1.0, 2.0] and ds["lr"].values.tolist() == [1e-3, 3e-3]
    assert ds["direction"].values.tolist() == [1, 2, 3]
    # one element against the flat replica axis (beta x lr x seed, seed fastest)
    one = (r.metrics["beta"] == 2.0) & (r.metrics["lr"] == 1e-3) & (r.metrics["seed"] == 1)
    np.testing.assert_array_equal(ds["loss"].sel(beta=2.0, lr=1e-3, seed=1).values, r.loss[one][0])
    np.testing.assert_array_equal(ds["loss"].sel(step=r.step[-1]).values.ravel(), r.loss[:, -1])
    # replicas that are not a full grid keep one replica dimension, the settings on it
    part = ss.Result(r.config, {k: (v if k == "step" else v[[0, 5]]) for k, v in r.metrics.items()}, r.meta)
    dp = part.to_xarray()
    assert dp["skill"].dims == ("replica", "step", "direction") and dp["seed"].values.tolist() == [0, 2]
    # the repr of the named views stays one line
    assert repr(back.unstack()).count("\n") == 0 and len(repr(back.unstack())) < 300


@pytest.mark.slow
def test_load_sweep_names_the_swept_dimensions(tmp_path):
    from scaling_sgd.cli import main

    toml = tmp_path / "s.toml"
    toml.write_text(
        "[teacher]\nP = 2\n[student]\nm = 2\n[train]\nprogress = false\nsteps = 40\nseed = [0, 1]\n[log]\npoints = 5\n"
        "[sweep]\nd = [8, 12]\nm = [2, 3]\nlr = [1e-3, 2e-3]\n"
    )
    out = tmp_path / "sw"
    assert main(["sweep", str(toml), "--out", str(out)]) == 0
    lab = ss.load_sweep(out, "loss")
    assert lab.dims("loss") == ("d", "m", "beta", "lr", "seed", "step")
    assert lab["loss"].shape == (2, 2, 1, 2, 2, lab.coords["step"].size)
    assert lab.coords["d"] == [8, 12] and lab.coords["m"] == [2, 3] and lab.coords["lr"] == [1e-3, 2e-3]
    # one element against the point's own run
    alone = ss.run(
        {
            "teacher": {"P": 2},
            "student": {"m": 3},
            "data": {"d": 12},
            "train": {"progress": False, "steps": 40, "seed": [1], "lr": 2e-3},
            "log": {"points": 5},
        }
    )
    np.testing.assert_allclose(lab["loss"][1, 1, 0, 1, 1, : alone.step.size], alone.loss[0], rtol=1e-6)
    if pytest.importorskip("xarray"):
        ds = lab.to_xarray()
        assert ds["loss"].dims == lab.dims("loss") and ds["step_value"].dims == ("d", "m", "step")


def test_load_sweep_makes_a_zip_axis_one_dimension(tmp_path):
    from scaling_sgd.cli import main

    toml = tmp_path / "z.toml"
    toml.write_text(
        "[teacher]\nP = 2\n[student]\nm = 2\n[train]\nprogress = false\nsteps = 40\nseed = [0, 1]\n[log]\npoints = 5\n"
        "[sweep]\ninit_scale = [0.1, 0.2]\nzip = [{d = 8, steps = 40}, {d = 12, steps = 60}]\n"
    )
    out = tmp_path / "sw"
    assert main(["sweep", str(toml), "--out", str(out)]) == 0
    lab = ss.load_sweep(out, "loss")
    assert lab.dims("loss") == ("init_scale", "zip", "beta", "lr", "seed", "step")
    assert lab["loss"].shape[:5] == (2, 2, 1, 1, 2)
    assert lab.coords["d"] == (("zip",), [8, 12]) and lab.coords["steps"] == (("zip",), [40, 60])
    # no all-nan cell: every (init_scale, zip entry) is a point
    assert not np.isnan(lab["loss"][..., 0]).any()
    # the d = 12 entry ran to step 60, the d = 8 one to 40
    assert np.nanmax(lab.coords["step_value"][1][:, 1]) == 60 and np.nanmax(lab.coords["step_value"][1][:, 0]) == 40
    if pytest.importorskip("xarray"):
        ds = lab.to_xarray()
        assert ds["d"].dims == ("zip",) and ds["loss"].sel(init_scale=0.2).isel(zip=1).dims == ("beta", "lr", "seed", "step")


def test_analysis_takes_a_result_and_draws_its_figures(res, tmp_path):
    import matplotlib

    import scaling_sgd.analysis as ana

    a = ana.analyze(res, n_boot=50)
    assert isinstance(a, ana.RunAnalysis) and a.replicas == res.R - int(res.diverged.sum())
    np.testing.assert_array_equal(a.times, res.emergence_times()[0][~res.diverged])
    # the same analysis from the run directory
    r = ss.run(RAW, out=tmp_path / "run")
    b = ana.analyze(tmp_path / "run", n_boot=50)
    np.testing.assert_array_equal(b.times, ana.analyze(r, n_boot=50).times)
    for fig in (a.plot_staircase(), a.plot_emergence(), a.plot_loss(), a.plot_heatmap()):
        assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
        matplotlib.pyplot.close(fig)


CACHE_CHILD = """
import json, sys
import scaling_sgd as ss
from scaling_sgd._src.runner import enable_compilation_cache
ss.run({"teacher": {"P": 2}, "student": {"m": 2}, "data": {"d": 8}, "train": {"steps": 4, "progress": False}})
import jax
print(json.dumps([enable_compilation_cache(), jax.config.jax_compilation_cache_dir]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_run_caches_its_compiled_programs_under_the_user_cache_folder(tmp_path, switch):
    """A run turns on JAX's on-disk cache in ``$XDG_CACHE_HOME/scaling-sgd/jax`` and writes
    its programs there; ``SCALING_SGD_COMPILATION_CACHE=0`` leaves it off (fresh processes:
    the cache is process-wide)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "SCALING_SGD_COMPILATION_CACHE": switch}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", CACHE_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    folder = tmp_path / "scaling-sgd" / "jax"
    if switch == "1":
        assert json.loads(out.stdout.strip().splitlines()[-1]) == [str(folder), str(folder)]
        assert any(folder.iterdir())  # the compiled programs were written
    else:
        assert json.loads(out.stdout.strip().splitlines()[-1]) == [None, None] and not folder.exists()
