"""An engine is one file: the toy engine of ``toy_engine.py``, registered here, runs through
``run``, a sweep and the preflight with no other change to the package."""

from __future__ import annotations

import io

import numpy as np
import pytest
from toy_engine import Toy

import scaling_sgd as ss
from scaling_sgd._src import preflight
from scaling_sgd._src.config import defaults
from scaling_sgd._src.errors import ConfigError, ResourceError
from scaling_sgd._src.sweep import plan, run_sweep
from scaling_sgd.engines import ENGINES, register_engine

RAW = {
    "teacher": {"P": 4, "beta": 1.0},
    "student": {"m": 3},
    "data": {"d": 16},
    "train": {"engine": "toy", "steps": 10_000, "lr": [1e-2, 2e-2], "seed": [0, 1], "progress": False},
    "log": {"points": 60},
}


@pytest.fixture
def toy():
    register_engine(Toy)
    yield Toy
    ENGINES.pop(Toy.name, None)


def _expected_times(res, rate):
    """Closed-form emergence steps ``h / (rate a_p lr)`` ``(R, P)``."""
    _, h = res.criterion()
    return h / (rate * res.a * res.lr[:, None])


def test_the_toy_engine_owns_its_table(toy):
    assert defaults()["toy"] == {"rate": 1.0, "bytes_per_neuron": 8.0}
    cfg = ss.resolve_config({**RAW, "toy": {"rate": 3}})
    assert cfg["toy"]["rate"] == 3.0
    with pytest.raises(ConfigError, match=r"^toy\.rate: got -1"):
        ss.resolve_config({**RAW, "toy": {"rate": -1}})
    with pytest.raises(ConfigError, match=r"^toy\.nope: unknown key"):
        ss.resolve_config({**RAW, "toy": {"nope": 1}})


def test_the_toy_engine_runs_and_its_emergence_steps_are_the_closed_form(toy, tmp_path):
    rate = 0.01
    res = ss.run({**RAW, "toy": {"rate": rate}}, out=tmp_path / "run")
    assert res.meta["engine"] == "toy" and res.R == 4
    times, censored = res.emergence_times()
    want = _expected_times(res, rate)
    # interpolation in log step on a geometric grid of ratio q is exact to within a factor q
    q = float(np.max(res.step[2:] / res.step[1:-1]))
    learned = want < res.step[-1]
    assert np.any(learned) and np.any(~learned)
    np.testing.assert_allclose(times[learned], want[learned], rtol=q - 1)
    assert np.all(censored == ~learned)
    back = ss.load_run(tmp_path / "run")  # the results checks read the same schema
    np.testing.assert_array_equal(back.skill, res.skill)


def test_the_toy_engine_runs_in_a_sweep(toy, tmp_path):
    raw = {**RAW, "toy": {"rate": 1.0}, "sweep": {"toy.rate": [1.0, 4.0], "m": [2, 3]}}
    pl = plan(raw)
    assert len(pl.points) == 4
    counts = run_sweep(pl, tmp_path / "sw", stream=io.StringIO())
    assert counts["computed"] == 4 and counts["failed"] == 0
    for p in pl.points:
        res = ss.load_run(tmp_path / "sw" / p.dir)
        assert res.norm2.shape[-1] == p.config["student"]["m"]
        want = _expected_times(res, p.config["toy"]["rate"])
        times, _ = res.emergence_times()
        fin = np.isfinite(times)
        assert np.any(fin)
        q = float(np.max(res.step[2:] / res.step[1:-1]))
        np.testing.assert_allclose(times[fin], want[fin], rtol=q - 1)


def test_the_preflight_uses_the_toy_engine_memory_and_advice(toy, tmp_path):
    spec = ss.build_spec(ss.resolve_config({**RAW, "toy": {"bytes_per_neuron": 1e6}}))
    parts = preflight.memory_estimate(spec)
    assert parts["toy state"] == int(1e6 * spec.R * 3)
    need = sum(parts.values())
    preflight.check_memory(spec, (need, "test memory", 1))
    with pytest.raises(ResourceError, match=r"toy state .*reduce toy\.bytes_per_neuron"):
        preflight.check_memory(spec, (need - 1, "test memory", 1))
    # a sweep is refused before any point runs
    big = {**RAW, "toy": {"bytes_per_neuron": 1e30}, "sweep": {"m": [2, 3]}}
    with pytest.raises(ResourceError, match="toy state"):
        run_sweep(plan(big), tmp_path / "big", stream=io.StringIO())
    assert not (tmp_path / "big" / "points").exists()  # nothing made either
