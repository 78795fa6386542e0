"""Sweep aggregation recovers known exponents from synthetic sweep results."""

import json
import sys

import numpy as np

from scaling_sgd import power_law_coefficients
from scaling_sgd._src.results import write_run
from scaling_sgd.analysis.aggregate import analyze_sweep
from scaling_sgd.cli import main

from helpers import small_config

STEP = np.concatenate([[0], np.unique(np.geomspace(1, 1e7, 160).astype(np.int64))])


def _synthetic_run(out, d, P, m, betas, seeds, lr, d_slope, rng, noise=0.15):
    """A run directory whose emergence steps are ``T_p = 1e3 (d/32)^d_slope p^beta e^(noise z)``
    with logistic skill curves; loss is the additive model; replicas = betas x seeds."""
    cfg = small_config(
        **{"data.d": d, "teacher.P": P, "student.m": m, "teacher.beta": list(betas), "train.seed": list(seeds), "train.lr": lr}
    )
    beta = np.repeat(np.asarray(betas, float), len(seeds))
    R = beta.size
    p = np.arange(1, P + 1.0)
    T = 1e3 * (d / 32.0) ** d_slope * p[None, :] ** beta[:, None] * np.exp(noise * rng.standard_normal((R, P)))
    T[:, m:] = np.inf  # a width-m student learns only m directions
    lt = np.log(np.maximum(STEP, 1.0))[None, :, None]
    skill = np.where(np.isfinite(T)[:, None, :], 1 / (1 + np.exp(-np.clip((lt - np.log(T)[:, None, :]) / 0.05, -700, 700))), 0.0)
    a = power_law_coefficients(beta, P)
    loss = (a[:, None, :] ** 2 * (1 - skill)).sum(-1) + 1e-6
    metrics = {
        "step": STEP,
        "loss": loss,
        "skill": skill,
        "alignment": skill,
        "norm2": np.full((R, STEP.size, m), 0.01),
        "diverged": np.zeros(R, bool),
        "diverged_step": -np.ones(R, np.int64),
        "seed": np.tile(np.asarray(seeds), len(betas)),
        "lr": np.full(R, lr),
        "beta": beta,
        # no "a" and no "overlap": both optional; a is computed from the config
    }
    write_run(out, cfg, metrics, {"format": 1})


def test_aggregation_recovers_known_exponents(tmp_path, capsys):
    rng = np.random.default_rng(0)
    points = []
    for d in (32, 64, 128, 256):
        pid = f"{d:016x}"
        _synthetic_run(tmp_path / "points" / pid, d, 6, 8, [1.0, 2.0], range(8), 1e-3, 0.9, rng)
        points.append({"id": pid, "dir": f"points/{pid}", "settings": {"data.d": d, "teacher.beta": [1.0, 2.0]}, "state": "done"})
    points.append({"id": "f" * 16, "dir": f"points/{'f' * 16}", "settings": {"data.d": 512}, "state": "failed"})
    (tmp_path / "sweep.json").write_text(
        json.dumps({"format": 1, "base_config": {}, "swept": ["data.d", "teacher.beta"], "points": points})
    )

    s = analyze_sweep(tmp_path, stream=None, n_boot=300)
    assert s["groups_analysed"] == 8 and s["skipped"] == [{"id": "f" * 16, "reason": "failed"}]
    # emergence time vs d at fixed lr: one series per beta, slope 0.9 by construction
    fits_d = s["fits"]["emergence_time_vs_d"]
    assert len(fits_d) == 2
    for f in fits_d:
        assert abs(f["slope"] - 0.9) < 0.08 and f["ci"][0] < 0.9 < f["ci"][1], f
        assert f["theory"] == 1.0  # k/2 - 1 for h4
    # emergence slope vs p recovered per beta group, beside theory beta
    rows = s["fits"]["emergence_time_vs_p_vs_beta"][0]["rows"]
    assert len(rows) == 8
    for r in rows:
        assert abs(r["slope"] - r["params"]["beta"]) < 0.2 and r["theory"] == r["params"]["beta"], r
    # figures named by their series' values, not by position
    assert sorted(p.name for p in tmp_path.glob("emergence_time_vs_d_*.png")) == [
        f"emergence_time_vs_d_P=6_batch_size=1_beta={b}_engine=sgd_lr=0.001_m=8.png" for b in (1.0, 2.0)
    ]
    assert (tmp_path / "emergence_time_vs_p_vs_beta.pdf").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["groups_analysed"] == 8
    assert main(["analyze", str(tmp_path)]) == 0
    assert "emergence_time_vs_d" in capsys.readouterr().out


def test_plateau_vs_width_and_compute_frontier(tmp_path):
    rng = np.random.default_rng(1)
    P, beta = 24, 1.0
    points = []
    for m in (2, 4, 8, 16):
        pid = f"{m:016x}"
        _synthetic_run(tmp_path / "points" / pid, 64, P, m, [beta], range(4), 1e-3, 1.0, rng, noise=0.05)
        points.append({"id": pid, "dir": f"points/{pid}", "settings": {"student.m": m}, "state": "done"})
    (tmp_path / "sweep.json").write_text(json.dumps({"format": 1, "base_config": {}, "swept": ["student.m"], "points": points}))
    s = analyze_sweep(tmp_path, stream=None, n_boot=200, figures=False)
    (f,) = s["fits"]["plateau_vs_m"]
    # plateau = sum_{p > m} a_p^2 exactly; its own log-log slope over these widths is the truth here
    a2 = power_law_coefficients(beta, P) ** 2
    x = np.array([2, 4, 8, 16.0])
    truth = np.polyfit(np.log(x), np.log([a2[int(w) :].sum() + 1e-6 for w in x]), 1)[0]
    assert abs(f["slope"] - truth) < 1e-3 and f["theory"] == 1 - 2 * beta
    assert "compute_frontier" in s["fits"] and s["fits"]["compute_frontier"][0]["slope"] < 0


def test_beta_at_most_one_half_has_no_power_law_theory_value(tmp_path, capsys):
    """beta = 0.25 is a valid run, only not a power law: the run's summary and the sweep's
    carry null and the reason for the loss, plateau and frontier exponents, and nothing
    prints -(2 beta - 1)/beta = 2 or 1 - 2 beta = 0.5 as theory."""
    from scaling_sgd.analysis import theory
    from scaling_sgd.analysis.report import analyze_run

    rng = np.random.default_rng(2)
    _synthetic_run(tmp_path / "run", 64, 6, 8, [0.25], range(4), 1e-3, 1.0, rng)
    s = analyze_run(tmp_path / "run", stream=sys.stdout, n_boot=100)
    printed = capsys.readouterr().out
    f = s["fits"]["loss_vs_step"]
    assert f["theory"] is None and f["theory_in_interval"] is None and f["theory_reason"] == theory.NO_POWER_LAW
    for name in ("loss_vs_step", "plateau_vs_m", "compute_frontier"):
        assert s["theory_exponents"][name] is None and s["theory_reasons"][name] == theory.NO_POWER_LAW
    assert s["fits"]["emergence_time_vs_p"]["theory"] == 0.25  # T_p ~ p^beta holds at any beta
    assert "theory 2.000" not in printed and "no power law for beta <= 1/2" in printed
    assert (tmp_path / "run" / "loss_vs_step.png").is_file()

    points = []
    for m in (2, 4):
        pid = f"{m:016x}"
        _synthetic_run(tmp_path / "sweep" / "points" / pid, 64, 6, m, [0.25, 1.0], range(4), 1e-3, 1.0, rng)
        points.append({"id": pid, "dir": f"points/{pid}", "settings": {"student.m": m}, "state": "done"})
    (tmp_path / "sweep" / "sweep.json").write_text(
        json.dumps({"format": 1, "base_config": {}, "swept": ["student.m"], "points": points})
    )
    s = analyze_sweep(tmp_path / "sweep", stream=sys.stdout, n_boot=100)
    printed = capsys.readouterr().out
    by_beta = {f["series"]: f for f in s["fits"]["plateau_vs_m"]}
    low, high = (next(f for lab, f in by_beta.items() if f"beta={b}" in lab) for b in (0.25, 1.0))
    assert low["theory"] is None and low["theory_reason"] == theory.NO_POWER_LAW and low["theory_in_interval"] is None
    assert high["theory"] == -1.0 and "theory_reason" not in high
    rows = {r["params"]["beta"]: r for r in s["fits"]["loss_vs_step_vs_beta"][0]["rows"]}
    assert rows[0.25]["theory"] is None and rows[0.25]["theory_reason"] == theory.NO_POWER_LAW
    assert rows[1.0]["theory"] == -1.0
    group = next(g for g in s["groups"] if g["params"]["beta"] == 0.25 and g["params"]["m"] == 4)
    assert (
        group["fits"]["loss_vs_step"]["theory"] is None and group["fits"]["loss_vs_step"]["theory_reason"] == theory.NO_POWER_LAW
    )
    # a width-2 student learns 2 of the 6 directions: too few for the loss fit window (2nd to 4th), so no fit, and why
    narrow = next(g for g in s["groups"] if g["params"]["beta"] == 0.25 and g["params"]["m"] == 2)
    assert "loss_vs_step" not in narrow["fits"]
    assert narrow["no_fit"]["loss_vs_step"] == "2 of 6 directions have a finite median emergence time; the window needs 4"
    assert "  0.500  " not in printed and "2.000" not in printed and "(theory: no power law for beta <= 1/2" in printed
