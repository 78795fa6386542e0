"""Emergence crossings located between solver steps (``crossings``, the flow's ``crossing_step``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src import schedules
from scaling_sgd._src.emergence import emergence_times, run_emergence_times
from scaling_sgd._src.engines import crossings


def test_hermite_root_is_exact_for_a_cubic():
    # g(t) = (t - 0.3)(t + 1)(t + 2): a cubic, so its Hermite interpolant on [0, 1] is itself
    def g(t):
        return (t - 0.3) * (t + 1) * (t + 2)

    def dg(t):
        return (t + 1) * (t + 2) + (t - 0.3) * (t + 2) + (t - 0.3) * (t + 1)

    th = crossings.hermite_root(jnp.asarray([g(0.0)]), jnp.asarray([dg(0.0)]), jnp.asarray([g(1.0)]), jnp.asarray([dg(1.0)]), 1.0)
    np.testing.assert_allclose(np.asarray(th), [0.3], atol=1e-9)


def test_hermite_root_error_falls_as_the_fourth_power_of_the_step():
    # g(t) = exp(t) - 1.5 crosses at log(1.5); steps of length h around it
    def err(h):
        t0 = np.log(1.5) - 0.37 * h
        g0, g1 = np.exp(t0) - 1.5, np.exp(t0 + h) - 1.5
        th = crossings.hermite_root(jnp.asarray(g0), jnp.asarray(np.exp(t0)), jnp.asarray(g1), jnp.asarray(np.exp(t0 + h)), h)
        return abs(t0 + float(th) * h - np.log(1.5))

    e = np.array([err(h) for h in (0.4, 0.2, 0.1)])
    assert e[0] < 1e-4
    # fourth order: each halving of the step divides the error by ~16 (2^3 would be third order)
    assert np.all(e[1:] / e[:-1] < 1 / 10), e


@pytest.mark.parametrize("schedule", schedules.SCHEDULES)
def test_step_at_inverts_tau_over_lr(schedule):
    T = 1e6
    t = np.array([0.0, 1.0, 37.5, 1e3, 4.2e5, 9.99e5])
    tau = schedules.tau_over_lr(schedule, t, T, 0.0)
    back = schedules.step_at(schedule, tau, T, 0.0)
    np.testing.assert_allclose(back, t, rtol=1e-9, atol=1e-6)
    assert np.isinf(schedules.step_at(schedule, np.array([np.inf]), T))[0]


def _flow(points: int, rtol: float = 1e-5, observable: str = "skill") -> dict:
    raw = {
        "teacher": {"P": 8, "beta": 1.0, "activation": "h4"},
        "student": {"m": 8},
        "data": {"d": 1000},
        "train": {"engine": "flow", "steps": int(2e8), "lr": 1e-4, "seed": [0, 1, 2], "dtype": "float64", "progress": False},
        "log": {"points": points},
        "flow": {"solver": "rkc", "rtol": rtol, "atol": 1e-12},
        "analysis": {"observable": observable},
    }
    return ss.run(ss.resolve_config(raw), progress=False)


@pytest.mark.slow
def test_flow_crossings_match_a_dense_log_grid_and_beat_a_sparse_one():
    ref = _flow(4000, rtol=1e-8)  # interpolation error ~ (log-step spacing)^2: ~4e-6 here
    t_ref, _ = emergence_times(ref.metrics["step"], ref.metrics["skill"], 0.5)
    coarse = _flow(50)
    t_exact, cens = run_emergence_times(coarse.metrics, coarse.config)
    t_interp, _ = emergence_times(coarse.metrics["step"], coarse.metrics["skill"], 0.5)
    assert np.array_equal(np.isinf(t_exact), np.isinf(t_ref)) and np.array_equal(cens, np.isinf(t_ref))
    ok = np.isfinite(t_ref) & (t_ref > 0)
    assert ok.sum() >= 12
    dev_exact = np.abs(t_exact[ok] / t_ref[ok] - 1)
    dev_interp = np.abs(t_interp[ok] / t_ref[ok] - 1)
    # the located crossings sit within the solver's tolerance of the reference, far
    # closer than the 50-point log grid's interpolation
    assert np.median(dev_exact) < 1e-3
    assert np.median(dev_exact) < 0.1 * np.median(dev_interp)
    # and the run's own steps are the same whatever event the solver follows
    other = _flow(50, observable="alignment")
    np.testing.assert_array_equal(other.metrics["loss"], coarse.metrics["loss"])
    assert not np.array_equal(other.metrics["crossing_step"], coarse.metrics["crossing_step"])
