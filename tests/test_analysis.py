"""Analysis: emergence times, spread, sharpness, emergence score, power-law fits, report."""

import json
import math
import sys

import numpy as np
import pytest

from analysis.emergence import emergence_score, emergence_times, log_median, sharpness, spread
from analysis.fit import fit_power_law

STEP = np.concatenate([[0], np.unique(np.geomspace(1, 1e6, 300).astype(np.int64))])


def _logistic(T, w):
    """Skill curves ``1 / (1 + exp(-(ln t - ln T) / w))``: ``(R, len(STEP), P)`` from ``T (R, P)``."""
    lt = np.log(np.maximum(STEP, 1e-300))[None, :, None]
    z = np.clip((lt - np.log(T)[:, None, :]) / w, -700, 700)
    return np.where(STEP[None, :, None] > 0, 1.0 / (1.0 + np.exp(-z)), 0.0)


def test_emergence_times_exact_for_curves_linear_in_log_step():
    # y linear in log(step) between log points => the interpolated crossing is exact
    T = np.array([[37.5, 1234.0, 5.5e4, 8.9e5]])
    lt = np.log(np.maximum(STEP, 1))[None, :, None]
    y = np.clip(0.5 + (lt - np.log(T)[:, None, :]) / 3.0, 0.0, 1.0)
    t, cens = emergence_times(STEP, y, 0.5)
    np.testing.assert_allclose(t, T, rtol=1e-12)
    assert not cens.any()
    t3, c3 = emergence_times(STEP, y, 0.8)  # another level: T * exp(0.3 * 3), censored past the last step
    np.testing.assert_allclose(t3[:, :3], T[:, :3] * np.exp(0.9), rtol=1e-12)
    assert np.isinf(t3[0, 3]) and c3.tolist() == [[False, False, False, True]]


def test_censoring_and_spread():
    T = np.array([[100.0, 1e4], [200.0, 1e9], [400.0, 2e9], [800.0, 3e9]])  # 1e9+ never reached
    t, cens = emergence_times(STEP, _logistic(T, 0.05), 0.5)
    assert np.array_equal(cens[:, 1], [False, True, True, True]) and np.all(np.isinf(t[1:, 1]))
    assert not cens[:, 0].any()
    s = spread(t)
    np.testing.assert_allclose(s["median"][0], math.sqrt(200.0 * 400.0), rtol=2e-3)  # log-median of an even count
    assert math.isinf(s["median"][1]) and s["n_censored"].tolist() == [0, 3]
    assert math.isinf(s["q_hi"][1]) and math.isfinite(s["q_hi"][0])
    assert math.isinf(log_median(np.array([1.0, np.inf, np.inf])))
    assert log_median(np.array([1.0, 4.0, np.inf])) == pytest.approx(4.0)


def test_noisy_curves_crossing_within_noise():
    rng = np.random.default_rng(0)
    T = np.exp(rng.uniform(np.log(1e2), np.log(1e5), size=(20, 5)))
    y = _logistic(T, 0.1) + 0.02 * rng.standard_normal((20, STEP.size, 5))
    t, cens = emergence_times(STEP, y, 0.5)
    assert not cens.any()
    # slope of the curve at the crossing is 1/(4w) = 2.5 per unit ln t: 3 sigma of noise = 0.024 in ln t,
    # plus the first-passage bias of at most one grid spacing (0.046)
    err = np.abs(np.log(t / T))
    assert err.max() < 0.1, err.max()
    assert abs(np.mean(np.log(t / T))) < 0.03


def test_sharpness_of_logistic_transition():
    w = np.array([0.05, 0.2, 0.5])
    T = np.array([[1e3, 1e3, 1e3]])
    lt = np.log(np.maximum(STEP, 1))[None, :, None]
    y = 1.0 / (1.0 + np.exp(-(lt - np.log(T)[:, None, :]) / w[None, None, :]))
    width = sharpness(STEP, y)
    np.testing.assert_allclose(width[0], 2 * w * np.log(9.0) / np.log(10.0), rtol=0.02)


def test_emergence_score_closed_forms():
    n = 11
    ramp = np.linspace(0.0, 1.0, n)
    assert emergence_score(ramp) == pytest.approx(n - 1)  # range 1 / increment 1/(n-1)
    assert emergence_score(ramp[::-1]) == pytest.approx(-(n - 1))
    step = np.r_[np.zeros(5), np.ones(6)]
    assert np.isinf(emergence_score(step))  # a yes/no metric of one seed: infinitely sharp
    noisy = step + 0.01 * np.r_[1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1]
    assert emergence_score(noisy) == pytest.approx(1.02 / 0.02)
    # sharp directions, smooth sum: per-direction skill scores far exceed the total loss
    T = np.geomspace(1e2, 1e5, 12)[None, :]
    grid = np.geomspace(50, 2e5, 40)
    lt = np.log(grid)[:, None]
    skill = 1 / (1 + np.exp(-(lt - np.log(T)) / 0.05))
    a2 = np.arange(1, 13.0) ** -2.0
    loss = (a2[None, :] * (1 - skill)).sum(1)
    assert np.min(emergence_score(skill, axis=0)) > 20 * abs(emergence_score(loss))
    assert emergence_score(loss) < 0


def test_power_law_fit_recovers_exponent_and_window():
    rng = np.random.default_rng(1)
    x = np.geomspace(1, 1e4, 40)
    y = 3.0 * x**-0.7 * np.exp(0.1 * rng.standard_normal((16, x.size)))
    y[:, x > 1e3] = 1e-9  # a floor outside the window must not bias the fit
    f = fit_power_law(x, y, window=(1.0, 1e3), stat="median", n_boot=500, seed=2)
    assert f.window[1] <= 1e3 and f.n_points == int(np.sum(x <= 1e3))
    assert abs(f.slope + 0.7) < 0.02 and f.covers(-0.7), f
    assert f.r2 > 0.99 and f.rms_log10 < 0.03 and 0.1 < f.chi2_red < 5
    g = fit_power_law(x, y.mean(0), window=(1.0, 1e3))  # one curve: OLS t-interval
    assert g.method == "ols-t" and g.covers(-0.7) and abs(g.slope + 0.7) < 0.02


def test_bootstrap_interval_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(3)
    x = np.arange(1.0, 9.0)
    hits, n_rep = 0, 200
    for i in range(n_rep):
        y = 2.0 * x**1.3 * np.exp(0.3 * rng.standard_normal((24, x.size)))
        f = fit_power_law(x, y, stat="median", n_boot=400, seed=i)
        hits += f.covers(1.3)
    cover = hits / n_rep
    # nominal 0.95; binomial sd 0.015; percentile bootstrap of a median of 24 runs slightly wide/narrow
    assert 0.88 <= cover <= 0.99, cover


def test_end_to_end_sgd_run_analysed(tmp_path, capsys):
    from analysis.report import analyze_run
    from scaling_sgd._src.cli import main
    from scaling_sgd._src.runner import run

    from helpers import small_config

    cfg = small_config(
        **{
            "teacher.P": 4,
            "teacher.beta": 1.5,
            "student.m": 8,
            "data.d": 32,
            "train.lr": 1e-4,
            "train.steps": 400_000,
            "train.seed": [0, 1, 2, 3, 4, 5],
            "log.points": 80,
        }
    )
    out = tmp_path / "run"
    run(cfg, out)
    s = analyze_run(out, stream=sys.stdout)
    em = json.loads((out / "emergence.json").read_text())
    med = [d["median"] for d in em["directions"]]
    assert all(v is not None for v in med) and med == sorted(med), med
    f = s["fits"]["emergence_time_vs_p"]
    assert f["theory"] == 1.5 and f["ci"][0] < f["slope"] < f["ci"][1]
    assert 0.7 < f["slope"] < 2.5, f
    for name in ("staircase", "emergence_vs_p", "loss_vs_step", "heatmap"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").is_file()
    # the flow theory from the initial overlaps predicts each replica's T_p within a factor 3
    ratio = np.array([d["measured_over_theory_median"] for d in em["directions"]])
    assert np.all((ratio > 1 / 3) & (ratio < 3)), ratio
    assert main(["analyze", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "emergence time vs p" in printed and "theory" in printed


def test_analyze_rejects_non_results_dir(tmp_path, capsys):
    from scaling_sgd._src.cli import main

    (tmp_path / "x.txt").write_text("hi")
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a results directory" in err[0] and "accepted" in err[0]
    assert main(["analyze", str(tmp_path / "missing")]) == 2
