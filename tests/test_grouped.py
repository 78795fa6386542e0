"""Grouped analysis (``by=``), no fit pooled over replicas of different theory, partial
runs named, and a d sweep with censored points: every point left out is named."""

import json

import numpy as np
import pytest

import scaling_sgd as ss
import scaling_sgd.analysis as ana
from scaling_sgd import power_law_coefficients
from scaling_sgd._src.results import write_run
from scaling_sgd.analysis.aggregate import analyze_sweep

from helpers import small_config

STEP = np.concatenate([[0], np.unique(np.geomspace(1, 1e7, 160).astype(np.int64))])


def _metrics(T, beta, seeds, lr, step=STEP, m=None):
    """Logistic skill curves crossing 1/2 at ``T`` ``(R, P)`` (``inf``: never)."""
    R, P = T.shape
    lt = np.log(np.maximum(step, 1.0))[None, :, None]
    with np.errstate(divide="ignore", over="ignore"):
        skill = np.where(
            np.isfinite(T)[:, None, :], 1 / (1 + np.exp(np.clip((np.log(T)[:, None, :] - lt) / 0.05, -700, 700))), 0.0
        )
    a = power_law_coefficients(beta, P)
    return {
        "step": step,
        "loss": (a[:, None, :] ** 2 * (1 - skill)).sum(-1) + 1e-6,
        "skill": skill,
        "alignment": skill,
        "norm2": np.full((R, step.size, m or 8), 0.01),
        "diverged": np.zeros(R, bool),
        "diverged_step": -np.ones(R, np.int64),
        "seed": np.asarray(seeds),
        "lr": np.full(R, lr),
        "beta": np.asarray(beta, float),
    }


def _two_beta_result(rng, partial=False):
    betas, seeds, P = [1.0, 2.0], list(range(8)), 6
    cfg = small_config(**{"teacher.P": P, "student.m": 8, "teacher.beta": betas, "train.seed": seeds, "train.steps": 10**7})
    beta = np.repeat(betas, len(seeds))
    T = 1e3 * np.arange(1, P + 1.0)[None, :] ** beta[:, None] * np.exp(0.1 * rng.standard_normal((beta.size, P)))
    meta = {"partial": True, "last_step": int(STEP[-1])} if partial else {}
    return ss.Result(cfg, _metrics(T, beta, np.tile(seeds, 2), 1e-3), meta)


def test_analyze_by_beta_gives_one_analysis_per_value_and_refuses_to_pool():
    res = _two_beta_result(np.random.default_rng(0))
    pooled = ana.analyze(res, n_boot=100)
    # T_p ~ p^beta over two betas means nothing: refused, saying what to do
    assert "emergence_time_vs_p" not in pooled.fits and "loss_vs_step" not in pooled.fits
    assert pooled.windows["emergence_time_vs_p"]["no_fit"].endswith('use analyze(result, by="beta")')
    g = ana.analyze(res, by="beta", n_boot=200)
    assert list(g) == [1.0, 2.0] and repr(g) == "<GroupedAnalysis by beta: 1, 2 (2 groups)>"
    for b in (1.0, 2.0):
        f = g[b].fits["emergence_time_vs_p"]
        assert g[b].theory["emergence_time_vs_p"] == b and f.ci[0] < b < f.ci[1] and abs(f.slope - b) < 0.1
        assert g[b].replicas == 8 and np.all(g[b].beta == b) and g[b].group == {"beta": b}
    assert g[2.0 + 1e-12] is g[2.0]
    with pytest.raises(KeyError, match="beta = 3.0 is not a group; groups: 1, 2"):
        g[3.0]
    # one group per lr here: theory does not depend on lr, beta still varies inside it
    assert "no_fit" in ana.analyze(res, by="lr", n_boot=50)[1e-3].windows["emergence_time_vs_p"]
    with pytest.raises(ValueError, match="by: 'd' is not a grouping key here; accepted: beta, lr, seed"):
        ana.analyze(res, by="d")
    fig = g.plot_emergence()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "theory 1.00" in labels and "theory 2.00" in labels and "beta = 2: median" in labels
    colours = {ln.get_color() for ln in fig.axes[0].lines if ln.get_label() in ("beta = 1: median", "beta = 2: median")}
    assert len(colours) == 2


def test_partial_run_is_named_in_the_table_and_summary(tmp_path, capsys):
    res = _two_beta_result(np.random.default_rng(1), partial=True)
    text = f"partial: stopped at step {int(STEP[-1]):,} of 10,000,000"
    assert ana.analyze(res, n_boot=50).partial == text
    assert ana.analyze(res, by="beta", n_boot=50)[1.0].partial == text
    from scaling_sgd.analysis.report import analyze_run

    write_run(tmp_path / "run", res.config, res.metrics, {"format": 1, "partial": True, "last_step": 4000})
    s = analyze_run(tmp_path / "run", stream=__import__("sys").stdout, n_boot=50, figures=False)
    assert s["partial"] == "partial: stopped at step 4,000 of 10,000,000"
    assert capsys.readouterr().out.startswith("partial: stopped at step 4,000 of 10,000,000\n")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["partial"] == s["partial"]


def _d_sweep(tmp, rng, budget, partial_d=None):
    """A sweep over d with T_p = 1e3 (d/16) p e^(0.4 z), 4 seeds, every run stopped at
    ``budget``: the largest d is censored in part."""
    step = STEP[STEP <= budget]
    points = []
    for d in (16, 32, 64, 128):
        pid = f"{d:016x}"
        T = 1e3 * (d / 16.0) * np.arange(1, 4.0)[None, :] * np.exp(0.4 * rng.standard_normal((4, 3)))
        T = np.where(T <= step[-1], T, np.inf)
        cfg = small_config(
            **{"data.d": d, "teacher.P": 3, "student.m": 8, "train.seed": [0, 1, 2, 3], "train.steps": int(step[-1])}
        )
        meta = {"format": 1, **({"partial": True, "last_step": 900} if d == partial_d else {})}
        write_run(tmp / "points" / pid, cfg, _metrics(T, np.ones(4), range(4), 1e-3, step=step), meta)
        points.append({"id": pid, "dir": f"points/{pid}", "settings": {"data.d": d}, "state": "done"})
    (tmp / "sweep.json").write_text(json.dumps({"format": 1, "base_config": {}, "swept": ["data.d"], "points": points}))


def test_d_sweep_with_censored_points_fits_and_names_them(tmp_path, capsys):
    import sys

    _d_sweep(tmp_path, np.random.default_rng(2), 2.4e4, partial_d=16)
    s = analyze_sweep(tmp_path, stream=sys.stdout, n_boot=100, figures=False)
    out = capsys.readouterr().out
    (f,) = s["fits"]["emergence_time_vs_d"]
    # p = 3 at d = 128 (median 2.4e4) is censored in about half the seeds, and kept as such
    assert f["no_fit"] is None and f["slope"] is not None and f["ci"][0] < 1.0 < f["ci"][1]
    assert any(c.startswith("d = 128: ") and "censored at step" in c for c in f["censored_points"])
    assert "censored, kept in the fit: d = 128" in out
    # the interrupted point is skipped and named
    last = int(STEP[STEP <= 2.4e4][-1])
    assert {"id": f"{16:016x}", "reason": f"partial: stopped at step 900 of {last:,}"} in s["skipped"]
    # a budget that no seed at d = 128 reaches for p >= 2: those directions are left out, named
    _d_sweep(tmp_path / "b", np.random.default_rng(3), 1.2e4)
    s = analyze_sweep(tmp_path / "b", stream=sys.stdout, n_boot=100, figures=False)
    out = capsys.readouterr().out
    (f,) = s["fits"]["emergence_time_vs_d"]
    last = int(STEP[STEP <= 1.2e4][-1])
    assert f["excluded"][-1].startswith("p = 3: ") and f["excluded"][-1].endswith(
        f"d = 128: 4 of 4 seeds censored at step {last:,}"
    )
    assert f"left out {f['excluded'][-1]}" in out
    g = ana.analyze(tmp_path / "b", by="d", n_boot=50)
    assert list(g) == [16, 32, 64, 128] and g[128].group == {"d": 128}
    with pytest.raises(ValueError, match="is a sweep: analyze"):
        ana.analyze(tmp_path / "b")
