"""Analysis: emergence times, spread, sharpness, emergence score, power-law fits, the loss fit window,
bootstrap intervals, report."""

import json
import math
import sys

import numpy as np
import pytest

from scaling_sgd.analysis.core import replica_groups, select_replicas
from scaling_sgd.analysis.emergence import (
    emergence_score,
    emergence_times,
    log_median,
    log_scatter,
    loss_fit_rule,
    loss_fit_window,
    replica_window_scores,
    sharpness,
    spread,
    window_scores,
)
from scaling_sgd.analysis.fit import bootstrap, fit_power_law, loss_exponent, window_slope

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


def test_loss_fit_window_is_between_ranks_of_the_finite_median_times():
    # P = 30: from the 2nd to the max(30 // 10, 4) = 4th finite median, sorted, censored ignored
    med = np.array([50.0, 10.0, np.inf, 20.0, 40.0, 30.0] + [np.inf] * 24)
    assert loss_fit_window(med) == (20.0, 40.0)
    assert loss_fit_rule(30) == "the 2nd to the 4th median emergence"
    # P = 256: up to the P // 10 = 25th
    med = np.r_[np.arange(1.0, 31.0)[::-1], np.full(226, np.inf)]
    assert loss_fit_window(med) == (2.0, 25.0) and loss_fit_rule(256) == "the 2nd to the 25th median emergence"
    # too few directions learned for the window: no window, so no fit
    assert all(math.isnan(v) for v in loss_fit_window(np.r_[np.arange(1.0, 25.0), np.full(232, np.inf)]))
    assert all(math.isnan(v) for v in loss_fit_window(np.full(30, np.inf)))
    # a negative upper rank counts from the largest finite median: 2nd to next-to-last
    assert loss_fit_window(np.array([16.0, 1.0, np.inf, 9.0, 4.0]), hi_rank=-2) == (4.0, 9.0)
    assert loss_fit_window(np.array([1.0, 4.0, 9.0, 16.0]), lo_rank=1, hi_rank=-1) == (1.0, 16.0)
    assert all(math.isnan(v) for v in loss_fit_window(np.array([1.0, 2.0, np.inf]), hi_rank=-2))  # fewer than three
    assert loss_fit_rule(8, hi_rank=-2) == "the 2nd to the next-to-last median emergence"


def test_log_scatter_recovers_sigma_and_ignores_censored():
    rng = np.random.default_rng(5)
    T = np.exp(np.log([10.0, 100.0, 1000.0])[None, :] + 0.3 * rng.standard_normal((3000, 3)))
    assert log_scatter(T) == pytest.approx(0.3, rel=0.03)
    # the offsets between directions do not count, only the spread around each direction's median
    assert log_scatter(T * np.array([1.0, 1e3, 1e-2])) == pytest.approx(log_scatter(T), rel=1e-12)
    T[::2, 1] = np.inf  # half of a direction censored
    T[:, 2] = np.inf  # a direction no replica learned
    assert np.isfinite(log_scatter(T)) and log_scatter(T) == pytest.approx(0.3, rel=0.1)


def test_replica_groups_split_a_point_by_beta_and_lr():
    """A sweep point folds beta x lr x seed into replicas (seed fastest): one group per
    (beta, lr) with its seeds, and the per-replica arrays follow."""
    from scaling_sgd._src.config import replica_grid, resolve

    cfg = resolve({"teacher": {"beta": [1.5, 0.75]}, "train": {"lr": [1e-5, 2e-5], "seed": [0, 1, 2]}})
    grid = replica_grid(cfg)
    R, T = len(grid["seed"]), 3
    metrics = {
        "step": np.arange(R),  # as long as the replica axis on purpose: step is never split
        "loss": np.arange(R * T, dtype=float).reshape(R, T),
        "seed": np.asarray(grid["seed"]),
        "beta": np.asarray(grid["beta"]),
        "lr": np.asarray(grid["lr"]),
    }
    groups = replica_groups(cfg, metrics)
    assert [k for k, _ in groups] == [(0.75, 1e-5), (0.75, 2e-5), (1.5, 1e-5), (1.5, 2e-5)]
    for (b, lr), idx in groups:
        sub = select_replicas(metrics, idx)
        assert sub["seed"].tolist() == [0, 1, 2]
        assert np.all(sub["beta"] == b) and np.all(sub["lr"] == lr)
        np.testing.assert_array_equal(sub["loss"], metrics["loss"][idx])
        assert sub["step"] is metrics["step"]
    # metrics without beta/lr arrays: the values come from the config's replica grid
    old = {k: v for k, v in metrics.items() if k not in ("beta", "lr")}
    assert [k for k, _ in replica_groups(cfg, old)] == [k for k, _ in groups]


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


@pytest.mark.slow
def test_end_to_end_sgd_run_analysed(tmp_path, capsys):
    from scaling_sgd._src.runner import run
    from scaling_sgd._src.spec import build_spec
    from scaling_sgd.analysis.report import analyze_run
    from scaling_sgd.cli import main

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
    run(build_spec(cfg), out)
    s = analyze_run(out, stream=sys.stdout)
    em = json.loads((out / "emergence.json").read_text())
    med = [d["median"] for d in em["directions"]]
    assert all(v is not None for v in med) and med == sorted(med), med
    f = s["fits"]["emergence_time_vs_p"]
    assert f["theory"] == 1.5 and f["ci"][0] < f["slope"] < f["ci"][1]
    assert 0.7 < f["slope"] < 2.5, f
    # the loss is fitted from the 2nd to the max(P // 10, 4)-th = 4th median emergence
    assert s["fits"]["loss_vs_step"]["window_rule"]["step"] == [med[1], med[3]]
    for name in ("staircase", "emergence_vs_p", "loss_vs_step", "heatmap"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").is_file()
    # the flow theory from the initial overlaps predicts each replica's T_p within a factor 3
    ratio = np.array([d["measured_over_theory_median"] for d in em["directions"]])
    assert np.all((ratio > 1 / 3) & (ratio < 3)), ratio
    assert main(["analyze", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "emergence time vs p" in printed and "theory" in printed


def test_analyze_rejects_non_results_dir(tmp_path, capsys):
    from scaling_sgd.cli import main

    (tmp_path / "x.txt").write_text("hi")
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a results directory" in err[0] and "accepted" in err[0]
    assert main(["analyze", str(tmp_path / "missing")]) == 2


def _per_point_bootstrap(y_reps, n_boot, seed):
    """The wrong scheme, for the power check: replicas drawn independently at every point."""
    R, N = y_reps.shape
    idx = np.random.default_rng(seed).integers(0, R, size=(n_boot, R, N))
    return log_median(np.take_along_axis(y_reps[None], idx, axis=1), axis=1)


def test_bootstrap_resamples_whole_seed_curves():
    """Replicas correlated within a seed: each seed is an exact power law ``C_r x^(s_r)`` with
    its own prefactor (log-normal, sd 0.5).

    With one common slope the seeds' log-curves are parallel lines, so the median curve and
    the median of every resample of whole seeds are exact power laws of that slope: the
    interval has zero width.  With a slightly jittered slope (sd 0.01) the median curve's
    slope varies from experiment to experiment through the jitter only, and the bootstrap
    must reproduce that spread: its 95% half-width matches ``1.96 x`` the sd of the slope
    over 200 independent experiments.  Resampling seeds independently at each point turns
    the prefactor scatter into point-to-point noise: the interval becomes wide in the first
    case and about 2.6 times too wide in the second.  That scheme must fail both checks."""
    from analysis.fit import bootstrap_curves, fit_from_draws

    rng = np.random.default_rng(4)
    x = np.geomspace(1.0, 1e3, 20)
    R, n_boot, s_true = 16, 300, -0.8

    def seeds(slope_sd):
        logC = 0.5 * rng.standard_normal(R)
        s = s_true + slope_sd * rng.standard_normal(R)
        return np.exp(logC[:, None] + s[:, None] * np.log(x)[None, :])

    y = seeds(0.0)
    central, draws = bootstrap_curves(y, "median", n_boot, seed=0)
    assert draws.shape == (n_boot, x.size)
    f = fit_from_draws(x, central, draws)
    assert abs(f.slope - s_true) < 1e-12 and f.ci[1] - f.ci[0] < 1e-12, f
    g = fit_from_draws(x, central, _per_point_bootstrap(y, n_boot, 0))
    assert g.ci[1] - g.ci[0] > 0.01  # the wrong scheme is not exact here

    slopes, half, half_wrong = [], [], []
    for e in range(200):
        y = seeds(0.01)
        central, draws = bootstrap_curves(y, "median", n_boot, seed=e)
        f = fit_from_draws(x, central, draws)
        slopes.append(f.slope)
        half.append((f.ci[1] - f.ci[0]) / 2)
        g = fit_from_draws(x, central, _per_point_bootstrap(y, n_boot, e))
        half_wrong.append((g.ci[1] - g.ci[0]) / 2)
    target = 1.96 * np.std(slopes, ddof=1)  # the real 95% half-width (MC relative error ~5%)
    ratio, ratio_wrong = np.mean(half) / target, np.mean(half_wrong) / target
    print("half-width / true: whole curves", ratio, "per point", ratio_wrong)
    # a bootstrap of a median of 16 is a little wide or narrow; a factor 2.6 is not that
    assert 0.75 < ratio < 1.3, ratio
    assert not 0.75 < ratio_wrong < 1.3, ratio_wrong


def test_bootstrap_curves_central_curve_and_degenerate_cases():
    """The central curve is the statistic over replicas, each draw is the statistic of a
    resample of whole rows (so a draw of identical rows is that row), and fewer than two
    replicas give no draws."""
    from analysis.fit import bootstrap_curves

    rng = np.random.default_rng(0)
    y = np.exp(rng.standard_normal((7, 5)))
    c, draws = bootstrap_curves(y, "median", 50, seed=1)
    np.testing.assert_allclose(c, log_median(y, axis=0), rtol=1e-14)
    c2, draws2 = bootstrap_curves(y, "mean", 50, seed=1)
    np.testing.assert_allclose(c2, y.mean(0), rtol=1e-14)
    # each draw of the mean is a mean of rows of y: with the row index drawn it is exact
    idx = np.random.default_rng(1).integers(0, 7, size=(50, 7))
    np.testing.assert_allclose(draws2, y[idx].mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(draws, log_median(y[idx], axis=1), rtol=1e-14)
    same = np.tile(y[:1], (4, 1))
    np.testing.assert_allclose(bootstrap_curves(same, "median", 20)[1], np.tile(y[:1], (20, 1)), rtol=1e-14)
    assert bootstrap_curves(y[:1], "median", 20)[1].shape == (0, 5)


def test_fit_statistics_are_the_ordinary_least_squares_ones():
    """Slope, intercept, their OLS standard error, R^2 and the RMS residual in decades of
    a single-curve fit agree with ``scipy.stats.linregress`` in log-log, and the t-interval
    is ``slope +- t_(n-2) se``."""
    from scipy import stats

    from analysis.fit import fit_from_draws

    rng = np.random.default_rng(9)
    x = np.geomspace(2.0, 5e3, 17)
    y = 0.3 * x**-1.2 * np.exp(0.2 * rng.standard_normal(x.size))
    f = fit_from_draws(x, y, level=0.9)
    ref = stats.linregress(np.log(x), np.log(y))
    assert f.slope == pytest.approx(ref.slope, rel=1e-12) and f.intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert f.slope_se == pytest.approx(ref.stderr, rel=1e-12) and f.r2 == pytest.approx(ref.rvalue**2, rel=1e-12)
    resid = np.log(y) - ref.intercept - ref.slope * np.log(x)
    assert f.rms_log10 == pytest.approx(np.sqrt(np.mean(resid**2)) / np.log(10), rel=1e-12)
    tq = stats.t.ppf(0.95, x.size - 2)
    assert f.ci == pytest.approx((ref.slope - tq * ref.stderr, ref.slope + tq * ref.stderr), rel=1e-12)
    assert f.method == "ols-t" and f.n_points == x.size and f.window == (x[0], x[-1])
    # a window keeps the points inside it and reports the range actually fitted
    inside = (x >= 5.0) & (x <= 1000.0)
    g = fit_from_draws(x, y, window=(5.0, 1000.0))
    ref_w = stats.linregress(np.log(x[inside]), np.log(y[inside]))
    assert g.n_points == inside.sum() and g.window == (x[inside].min(), x[inside].max())
    assert g.slope == pytest.approx(ref_w.slope, rel=1e-12) and g.slope_se == pytest.approx(ref_w.stderr, rel=1e-12)


def test_window_slope_recovers_exponent_inside_its_window_and_skips_bad_points():
    x = np.geomspace(1.0, 1e4, 30)
    y = 3.0 * x**-1.7
    y[3] = np.inf  # censored
    y[5] = 0.0  # not positive
    y[x > 1e3] = 1.0  # a floor outside the window must not count
    assert window_slope(x, y, 1.0, 1e3) == pytest.approx(-1.7, abs=1e-12)
    assert math.isnan(window_slope(x, y, 1.0, 2.0))  # fewer than 4 points in the window
    assert window_slope(x, y, 1.0, 2.2, min_points=2) == pytest.approx(-1.7, abs=1e-12)


def test_bootstrap_interval_of_a_mean_matches_its_standard_error():
    rng = np.random.default_rng(1)
    z = rng.normal(size=400)
    est, lo, hi = bootstrap(lambda i: z[i].mean(), z.size, n_boot=2000, seed=3)
    se = z.std(ddof=1) / math.sqrt(z.size)
    assert est == pytest.approx(z.mean())
    # percentile interval of a mean: +-1.96 se, up to bootstrap noise (~5% of the width)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert lo < z.mean() < hi
    # a statistic that is mostly undefined has no interval
    assert all(math.isnan(v) for v in bootstrap(lambda i: math.nan, 10, n_boot=50)[1:])


def test_window_scores_inside_the_learning_window():
    """Sharp skills, a loss made of their sum: per-direction scores far above the loss
    score, both positive for learning; the window excludes what lies outside it."""
    step = np.r_[0.0, np.geomspace(1.0, 1e6, 121)]
    T = np.array([1e2, 1e3, 1e4])
    lt = np.log(np.maximum(step, 1e-300))[:, None]
    skill = np.where(step[:, None] > 0, 1 / (1 + np.exp(-np.clip((lt - np.log(T)) / 0.05, -700, 700))), 0.0)
    loss = ((1 - skill) * np.array([0.6, 0.3, 0.1])).sum(1)
    s_skill, s_loss = window_scores(step, skill, loss, T, pad=3.0)
    assert s_loss > 0 and np.all(s_skill > 20 * s_loss)
    # a jump outside [min T / pad, max T * pad] does not enter the loss score
    jumpy = loss.copy()
    jumpy[step > 1e5] -= 0.05
    assert window_scores(step, skill, jumpy, T, pad=3.0)[1] == pytest.approx(s_loss)
    assert window_scores(step, skill, jumpy, T, pad=300.0)[1] != pytest.approx(s_loss)
    # nothing learned: no window, no score
    s_skill, s_loss = window_scores(step, skill, loss, np.full(3, np.inf), pad=3.0)
    assert np.all(np.isnan(s_skill)) and math.isnan(s_loss)
    # per replica: the median over the learned directions, nan for a replica that learned none
    T2 = np.stack([T, np.full(3, np.inf)])
    sk, sl = replica_window_scores(step, np.stack([skill, skill]), np.stack([loss, loss]), T2, pad=3.0)
    s_skill, s_loss = window_scores(step, skill, loss, T, pad=3.0)
    assert sk[0] == pytest.approx(np.median(s_skill)) and sl[0] == pytest.approx(s_loss)
    assert math.isnan(sk[1]) and math.isnan(sl[1])


def test_loss_exponent_recovers_a_known_power_law_over_its_window():
    """The slope of the seed-mean loss over the loss fit window, on synthetic curves whose
    loss is an exact power law with per-seed prefactors: the slope comes back, the window is
    the ranks asked for, and against samples ``n = B step`` the slope is the same and the
    window is B times the steps."""
    step = np.concatenate([[0.0], np.geomspace(1.0, 1e6, 120)])
    P, R, s = 40, 8, -0.8
    rng = np.random.default_rng(0)
    T = np.sort(np.geomspace(1e2, 1e5, P)[None, :] * np.exp(0.1 * rng.standard_normal((R, P))), axis=1)
    loss = np.exp(0.2 * rng.standard_normal((R, 1))) * np.maximum(step, 1.0)[None, :] ** s
    skill = (step[None, :, None] >= T[:, None, :]).astype(float)
    times = emergence_times(step, skill, 0.5)[0]
    fit = loss_exponent(step, times, loss, n_boot=100, hi_rank=20)  # a window of many log points
    assert fit["est"] == pytest.approx(s, abs=1e-6) and fit["lo"] <= s <= fit["hi"] and fit["seeds"] == R
    med = np.sort(np.median(times, axis=0))
    assert (fit["wlo"], fit["whi"]) == pytest.approx((med[1], med[19]), rel=1e-9)
    on_samples = loss_exponent(step, times, loss, x=16 * step, n_boot=100, hi_rank=20)
    assert on_samples["est"] == pytest.approx(s, abs=1e-6)
    assert (on_samples["wlo"], on_samples["whi"]) == pytest.approx((16 * med[1], 16 * med[19]), rel=1e-9)
    # the default window: the 2nd to the max(40 // 10, 4) = 4th median emergence
    short = loss_exponent(step, times, loss, n_boot=20)
    assert (short["wlo"], short["whi"]) == pytest.approx((med[1], med[3]), rel=1e-9) and short["est"] == pytest.approx(s)
    # too few directions learned for the window: no slope, no interval
    none = loss_exponent(step, np.where(times > med[2], np.inf, times), loss, n_boot=20)
    assert all(math.isnan(none[k]) for k in ("est", "lo", "hi", "wlo", "whi"))
