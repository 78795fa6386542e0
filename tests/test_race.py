"""The race model (analysis/race.py): a parameter-free prediction of each replica's emergence
steps from its own initial student, checked against the flow engine and in its parts."""

from __future__ import annotations

import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src.schedules import tau_over_lr
from scaling_sgd.analysis.escape import flow_escape_time, pair_escape_times
from scaling_sgd.analysis.race import _escape_lower_bound, race, race_from_config, tau_to_steps


def _run(P, m, seeds, engine="sgd", **train):
    return ss.run(
        {
            "teacher": {"P": P, "beta": 1.0},
            "student": {"m": m},
            "data": {"d": 64},
            "train": {"engine": engine, "steps": 200, "lr": 1e-3, "seed": seeds, "progress": False, **train},
            "log": {"points": 5},
        }
    )


@pytest.mark.slow
def test_the_race_is_won_in_time_order_by_free_neurons():
    """Each direction goes to the neuron with the earliest escape among the pairs left once
    the earlier escapes took their neuron and direction (the greedy race)."""
    res = _run(P=6, m=5, seeds=[0, 1, 2])
    pred = race(res)
    obs0 = res.initial_observables()
    tau = pair_escape_times(np.abs(obs0["overlap"]), obs0["norm2"][:, :, None], res.a[:, None, :])
    for r in range(res.R):
        taken, left = set(), set(range(6))
        for p in np.argsort(pred.tau[r]):
            if not np.isfinite(pred.tau[r, p]):
                break
            i = pred.neuron[r, p]
            free = [j for j in range(5) if j not in taken]
            cand = tau[r][np.ix_(free, sorted(left))]
            assert i not in taken and tau[r, i, p] == pytest.approx(cand.min(), rel=1e-3)
            taken.add(i)
            left.discard(p)
    # m < P: exactly one direction per replica has no neuron, and it makes the plateau
    assert np.all(np.sum(pred.neuron < 0, axis=1) == 1)
    np.testing.assert_allclose(pred.plateau, pred.K1 * np.sum(np.where(pred.neuron < 0, res.a**2, 0.0), axis=1))
    np.testing.assert_allclose(pred.steps, pred.tau / res.lr[:, None])  # the constant clock
    late = 10.0 * np.max(pred.steps[np.isfinite(pred.steps)])
    loss = pred.loss(np.asarray([0.0, late]))
    np.testing.assert_allclose(loss[:, 0], pred.K1 * np.sum(res.a**2, axis=1))  # nothing learned at step 0
    np.testing.assert_allclose(loss[:, 1], pred.plateau)  # after the last escape: the plateau


@pytest.mark.parametrize("schedule", ["inverse_sqrt", "inverse_time"])
def test_tau_to_steps_inverts_the_clock(schedule):
    T, n0 = 10_000, 100.0
    t = np.asarray([0.0, 1.0, 37.0, 500.0, 9_999.0])
    x = tau_over_lr(schedule, t, T, n0)
    np.testing.assert_allclose(tau_to_steps(x, schedule, T, n0), t, rtol=1e-6, atol=1e-6)
    assert np.isinf(tau_to_steps(tau_over_lr(schedule, 2 * T, T, n0), schedule, T, n0))


@pytest.mark.slow
def test_the_race_needs_an_information_exponent_above_two():
    res = ss.run(
        {
            "teacher": {"P": 2, "activation": "h2"},
            "student": {"m": 2},
            "data": {"d": 16},
            "train": {"steps": 20, "progress": False},
            "log": {"points": 3},
        }
    )
    with pytest.raises(ValueError, match="k > 2"):
        race(res)


@pytest.mark.slow
@pytest.mark.parametrize(("Pm", "seeds"), [(32, [0, 1]), (64, [0])])
def test_the_race_predicts_the_flow_emergence_steps(Pm, seeds):
    """P = m, beta = 1, h4, d = 1e4, float64 flow to tau = 5e4: the median over directions
    and seeds of T_p(flow) / T_p(race) lies within 5% of 1, and the race never calls a
    direction learned that the flow leaves unlearned in the run, or the reverse, for more
    than 5% of the directions (the race ignores the competition of late directions)."""
    res = ss.run(
        {
            "teacher": {"P": Pm, "beta": 1.0},
            "student": {"m": Pm},
            "data": {"d": 10_000},
            "train": {"engine": "flow", "steps": 500_000_000, "lr": 1e-4, "seed": seeds, "dtype": "float64", "progress": False},
            "log": {"points": 400},
        }
    )
    pred = race(res)
    T, _ = res.emergence_times()
    both = np.isfinite(T) & np.isfinite(pred.steps)
    assert both.sum() >= 0.8 * T.size
    ratio = np.median(T[both] / pred.steps[both])
    assert abs(ratio - 1.0) <= 0.05, ratio
    disagree = np.isfinite(T) != (pred.steps < res.step[-1])
    assert disagree.mean() <= 0.05, disagree.sum()


def test_race_from_config_is_the_race_of_the_run_it_describes():
    """The race of a config, before any run, is bitwise the race of that run, and a seed's
    prediction does not depend on its place among the replicas."""
    cfg = {
        "teacher": {"P": 6, "beta": 1.0},
        "student": {"m": 5},
        "data": {"d": 64},
        "train": {"engine": "sgd", "steps": 200, "lr": 1e-3, "seed": [0, 1, 2], "progress": False},
        "log": {"points": 2},  # race_from_config's own start grid: one compiled start for both
    }
    ran, unrun = race(ss.run(cfg)), race_from_config(cfg)
    for name in ("steps", "tau", "neuron", "a"):
        np.testing.assert_array_equal(getattr(unrun, name), getattr(ran, name), err_msg=name)
    assert np.isfinite(ran.steps).sum() == 15  # m = P - 1: one direction per seed has no neuron
    moved = race_from_config({**cfg, "train": {**cfg["train"], "seed": [2, 0, 1]}})
    np.testing.assert_array_equal(moved.steps, ran.steps[[2, 0, 1]])


@pytest.mark.slow
def test_race_from_config_is_the_race_of_a_flow_run():
    """The same for the flow engine with its default solver and a 200-point log grid, which
    ``race_from_config`` replaces for its start (``ros2``, two points): the initial students
    are the engine's, not the solver's or the log grid's; nor do they depend on the replica
    bucket (one seed alone)."""
    cfg = {
        "teacher": {"P": 8, "beta": 0.8},
        "student": {"m": 8},
        "data": {"d": 64},
        "train": {"engine": "flow", "steps": 1_000, "lr": 1e-3, "seed": [0, 1, 2], "dtype": "float64", "progress": False},
        "log": {"points": 200},
    }
    ran, unrun = race(ss.run(cfg)), race_from_config(cfg)
    for name in ("steps", "tau", "neuron", "a"):
        np.testing.assert_array_equal(getattr(unrun, name), getattr(ran, name), err_msg=name)
    assert np.isfinite(ran.steps).all()
    alone = race_from_config({**cfg, "train": {**cfg["train"], "seed": [1]}})  # another replica bucket
    np.testing.assert_array_equal(alone.steps[0], ran.steps[1])


def test_the_race_within_the_run_leaves_out_only_pairs_that_escape_after_it():
    """``within_run``: the bound that prunes pairs is below the exact escape time (h3, h4,
    h6; skill and alignment), and with every pair timed directly (both paths of
    ``pair_escape_times`` the same) the directions won within the run keep the full race's
    steps exactly, the others are ``inf``."""
    rng = np.random.default_rng(0)
    m0 = np.exp(rng.uniform(np.log(1e-4), np.log(0.6), (6, 5)))
    r2, a = np.exp(rng.uniform(np.log(1e-3), np.log(1e2), 6)), np.exp(rng.uniform(np.log(1e-2), 0.0, 5))
    for k in (3, 4, 6):
        coeffs = np.eye(k + 1)[k]
        for observable, threshold in (("skill", 0.5), ("skill", 0.9), ("alignment", 0.5)):
            lb = _escape_lower_bound(m0, r2, a, coeffs, threshold, observable)
            exact = flow_escape_time(m0, r2[:, None], a[None, :], coeffs, threshold, observable)
            assert np.all(lb <= exact * (1 + 1e-6)), (k, observable, threshold)
            assert np.mean(lb >= 0.5 * exact) > 0.5  # a bound that prunes, not zero
    cfg = {
        "teacher": {"P": 12, "beta": 0.8},
        "student": {"m": 12},
        "data": {"d": 1000},
        "train": {"engine": "sgd", "steps": 2_000_000_000, "lr": 1e-3, "seed": [0, 1], "progress": False},
        "log": {"points": 2},
    }
    full = race_from_config(cfg)
    end = int(np.median(full.steps))
    within = race_from_config({**cfg, "train": {**cfg["train"], "steps": end}}, within_run=True)
    inside = full.steps <= end
    assert 0 < inside.sum() < inside.size
    np.testing.assert_array_equal(within.steps[inside], full.steps[inside])
    np.testing.assert_array_equal(within.neuron[inside], full.neuron[inside])
    assert np.all(np.isinf(within.steps[~inside])) and np.all(within.neuron[~inside] == -1)
