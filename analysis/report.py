"""``scaling-sgd analyze DIR``: emergence times, fits beside theory, figures.

:func:`analyze_metrics` is the pure core (arrays in, numbers out) shared by a run
(:func:`analyze_run`) and every replica group of a sweep (:mod:`analysis.aggregate`).
It reads only the SPEC section 4 arrays and tolerates results written by older versions:
``overlap``, ``a``, ``beta``, ``lr`` may be missing (``a`` is then recomputed from the
config).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from . import theory
from .emergence import emergence_score, emergence_times, log_median, resample_log, sharpness, spread
from .fit import fit_from_draws, fit_power_law

__all__ = ["analyze_metrics", "analyze_run", "main", "load_run", "teacher_a", "json_clean"]


def json_clean(o):
    """Recursively make ``o`` strict JSON: arrays to lists, non-finite floats to ``None``."""
    if isinstance(o, dict):
        return {str(k): json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_clean(o.tolist())
    if isinstance(o, (np.floating, float)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


# -- inputs --------------------------------------------------------------------------
def load_run(run_dir):
    """``(config_json, resolved_config, metrics)`` of a run directory (any format version)."""
    from scaling_sgd._src.results import read_run

    cj, metrics = read_run(run_dir)
    cfg = cj.get("config", cj)
    return cj, cfg, metrics


def teacher_a(cfg: dict, metrics: dict, R: int) -> np.ndarray:
    """``(R, P)`` teacher coefficients: ``metrics['a']`` or recomputed from the config."""
    if "a" in metrics:
        return np.asarray(metrics["a"], np.float64)
    P = int(cfg["teacher"]["P"])
    if cfg["teacher"].get("a") is not None:
        return np.tile(np.asarray(cfg["teacher"]["a"], np.float64), (R, 1))
    if "beta" in metrics:
        beta = np.asarray(metrics["beta"], np.float64)
    else:
        from scaling_sgd._src.config import replica_grid

        beta = np.asarray(replica_grid(cfg)["beta"], np.float64)
        if beta.size != R:
            beta = np.full(R, float(np.ravel(cfg["teacher"]["beta"])[0]))
    return theory.power_law_coefficients(beta, P)


def _replica_values(cfg, metrics, name, R):
    if name in metrics:
        return np.asarray(metrics[name], np.float64).reshape(R)
    from scaling_sgd._src.config import replica_grid

    v = np.asarray(replica_grid(cfg)[name], np.float64)
    return v if v.size == R else np.full(R, np.nan)


def _single(v):
    """The common value of a per-replica array, or ``None`` if they differ."""
    v = np.asarray(v, np.float64)
    return float(v[0]) if v.size and np.allclose(v, v[0]) else None


# -- core ----------------------------------------------------------------------------
def analyze_metrics(
    metrics: dict, cfg: dict, observable: str = "skill", threshold: float = 0.5, n_boot: int = 1000, seed: int = 0
):
    """Everything the report needs, from ``metrics.npz`` arrays and the resolved config.

    Diverged replicas are excluded (and counted).  Returns a dict with the arrays
    (``times (R, P)``, ``predicted (R, P)``, ``a``, ``step``, ``loss``, ...), the fits
    (:class:`analysis.fit.PowerLawFit`), theory values and emergence scores.
    """
    step = np.asarray(metrics["step"], np.float64)
    R_all = np.asarray(metrics["loss"]).shape[0]
    diverged = np.asarray(metrics.get("diverged", np.zeros(R_all, bool)), bool).reshape(R_all)
    keep = ~diverged
    if not keep.any():
        raise ValueError("every replica diverged: nothing to analyse")
    sub = {k: np.asarray(v)[keep] for k, v in metrics.items() if k != "step" and np.ndim(v) >= 1 and np.shape(v)[0] == R_all}
    a = teacher_a(cfg, metrics, R_all)[keep]
    R, P = a.shape
    beta = _replica_values(cfg, metrics, "beta", R_all)[keep]
    lr = _replica_values(cfg, metrics, "lr", R_all)[keep]
    y = np.asarray(sub[observable], np.float64)
    loss = np.asarray(sub["loss"], np.float64)
    m_width = int(cfg["student"]["m"])
    coeffs = theory.kernel_coeffs(cfg["teacher"]["activation"], int(cfg["teacher"].get("activation_degree", 12)))
    K1 = float(np.sum(coeffs**2))
    k = next((j for j in range(1, coeffs.size) if coeffs[j] != 0.0), None)
    b = _single(beta) if cfg["teacher"].get("a") is None else None
    th = theory.exponents(b, k) if b is not None else {key: float("nan") for key in theory.exponents(1.0, k)}
    if b is None:
        th["emergence_time_vs_a"] = -1.0
        th["emergence_time_vs_d"] = (k / 2.0 - 1.0) if k else float("nan")

    times, censored = emergence_times(step, y, threshold)
    spr = spread(times)
    width = sharpness(step, y)
    predicted, pred_source = None, None
    if "norm2" in sub:
        try:
            predicted, pred_source = theory.predicted_emergence_steps(
                {**sub, "lr": lr}, coeffs, a, threshold, observable, d=int(cfg["data"]["d"])
            )
        except ValueError:
            predicted = None

    p = np.arange(1, P + 1, dtype=np.float64)
    med = spr["median"]
    learned = np.isfinite(med)
    fits, windows = {}, {}
    # emergence time vs p (and vs a_p): every direction whose median time is observed
    if learned.sum() >= 2:
        pw = (1.0, float(p[learned].max()))
        fits["emergence_time_vs_p"] = fit_power_law(p, times, pw, "median", n_boot, seed=seed)
        windows["emergence_time_vs_p"] = {"p": list(pw), "rule": "directions whose median emergence time is observed"}
        a_med = np.median(a, axis=0)
        fits["emergence_time_vs_a"] = fit_power_law(a_med[learned], times[:, learned], None, "median", n_boot, seed=seed)
        windows["emergence_time_vs_a"] = {"a_p": [float(a_med[learned].min()), float(a_med[learned].max())], "rule": "as for p"}
    # loss vs step: between the first and the last observed emergence (median over seeds);
    # before T_1 the loss is the untrained plateau, after the last one it is the width /
    # finite-P floor, neither of which is the power law.
    additive = theory.additive_loss(step, times, a, K1).mean(axis=0)
    models = [("additive model, measured $T_p$", additive)]
    if predicted is not None:
        models.append(("additive model, flow-theory $T_p$", theory.additive_loss(step, predicted, a, K1).mean(axis=0)))
    if learned.sum() >= 2:
        lw = (float(np.min(med[learned])), float(np.max(med[learned])))
        fits["loss_vs_step"] = fit_power_law(step, loss, lw, "mean", n_boot, seed=seed)
        add_fit = fit_from_draws(step, additive, None, lw)
        windows["loss_vs_step"] = {
            "step": list(lw),
            "rule": "from the first to the last median emergence time (excludes the untrained plateau, "
            f"the width plateau at m = {m_width} and the finite-P floor)",
            "additive_model_slope_same_window": add_fit.slope,
        }

    # emergence scores (Schaeffer et al.) on a grid of 10 points per decade over the emergence range
    fin = times[np.isfinite(times)]
    scores = {}
    if fin.size:
        lo = max(float(fin.min()) / 2.0, float(step[step > 0].min()))
        hi = min(float(fin.max()) * 2.0, float(step.max()))
        if hi > lo:
            grid = np.geomspace(lo, hi, max(int(10 * math.log10(hi / lo)) + 1, 4))
            yg = resample_log(step, y, grid, axis=-2)  # (R, G, P)
            lg = resample_log(step, loss, grid, axis=-1)  # (R, G)
            rec = (yg >= threshold).astype(np.float64)
            scores = {
                "grid": {"from": lo, "to": hi, "points": int(grid.size), "spacing": "10 per decade"},
                "continuous_mean_curve": emergence_score(yg.mean(axis=0), axis=0),
                "discrete_mean_curve": emergence_score(rec.mean(axis=0), axis=0),
                "continuous_median_replica": np.median(emergence_score(yg, axis=1), axis=0),
                "loss_mean_curve": float(emergence_score(lg.mean(axis=0), axis=0)),
                "loss_median_replica": float(np.median(emergence_score(lg, axis=1))),
            }

    return {
        "step": step,
        "observable": observable,
        "threshold": threshold,
        "y": y,
        "loss": loss,
        "a": a,
        "beta": beta,
        "lr": lr,
        "times": times,
        "censored": censored,
        "spread": spr,
        "sharpness": width,
        "predicted": predicted,
        "predicted_source": pred_source,
        "fits": fits,
        "windows": windows,
        "theory": th,
        "beta_value": b,
        "k": k,
        "K1": K1,
        "models": models,
        "scores": scores,
        "replicas": int(R),
        "diverged": int(diverged.sum()),
        "plateau": float(np.mean(loss[:, -1])),
    }


# -- outputs -------------------------------------------------------------------------
def emergence_json(res: dict) -> dict:
    t, spr, P = res["times"], res["spread"], res["times"].shape[1]
    dirs = []
    for q in range(P):
        d = {
            "p": q + 1,
            "a_p": float(np.median(res["a"][:, q])),
            "times": t[:, q],
            "censored": res["censored"][:, q],
            "median": spr["median"][q],
            "q10": spr["q_lo"][q],
            "q90": spr["q_hi"][q],
            "n_censored": int(spr["n_censored"][q]),
            "sharpness_decades_0.1_to_0.9": float(np.median(res["sharpness"][:, q])),
        }
        if res["predicted"] is not None:
            d["flow_theory_times"] = res["predicted"][:, q]
            d["flow_theory_median"] = log_median(res["predicted"][:, q])
            d["measured_over_theory_median"] = float(np.median(t[:, q] / res["predicted"][:, q]))
        dirs.append(d)
    return json_clean(
        {
            "observable": res["observable"],
            "threshold": res["threshold"],
            "units": "SGD steps; null = right-censored (never reached)",
            "interpolation": "linear in log(step) between log points",
            "replicas": res["replicas"],
            "diverged_excluded": res["diverged"],
            "directions": dirs,
            "flow_theory": {"formula": theory.FORMULAS["flow_escape"], "m0": res["predicted_source"]},
        }
    )


def summary_json(res: dict) -> dict:
    fits = {}
    for name, f in res["fits"].items():
        fits[name] = {
            **f.to_dict(),
            "theory": res["theory"].get(name),
            "theory_formula": theory.FORMULAS.get(name),
            "window_rule": res["windows"].get(name),
            "theory_in_interval": bool(f.covers(res["theory"][name]))
            if math.isfinite(res["theory"].get(name, float("nan")))
            else None,
        }
    out = {
        "observable": res["observable"],
        "threshold": res["threshold"],
        "replicas": res["replicas"],
        "diverged_excluded": res["diverged"],
        "beta": res["beta_value"],
        "information_exponent": res["k"],
        "fits": fits,
        "theory_exponents": res["theory"],
        "emergence_scores": {
            **res["scores"],
            "formula": "sign(argmax y - argmin y)(max y - min y)/sqrt(median_i (y_i - y_{i-1})^2) (Schaeffer et al. 2023)",
            "curves": "continuous = observable; discrete = 1{observable >= threshold} (recovered yes/no); loss = population MSE",
        },
        "final_loss_mean": res["plateau"],
    }
    if res["predicted"] is not None:
        ratio = res["times"] / res["predicted"]
        out["flow_theory_check"] = {
            "median_measured_over_predicted": float(np.median(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else None,
            "formula": theory.FORMULAS["flow_escape"],
            "m0": res["predicted_source"],
        }
    return json_clean(out)


def _fmt(v, spec=".3g"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_table(res: dict, stream=sys.stdout):
    spr = res["spread"]
    P = res["times"].shape[1]
    print(
        f"emergence ({res['observable']} >= {res['threshold']}), {res['replicas']} replicas"
        + (f", {res['diverged']} diverged excluded" if res["diverged"] else "")
        + ":",
        file=stream,
    )
    print(
        f"  {'p':>3} {'a_p':>7} {'median T_p':>11} {'10%':>10} {'90%':>10} {'flow th.':>10} {'width':>6} {'score':>6}",
        file=stream,
    )
    pred = log_median(res["predicted"], axis=0) if res["predicted"] is not None else np.full(P, np.nan)
    sc = res["scores"].get("continuous_mean_curve", np.full(P, np.nan))
    for q in range(P):
        print(
            f"  {q + 1:>3} {np.median(res['a'][:, q]):7.4f} {_fmt(spr['median'][q], '11,.0f')} {_fmt(spr['q_lo'][q], '10,.0f')} "
            f"{_fmt(spr['q_hi'][q], '10,.0f')} {_fmt(pred[q], '10,.0f')} {_fmt(float(np.median(res['sharpness'][:, q])), '6.2f')} "
            f"{_fmt(float(sc[q]), '6.1f')}",
            file=stream,
        )
    if "loss_mean_curve" in res["scores"]:
        print(
            f"  emergence score (Schaeffer et al.), replica-mean curves: directions median {np.median(sc):.1f} (continuous), "
            f"{np.median(res['scores']['discrete_mean_curve']):.1f} (recovered yes/no); total loss {res['scores']['loss_mean_curve']:.1f}",
            file=stream,
        )
        print(
            "  width = decades of step from 0.1 to 0.9; flow th. = exact flow escape from the initial overlaps / lr", file=stream
        )
    print("fitted exponents (95% bootstrap over seeds) vs theory:", file=stream)
    names = {
        "emergence_time_vs_p": "emergence time vs p",
        "emergence_time_vs_a": "emergence time vs a_p",
        "loss_vs_step": "loss vs step",
    }
    for key, f in res["fits"].items():
        thv = res["theory"].get(key)
        extra = ""
        if key == "loss_vs_step":
            extra = f"  finite-P additive model {_fmt(res['windows'][key]['additive_model_slope_same_window'], '.3f')}"
            extra += f"  window steps [{f.window[0]:,.0f}, {f.window[1]:,.0f}]"
        print(
            f"  {names.get(key, key):<24} {f.slope:7.3f} [{f.ci[0]:.3f}, {f.ci[1]:.3f}]  theory {_fmt(thv, '.3f')}"
            f"  R^2 {_fmt(f.r2, '.3f')}{extra}",
            file=stream,
        )
    if not res["fits"]:
        print("  (fewer than two directions emerged: no fit)", file=stream)


def make_figures(res: dict, out_dir: Path, title: str = "") -> list[str]:
    from . import plots

    out = []
    med = res["spread"]["median"]
    # start a decade before the first emergence: the untrained plateau carries no information
    fin = res["times"][np.isfinite(res["times"])]
    pos = res["step"][res["step"] > 0]
    xlim = (max(float(fin.min()) / 10.0, float(pos.min())), float(pos.max()) * 1.05) if fin.size else None
    pred0 = res["predicted"][0] if res["predicted"] is not None else None
    add0 = theory.additive_loss(res["step"], res["times"][0], res["a"][0], res["K1"])
    fig = plots.staircase(
        {"step": res["step"], res["observable"]: res["y"], "loss": res["loss"]},
        res["observable"],
        0,
        res["times"][0],
        title=title,
        predicted=pred0,
        loss_model=("additive model $\\sum_p a_p^2K(1)1\\{t<T_p\\}$", add0),
        xlim=xlim,
    )
    out += plots.save(fig, out_dir / "staircase")
    fig = plots.emergence_vs_p(
        res["times"], res["fits"].get("emergence_time_vs_p"), res["theory"]["emergence_time_vs_p"], res["predicted"]
    )
    out += plots.save(fig, out_dir / "emergence_vs_p")
    fig = plots.loss_vs_step(
        res["step"], res["loss"], res["fits"].get("loss_vs_step"), res["theory"]["loss_vs_step"], res["models"], xlim=xlim
    )
    out += plots.save(fig, out_dir / "loss_vs_step")
    fig = plots.skill_heatmap(res["step"], res["y"], res["observable"], med, xlim=xlim)
    out += plots.save(fig, out_dir / "heatmap")
    return [str(p) for p in out]


def analyze_run(run_dir, observable=None, threshold=None, stream=None, n_boot: int = 1000, figures: bool = True) -> dict:
    """Analyse a run directory: write ``emergence.json``, ``summary.json`` and the figures
    into it; print the table to ``stream`` (if given).  Returns the summary dict."""
    from scaling_sgd._src.results import atomic_write_json

    run_dir = Path(run_dir)
    cj, cfg, metrics = load_run(run_dir)
    an = cfg.get("analysis", {})
    observable = observable or an.get("observable", "skill")
    threshold = float(threshold if threshold is not None else an.get("threshold", 0.5))
    res = analyze_metrics(metrics, cfg, observable, threshold, n_boot)
    summary = summary_json(res)
    summary["run"] = {"dir": str(run_dir), "hash": cj.get("hash"), "engine": cj.get("engine", cfg["train"].get("engine"))}
    if figures:
        t = cfg["teacher"]
        title = f"d={cfg['data']['d']}, P={t['P']}, m={cfg['student']['m']}, beta={t['beta']}, lr={cfg['train']['lr']}"
        summary["figures"] = make_figures(res, run_dir, title)
    atomic_write_json(run_dir / "emergence.json", emergence_json(res))
    atomic_write_json(run_dir / "summary.json", summary)
    if stream is not None:
        print_table(res, stream)
        print(f"wrote {run_dir / 'summary.json'}, emergence.json and {len(summary.get('figures', [])) // 2} figures", file=stream)
    return summary


def main(args) -> int:
    """The ``analyze`` subcommand: a run directory or a sweep directory."""
    from scaling_sgd._src.results import is_run_dir

    d = Path(args.dir)
    observable = getattr(args, "observable", None)
    threshold = getattr(args, "threshold", None)
    if threshold is not None and not (0.0 < threshold <= 1.0):
        print(f"scaling-sgd: error: --threshold: got {threshold}; accepted: a number in (0, 1]", file=sys.stderr)
        return 2
    if (d / "sweep.json").is_file():
        from .aggregate import analyze_sweep

        analyze_sweep(d, observable, threshold, stream=sys.stdout)
        return 0
    if is_run_dir(d):
        analyze_run(d, observable, threshold, stream=sys.stdout)
        return 0
    print(
        f"scaling-sgd: error: DIR: {str(d)!r} is not a results directory; accepted: a run directory "
        "(config.json + metrics.npz) or a sweep directory (sweep.json)",
        file=sys.stderr,
    )
    return 2
