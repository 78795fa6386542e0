"""Censored emergence times: the Kaplan-Meier median and the censored (Tobit) power-law
fit, against answers known by hand or by construction."""

import math

import numpy as np

from scaling_sgd.analysis.censored import censored_power_law, km_median, km_median_ci, tobit
from scaling_sgd.analysis.emergence import log_median


def test_kaplan_meier_median_by_hand():
    # 1, [2+], 3, [4+], 5, 6: S = 5/6 after 1; 5/6 * 3/4 = 0.625 after 3; 0.625 / 2 after 5
    t = np.array([1.0, np.inf, 3.0, np.inf, 5.0, 6.0])
    assert km_median(t, [0, 2.0, 0, 4.0, 0, 0]) == 5.0
    # the median of the observed times alone (sqrt(3 * 5)) is what dropping the censored gives
    assert km_median(t[np.isfinite(t)]) == math.sqrt(3.0 * 5.0)
    # a flat S = 1/2 between two events: their geometric mean, as np.median of the logs
    assert km_median([1.0, 4.0, 9.0, 16.0]) == 6.0
    # censored at the end of one run: the median with the censored at +inf
    rng = np.random.default_rng(0)
    for _ in range(20):
        tt = np.exp(rng.normal(size=7))
        tt[tt > 1.5] = np.inf
        assert km_median(tt, 1.5) == log_median(tt)
    # S stays above 1/2 until the last censoring: only a bound, the median is censored
    assert km_median([1.0, np.inf, np.inf, np.inf], 10.0) == math.inf


def test_kaplan_meier_interval_from_a_seed_bootstrap():
    rng = np.random.default_rng(1)
    t = np.exp(rng.normal(0.0, 0.3, size=(64, 3)))
    t[:, 2] = np.where(rng.random(64) < 0.6, np.inf, t[:, 2])  # most seeds censored: no upper bound
    med, lo, hi = km_median_ci(t, n_boot=500)
    assert np.all(lo[:2] < med[:2]) and np.all(med[:2] < hi[:2])
    # the interval of a median of 64 log-normal draws: about +-1.96 * 1.25 * 0.3 / 8 in log
    width = np.log(hi[:2] / lo[:2])
    assert np.all((width > 0.06) & (width < 0.2)), width
    assert med[2] == np.inf and hi[2] == np.inf


def test_tobit_without_censoring_is_least_squares():
    rng = np.random.default_rng(2)
    X = np.stack([rng.normal(size=30), np.ones(30)], axis=1)
    y = X @ [1.3, -0.5] + 0.2 * rng.normal(size=30)
    b, sigma = tobit(X, y, np.zeros(30, bool), np.zeros(30))
    np.testing.assert_allclose(b[0], np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    np.testing.assert_allclose(sigma[0], np.sqrt(np.mean((y - X @ b[0]) ** 2)), rtol=1e-10)


def test_censored_fit_is_unbiased_where_the_naive_median_is_not():
    """Synthetic ``T = 2e3 d e^(0.5 z)`` at d = 16..256 with 8 seeds and a budget at 0.8 x
    the median at d = 256 (so that most seeds there never cross).  Over 300 sweeps the
    censored fit's slope has no bias beyond its noise; the naive fit through the medians
    of the observed times is biased low by about 0.17."""
    rng = np.random.default_rng(3)
    d = np.array([16, 32, 64, 128, 256.0])
    c = 2e3 * 256 * 0.8
    tobit_s, naive_s = [], []
    while len(tobit_s) < 300:
        T = 2e3 * d[None] * np.exp(0.5 * rng.standard_normal((8, d.size)))
        T = np.where(T <= c, T, np.inf)
        if not np.isfinite(T).any(0).all():
            continue  # the naive median needs one observed time at every d
        tobit_s.append(censored_power_law(d, T, c, n_boot=0, label="d", paired=False).slope)
        naive = [np.median(T[np.isfinite(T[:, j]), j]) for j in range(d.size)]
        naive_s.append(np.polyfit(np.log(d), np.log(naive), 1)[0])
    bias_tobit, bias_naive = np.mean(tobit_s) - 1.0, np.mean(naive_s) - 1.0
    se = np.std(tobit_s) / np.sqrt(len(tobit_s))
    assert abs(bias_tobit) < 3 * se + 0.005, (bias_tobit, se)
    assert -0.22 < bias_naive < -0.12, bias_naive


def test_censored_fit_interval_covers_and_names_what_it_dropped():
    rng = np.random.default_rng(4)
    p = np.arange(1, 9.0)
    covered = 0
    for _ in range(40):
        T = 1e3 * p[None] ** 1.5 * np.exp(0.3 * rng.standard_normal((16, 8)))
        c = 1e3 * 6**1.5
        T = np.where(T <= c, T, np.inf)
        f = censored_power_law(p, T, c, n_boot=200, seed=int(rng.integers(1 << 30)), label="p")
        covered += f.ci[0] <= 1.5 <= f.ci[1]
    assert 34 <= covered <= 40, covered  # 95% nominal
    # p = 8 never crossed in any seed: excluded, and the reason says so
    T[:, 7] = np.inf
    f = censored_power_law(p, T, c, n_boot=50, label="p")
    assert f.n_points == 7 and f.excluded == (f"p = 8: 16 of 16 seeds censored at step {c:,.0f} (every seed: a bound only)",)
    assert f.to_dict()["excluded"] == list(f.excluded) and f.censored > 0
    # one point with an observed time: no slope, and why (never a silent nan)
    T[:, 1:] = np.inf
    f = censored_power_law(p, T, c, n_boot=50, label="p")
    assert math.isnan(f.slope) and f.no_fit == "1 of 8 points have an observed time; a slope needs 2"
    assert len(f.excluded) == 7
