"""Fast structural checks of the reproduction framework (sims/): fits, verdicts, the report
generator and the experiment configs.  No simulation runs here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sims import common as C
from sims import experiments as E
from sims import make_validation as MV


def test_verdict_from_interval_vs_theory():
    assert C.verdict(1.0, 0.8, 1.2) is True
    assert C.verdict(1.3, 0.8, 1.2) is False
    assert C.verdict(0.7, 0.8, 1.2) is False
    assert C.verdict(1.25, 0.8, 1.2, tol=0.1) is True  # tolerance widens both sides
    assert C.verdict(1.0, math.nan, 1.2) is None
    c = C.check("q", -1.0 / 3.0, -0.30, -0.41, -0.35)
    assert c["agrees"] is False and c["fitted"] == pytest.approx(-0.30)
    # one-sided: "score ratio > 0" agrees only when the whole interval is above 0
    assert C.check("r", 0.0, 1.2, 1.0, 1.5, above=True)["agrees"] is True
    assert C.check("r", 0.0, 0.2, -0.1, 0.5, above=True)["agrees"] is False
    assert "> 0.000 |" in MV.row("x", C.check("r", 0.0, 1.2, 1.0, 1.5, above=True))


def test_power_law_fit_recovers_exponent_and_skips_bad_points():
    x = np.geomspace(1.0, 1e4, 30)
    y = 3.0 * x**-1.7
    y[3] = np.inf  # censored
    y[5] = 0.0  # not positive
    s, c = C.power_law_fit(x, y)
    assert s == pytest.approx(-1.7, abs=1e-12)
    assert math.exp(c) == pytest.approx(3.0, rel=1e-10)
    assert math.isnan(C.power_law_fit([1.0, 2.0], [1.0, np.inf])[0])


def test_bootstrap_interval_of_a_mean_matches_its_standard_error():
    rng = np.random.default_rng(1)
    z = rng.normal(size=400)
    est, lo, hi = C.bootstrap(lambda i: z[i].mean(), z.size, n_boot=2000, seed=3)
    se = z.std(ddof=1) / math.sqrt(z.size)
    assert est == pytest.approx(z.mean())
    # percentile interval of a mean: +-1.96 se, up to bootstrap noise (~5% of the width)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert lo < z.mean() < hi


def test_emergence_score_ramp_step_and_sign():
    n = 41
    x = np.arange(n, dtype=float)
    # a steady ramp of n points: span n-1 over increments of 1 -> score n-1
    assert C.emergence_score(x, x) == pytest.approx(n - 1)
    assert C.emergence_score(x, -x) == pytest.approx(-(n - 1))  # decreasing: negative
    step = (x > 20).astype(float)
    assert C.emergence_score(x, step) == math.inf  # all increments but one are zero
    sharp = 1 / (1 + np.exp(-(x - 20) / 0.5))
    smooth = 1 / (1 + np.exp(-(x - 20) / 8.0))
    assert C.emergence_score(x, sharp) > 10 * C.emergence_score(x, smooth)


def test_additive_model_loss_and_learning_window():
    step = np.array([0.0, 10.0, 100.0, 1000.0])
    T = np.array([[5.0, 50.0, np.inf]])  # third direction never learned
    a = np.array([[0.8, 0.5, 0.3]])
    L = E._additive_loss(step, T, a)
    np.testing.assert_allclose(L[0], [0.98, 0.34, 0.09, 0.09])
    lo, hi = E._learning_window(np.array([1.0, 4.0, 9.0, 16.0, np.inf]))
    assert (lo, hi) == (4.0, 9.0)  # 2nd to next-to-last finite time


def test_every_experiment_config_loads_in_every_mode():
    names = list(C.experiment_files())
    assert names == sorted(E.REGISTRY), "every sims/NN_*.toml needs a registered experiment and vice versa"
    for name in names:
        for mode in C.MODES:
            exp = C.load_experiment(name, mode)  # resolves every grid point
            assert exp.points()


def test_bad_experiment_input_is_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "SIMS", tmp_path)
    (tmp_path / "01_bad.toml").write_text("[data]\nd = 16\n[sweep]\nwidth = [1, 2]\n")
    with pytest.raises(C.ExperimentError, match=r"^sweep\.width: unknown sweep key"):
        C.load_experiment("01_bad")
    (tmp_path / "01_bad.toml").write_text("[data]\nd = 16\n[sweep]\nm = [1, 0]\n")
    with pytest.raises(C.ExperimentError, match=r"student\.m"):
        C.load_experiment("01_bad")


def test_zip_sweep_moves_keys_together(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "SIMS", tmp_path)
    (tmp_path / "01_z.toml").write_text(
        '[sweep]\nactivation = ["h4", "h3"]\nzip = [{d = 16, steps = 10}, {d = 32, steps = 20}]\n[gpu]\n"data.d" = 8\n'
    )
    pts = C.load_experiment("01_z").points()
    assert [(p["teacher.activation"], p["data.d"], p["train.steps"]) for _, _, p in pts] == [
        ("h4", 16, 10),
        ("h4", 32, 20),
        ("h3", 16, 10),
        ("h3", 32, 20),
    ]
    assert pts[0][0] == "activation=h4_d=16_steps=10"


def test_report_table_from_synthetic_results():
    res = {
        "title": "T",
        "prediction": "p",
        "checks": [
            C.check("slope a", 1.0, 1.05, 0.9, 1.2, why="never shown: agrees"),
            C.check("slope b", -2.0, -1.2, -1.4, -1.0, note="finite P", why="finite P"),
        ],
        "figure": "figures/x.png",
        "notes": ["a note"],
        "wall_time_s": 3.0,
        "compute_s": 2.0,
        "engines": ["sgd"],
        "grid": {"student.m": [1, 2]},
        "settings": {"engine": "sgd", "d": 64},
        "runs": 2,
    }
    text = MV.render({"01_x": res, "02_y": None})
    table = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(table) == 3
    assert table[0].endswith("| 1.000 | 1.050 | [0.900, 1.200] | yes |  |")
    assert table[1].endswith("| **no** | finite P |")
    assert table[2].endswith("| not run | |")
    assert "1 of 2 predicted quantities agree" in text
    assert "![01_x](figures/x.png)" in text and "- *slope b*: finite P" in text


def test_additive_model_reaches_the_asymptotic_exponents_only_at_large_P():
    """The finite-P reference used in the report: with T_p = T_1 p^beta the additive model
    has the paper's exponents when P is large, and is visibly steeper at P = 8 / 16."""
    for beta in (1.0, 1.5):
        big = E.additive_loss_exponent(beta, 1024, 1e5, 0.0, n_seeds=1, hi_frac=0.1)
        assert big == pytest.approx(-(2 * beta - 1) / beta, abs=0.05)
        assert E.additive_loss_exponent(beta, 8, 1e5, 0.0, n_seeds=1) < big - 0.2
    widths = [2**j for j in range(11)]
    assert E.additive_frontier_slope(0.8, 1024, widths, 1.0, 0.0, (0.02, 0.5), n_seeds=1) == pytest.approx(-1 / 3, abs=0.05)
    assert E.additive_frontier_slope(0.8, 16, widths[:5], 1.0, 0.0, (0.02, 0.5), n_seeds=1) < -0.45
