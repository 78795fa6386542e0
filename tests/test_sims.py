"""The reproduction framework (sims/): experiment files and their overrides, the sweep it
runs through the package, the checks, the notes, the report generator.
One tiny sweep runs here (seconds); the experiments themselves run in ``--quick`` mode
outside the test suite."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest

from scaling_sgd._src.config import config_hash
from sims import checks, load, output
from sims import experiments as E
from sims import make_validation as MV


def test_verdict_from_interval_vs_theory():
    assert checks.verdict(1.0, 0.8, 1.2) is True
    assert checks.verdict(1.3, 0.8, 1.2) is False
    assert checks.verdict(0.7, 0.8, 1.2) is False
    assert checks.verdict(1.25, 0.8, 1.2, tol=0.1) is True  # tolerance widens both sides
    assert checks.verdict(1.0, math.nan, 1.2) is None
    # a fit that failed is not judged, even with a finite interval around it
    assert checks.verdict(1.0, 0.8, 1.2, fitted=math.nan) is None and checks.verdict(1.0, 0.8, 1.2, fitted=1.1) is True
    assert checks.check("q", 1.0, math.nan, 0.8, 1.2)["agrees"] is None
    assert checks.check("q", 1.0, math.nan, 0.8, 1.2, above=True)["agrees"] is None
    # no theory value (beta <= 1/2, an observation): shown, never judged
    assert checks.check("q", math.nan, 1.0, 0.8, 1.2)["agrees"] is None
    c = checks.check("q", -1.0 / 3.0, -0.30, -0.41, -0.35)
    assert c["agrees"] is False and c["fitted"] == pytest.approx(-0.30)
    # one-sided: "score ratio > 0" agrees only when the whole interval is above 0
    assert checks.check("r", 0.0, 1.2, 1.0, 1.5, above=True)["agrees"] is True
    assert checks.check("r", 0.0, 0.2, -0.1, 0.5, above=True)["agrees"] is False
    assert "> 0.000 |" in MV.row("x", checks.check("r", 0.0, 1.2, 1.0, 1.5, above=True))


def test_trend_words_follow_the_numbers():
    assert checks.trend([0.90, 0.95, 0.99]) == "rises"
    assert checks.trend([0.99, 0.95, 0.91]) == "falls"
    assert checks.trend([0.98, 0.99, 0.95, 0.91]) == "is not monotone"  # the h4 T/flow ratios of 04
    assert checks.trend([1.0, 1.0]) == "does not change"
    assert checks.trend([1.0, math.nan]) == "is undetermined"


def test_time_vs_d_note_says_what_the_ratios_do():
    """04's note on T / exact flow is derived from the ratios: the words follow the
    numbers, whichever way they go."""
    note = importlib.import_module("sims.experiments.04_time_vs_d")._ratio_note
    ds = np.array([32.0, 64.0, 128.0, 256.0])
    size = 5e-6 * ds**2
    assert "h4 (k=4): T / exact flow is not monotone with d" in note("h4", 4, ds, [0.98, 0.99, 0.95, 0.91], size)
    assert "falls with d" in note("h4", 4, ds, [0.99, 0.97, 0.95, 0.91], size)
    assert "rises with d" in note("h4", 4, ds, [0.91, 0.95, 0.97, 0.99], size)
    assert "no trend" in note("h4", 4, ds, [math.nan, math.nan, 0.9, math.nan], size)
    # which d lie outside the stated tolerance follows the ratios too
    assert "every d within the log-grid tolerance 1 +- 0.050" in note("h3", 3, ds, [1.00, 0.98, 0.98, 0.99], size, 0.05)
    assert "outside the log-grid tolerance 1 +- 0.050 at d = 128, 256" in note("h4", 4, ds, [0.98, 0.99, 0.94, 0.91], size, 0.05)


def test_grid_tolerance_is_half_the_log_spacing_at_the_emergence_steps():
    M = importlib.import_module("sims.experiments.04_time_vs_d")
    step = np.r_[0.0, np.geomspace(1.0, 1e6, 121)]  # a factor 10^(1/20) between log points
    run = load.Run({}, {}, {}, {"step": step})
    tol, q = M._grid_tolerance([run], [np.array([5e3, 2e5, np.inf])], [np.array([True, True, True])])
    assert q == pytest.approx(10 ** (1 / 20)) and tol == pytest.approx(10 ** (1 / 40) - 1)


def test_scope_of_a_row_names_every_reason_it_cannot_discriminate():
    from scaling_sgd.analysis.fit import fit_from_draws, fit_power_law

    assert checks.scope() == {"discriminates": True, "scope": ""}
    assert checks.scope("", []) == {"discriminates": True, "scope": ""}
    assert checks.scope("a", ["b", "a"]) == {"discriminates": False, "scope": "a; b"}
    assert checks.finite_p(8).startswith("P = 8: finite-P illustration") and checks.finite_p(256) == ""
    assert checks.few(seeds=3) == ["3 seeds < 8"] and checks.few(seeds=8) == [] and checks.few(points=2) == ["2-point fit"]
    rng = np.random.default_rng(0)
    two = fit_power_law(np.array([1.0, 2.0]), np.exp(rng.normal(size=(12, 2))), n_boot=50)
    assert checks.few(fit=two) == ["2 points"]
    few_seeds = fit_power_law(np.arange(1.0, 5.0), np.exp(rng.normal(size=(4, 4))), n_boot=50)
    assert checks.few(fit=few_seeds) == ["4 seeds < 8"]
    assert checks.few(fit=fit_from_draws(np.arange(1.0, 5.0), np.arange(1.0, 5.0))) == []
    assert checks.beyond_theorem(4) == "" and checks.beyond_theorem(6) == ""
    assert "k = 3, an odd activation" in checks.beyond_theorem(3) and "k = 2" in checks.beyond_theorem(2)
    value, why = checks.theory_value("loss_vs_step", 0.25)
    assert math.isnan(value) and why.startswith("no power law for beta <= 1/2")
    assert checks.theory_value("loss_vs_step", 1.5) == (pytest.approx(-4 / 3), "")


def test_divergence_lr_is_a_logistic_fit_that_survives_perfect_separation():
    """04's 50%-divergence estimator: recovers the law it is drawn from, stays finite (and
    inside the separating grid cell) when the seeds separate perfectly, and says nothing
    when the grid does not bracket it."""
    M = importlib.import_module("sims.experiments.04_time_vs_d")
    x = np.log(1.6e-4 * 2.0 ** (np.arange(-4, 5) / 2))
    n = np.full(9, 16.0)
    rng = np.random.default_rng(0)
    mu, s = math.log(1.1e-4), 0.2
    est = []
    for _ in range(60):
        thr = mu + s * rng.logistic(size=16)
        est.append(M.divergence_fit(x, np.array([np.sum(thr < xi) for xi in x], float), n)[0])
    assert abs(np.mean(est) - mu) < 0.05 and 0.03 < np.std(est) < 0.2  # unbiased, ~ s / sqrt(n) scatter
    sep = np.array([0, 0, 0, 0, 16, 16, 16, 16, 16.0])
    m_sep, s_sep = M.divergence_fit(x, sep, n)
    assert x[3] < m_sep < x[4] and s_sep < 0.2
    assert M._separated_cell(x, sep, n) == (x[3], x[4]) and M._separated_cell(x, np.r_[sep[:3], 1, sep[4:]], n) is None
    assert all(math.isnan(v) for v in M.divergence_fit(x, np.zeros(9), n))  # nothing diverged: not bracketed
    assert all(math.isnan(v) for v in M.divergence_fit(x, n.copy(), n))  # everything diverged
    # the bootstrap of the slope can diverge where no seed did: with two d whose seeds
    # separate, the interval spans the grid cells (+-1/2 cell), not a single value
    fits = [(x, sep, n, m_sep, s_sep), (x - math.log(2.0), sep, n, m_sep - math.log(2.0), s_sep)]
    lo, hi = M._lr50_interval([32, 64], fits, 200)
    slope = -math.log(2.0) / math.log(2.0)
    assert lo < slope < hi and hi - lo > 0.5


def test_every_experiment_config_loads_in_every_mode():
    names = list(load.experiment_files())
    assert names == E.names(), "every sims/NN_*.toml needs sims/experiments/NN_*.py and vice versa"
    for name in names:
        assert callable(E.get(name))
        for mode in load.MODES:
            exp = load.load_experiment(name, mode)  # resolves every sweep point
            assert exp.plan().points and exp.run_root.name == exp.tag
            assert exp.tag == name if mode == "cpu" else exp.tag == f"{name}-{mode}"


def test_bad_experiment_input_is_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "SIMS", tmp_path)
    (tmp_path / "01_bad.toml").write_text("[data]\nd = 16\n[sweep]\nwidth = [1, 2]\n")
    with pytest.raises(load.ExperimentError, match=r"^sweep\.width: unknown sweep key"):
        load.load_experiment("01_bad")
    (tmp_path / "01_bad.toml").write_text("[data]\nd = 16\n[sweep]\nm = [1, 0]\n")
    with pytest.raises(load.ExperimentError, match=r"^student\.m: .*in sweep point student\.m=0"):
        load.load_experiment("01_bad")
    (tmp_path / "01_bad.toml").write_text('[data]\nd = 16\n[quick]\n"steps" = 10\n')
    load.load_experiment("01_bad")  # the cpu mode does not read [quick]
    with pytest.raises(load.ExperimentError, match=r"^sims/01_bad\.toml \[quick\]: 'steps' must be table\.key"):
        load.load_experiment("01_bad", "quick")
    with pytest.raises(load.ExperimentError, match=r"^experiment: unknown name '02_none'"):
        load.load_experiment("02_none")


def test_overrides_go_through_the_package_sweep_plan(tmp_path, monkeypatch):
    """[quick] replaces a zip axis and a base key before planning; lr/seed lists are
    replicas of one point, not points (the package's sweep dialect)."""
    monkeypatch.setattr(load, "SIMS", tmp_path)
    (tmp_path / "01_z.toml").write_text(
        "[experiment]\nn_boot = 400\n"
        '[train]\nlr = [1e-5, 2e-5]\nseed = [0, 1, 2]\n[sweep]\nactivation = ["h4", "h3"]\n'
        "zip = [{d = 16, steps = 10}, {d = 32, steps = 20}]\n"
        '[quick]\n"sweep.zip" = [{d = 8, steps = 5}]\n"train.seed" = [0]\n"experiment.n_boot" = 10\n'
    )
    exp = load.load_experiment("01_z")
    pts = exp.plan().points
    assert [(p.settings["teacher.activation"], p.settings["data.d"], p.settings["train.steps"]) for p in pts] == [
        ("h4", 16, 10),
        ("h4", 32, 20),
        ("h3", 16, 10),
        ("h3", 32, 20),
    ]
    assert all(p.replicas == 6 for p in pts) and exp.get("n_boot") == 400
    assert exp.run_root == load.RUN_ROOT / "01_z"
    assert all(p.id == config_hash(p.config) for p in pts)  # a point is its config hash: resumable
    quick = load.load_experiment("01_z", "quick")
    pts = quick.plan().points
    assert [(p.settings["teacher.activation"], p.settings["data.d"]) for p in pts] == [("h4", 8), ("h3", 8)]
    assert all(p.replicas == 2 for p in pts) and quick.get("n_boot") == 10
    assert quick.run_root == load.RUN_ROOT / "01_z-quick"


@pytest.mark.slow
def test_run_sweep_writes_a_package_sweep_reuses_it_and_splits_replica_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "SIMS", tmp_path)
    monkeypatch.setattr(load, "RUN_ROOT", tmp_path / "runs")
    monkeypatch.setattr(load, "DATA_DIR", tmp_path / "data")
    (tmp_path / "01_t.toml").write_text(
        "[teacher]\nP = 1\nbeta = [1.0, 2.0]\n[student]\nm = 1\n[data]\nd = 8\n"
        "[train]\nsteps = 40\nlr = 1e-3\nseed = [0, 1]\nprogress = false\n[log]\npoints = 5\n[sweep]\nm = [1, 2]\n"
    )
    exp = load.load_experiment("01_t", "quick")
    runs = load.run_sweep(exp)
    root = tmp_path / "runs" / "01_t-quick"
    assert (root / "sweep.json").is_file()
    assert [r.settings["student.m"] for r in runs] == [1, 2]
    assert [r.meta["hash"] for r in runs] == [p.id for p in exp.plan().points]
    assert all((root / "points" / r.meta["hash"] / "metrics.npz").is_file() for r in runs)
    with load.replaying():  # and its record gives the same runs back
        kept = load.run_sweep(exp)
    assert [k.settings for k in kept] == [r.settings for r in runs]
    np.testing.assert_array_equal(kept[1].metrics["loss"], runs[1].metrics["loss"])
    np.testing.assert_array_equal(kept[1].times, runs[1].times)
    groups = runs[1].groups()
    assert [(g.settings["teacher.beta"], g.common("beta"), g.metrics["seed"].tolist()) for g in groups] == [
        (1.0, 1.0, [0, 1]),
        (2.0, 2.0, [0, 1]),
    ]
    with pytest.raises(ValueError, match="split them"):
        runs[1].common("beta")
    with pytest.raises(ValueError, match="holds 2 \\(beta, lr\\) groups"):
        runs[1].single()
    assert groups[0].single() is groups[0]

    def no_run(*a, **k):
        raise AssertionError("a complete point was recomputed")

    monkeypatch.setattr("scaling_sgd._src.runner.run", no_run)
    again = load.run_sweep(exp)  # resumable by config hash: nothing runs
    np.testing.assert_array_equal(again[0].metrics["loss"], runs[0].metrics["loss"])
    with pytest.raises(RuntimeError, match="1 point\\(s\\) failed"):  # a new point fails: the experiment stops
        load.run_sweep(exp, {**exp.raw, "sweep": {"m": [1, 2, 3]}})  # the grid extended by one point


def test_write_result_keeps_the_row_format_and_the_mode_in_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "SIMS", tmp_path)
    monkeypatch.setattr(output, "RESULT_DIR", tmp_path / "results")
    monkeypatch.setattr(output, "FIG_DIR", tmp_path / "figures")
    (tmp_path / "01_w.toml").write_text('[experiment]\ntitle = "W"\n[data]\nd = 16\n[sweep]\nm = [1, 2]\n')
    exp = load.load_experiment("01_w", "quick")
    run = load.Run({"student.m": 1}, exp.plan().points[0].config, {"wall_time_s": 2.5}, {})
    fig = output.figure_path(exp)
    out = output.Outcome([checks.check("q", 1.0, 1.1, 0.9, 1.2)], fig, ["n"], [run, run], {"x": 1})
    path = output.write_result(exp, out, 3.0, records=["b.npz", "a.npz"])
    assert path.name == "01_w-quick.json" and fig.name == "01_w-quick.png"
    res = output.load_json(path)
    assert set(res) == {
        "name", "mode", "title", "prediction", "checks", "figure", "notes", "wall_time_s", "compute_s",
        "engines", "grid", "settings", "runs", "backend", "date", "extra", "records",
    }  # fmt: skip
    assert res["records"] == ["a.npz", "b.npz"]
    assert (res["mode"], res["title"], res["runs"], res["compute_s"], res["figure"]) == (
        "quick",
        "W",
        2,
        5.0,
        "figures/01_w-quick.png",
    )
    assert res["grid"] == {"student.m": [1, 2]} and res["settings"]["d"] == 16 and res["engines"] == ["sgd"]
    assert res["checks"][0]["agrees"] is True and res["extra"] == {"x": 1}


def test_report_table_from_synthetic_results():
    res = {
        "title": "T",
        "prediction": "p",
        "checks": [
            checks.check("slope a", 1.0, 1.05, 0.9, 1.2, why="never shown: agrees"),
            checks.check("slope b", -2.0, -1.2, -1.4, -1.0, note="finite P", why="finite P"),
            checks.check("slope c", -1.5, -1.45, -1.6, -1.3, discriminates=False, scope="P = 8: finite-P illustration"),
            checks.check("slope d (observed, no theory)", math.nan, -1.0, -1.2, -0.8, **checks.scope("observed, no theory")),
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
    assert len(table) == 5
    assert table[0].endswith("| 1.000 | 1.050 | [0.900, 1.200] | yes | yes |  |")
    assert table[1].endswith("| **no** | yes | finite P |")
    assert table[2].endswith("| yes | no: P = 8: finite-P illustration |  |")
    assert table[3].endswith("| — | -1.000 | [-1.200, -0.800] | n/a | no: observed, no theory |  |")
    assert table[4].endswith("| not run | | |")
    assert "1 more row is an observation with no predicted value" in text
    assert "`2 eta`" in text and "this project's exact one-neuron population flow" in text
    # the row that cannot discriminate agrees, but is not counted as support
    assert "1 of 2 predicted quantities agree" in text and "1 more rows are shown as illustrations" in text
    assert "1 of them happen to agree" in text
    assert "![01_x](figures/x.png)" in text and "- *slope b*: finite P" in text


def test_a_missing_full_run_is_shown_by_its_quick_form_and_never_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "RESULT_DIR", tmp_path)
    monkeypatch.setattr(load, "experiment_files", lambda: {"01_x": None, "02_y": None})
    quick = {"title": "T", "checks": [checks.check("slope a", 1.0, 1.05, 0.9, 1.2)], "runs": 1, "compute_s": 1.0}
    full = {"title": "U", "checks": [checks.check("slope b", 2.0, 2.05, 1.9, 2.2)], "runs": 1, "compute_s": 1.0}
    (tmp_path / "01_x-quick.json").write_text(json.dumps(quick))
    (tmp_path / "02_y.json").write_text(json.dumps(full))
    (tmp_path / "02_y-quick.json").write_text(json.dumps(quick))
    res = MV.collect("cpu")
    assert res["01_x"]["quick_stand_in"] and not res["02_y"].get("quick_stand_in")  # a full run wins
    text = MV.render(res)
    assert "1 of 1 predicted quantities agree" in text and "1 more rows are shown as illustrations" in text
    assert "no: quick form only" in text and "**Quick form only**" in text
    assert MV.collect("quick")["02_y"]["title"] == "T"  # the quick report reads only quick runs


def test_the_race_section_shows_each_race_value_beside_the_fit_and_counts_the_inside_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "RESULT_DIR", tmp_path)
    assert MV.race_section("cpu") == []  # no race file: no section
    rows = [
        {
            "experiment": "09_x",
            "quantity": "slope a",
            "race": 1.05,
            "fitted": 1.0,
            "lo": 0.9,
            "hi": 1.1,
            "inside": True,
            "how": "h1",
        },
        {
            "experiment": "09_x",
            "quantity": "slope b",
            "race": 1.3,
            "fitted": 1.0,
            "lo": 0.9,
            "hi": 1.1,
            "inside": False,
            "how": "h2",
        },
        {
            "experiment": "11_y",
            "quantity": "slope c",
            "race": -2.0,
            "fitted": float("nan"),
            "lo": float("nan"),
            "hi": float("nan"),
            "inside": None,
            "how": "h3",
        },
    ]
    (tmp_path / "race_rows.json").write_text(json.dumps({"mode": "cpu", "rows": rows}))
    text = "\n".join(MV.race_section("cpu"))
    assert "| 09_x | slope a | 1.050 | 1.000 | [0.900, 1.100] | yes |" in text
    assert "| 09_x | slope b | 1.300 | 1.000 | [0.900, 1.100] | **no** |" in text
    assert "| 11_y | slope c | -2.000 | — | — | n/a |" in text
    assert "inside the simulated fit's interval in 1 of 2 rows" in text and "- *slope c*: h3" in text
    assert "1 row has no fitted value yet" in text
    rows[2]["fitted"] = 0.5  # a fit without an interval is not a prediction ahead of its run
    (tmp_path / "race_rows.json").write_text(json.dumps({"mode": "cpu", "rows": rows}))
    assert "no fitted value yet" not in "\n".join(MV.race_section("cpu"))
    assert MV.race_section("quick") == []  # the quick report reads only its own file
