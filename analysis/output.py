"""The analysis of a run as text and JSON: ``emergence.json``, ``summary.json``, the table."""

from __future__ import annotations

import math
import re
import sys

import numpy as np

from . import theory
from .core import RunAnalysis
from .emergence import log_median
from .fit import caveats

__all__ = [
    "json_clean",
    "fmt",
    "emergence_json",
    "summary_json",
    "diverged_json",
    "print_table",
    "theory_text",
    "LOSS_EXPONENT_MIN_P",
]

# Below this many directions the loss exponent cannot discriminate beta (docs/model.md §3).
LOSS_EXPONENT_MIN_P = 256


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


def _has_value(v) -> bool:
    """A theory value that can be compared with a fit (not ``None``, finite)."""
    return v is not None and math.isfinite(v)


def theory_text(value, reason: str = "", spec: str = "7.3f") -> str:
    """A theory value for a table, or ``none (reason)`` where there is none."""
    if _has_value(value):
        return format(value, spec)
    return f"none ({reason})" if reason else fmt(None, spec)


def emergence_json(res: RunAnalysis) -> dict:
    t, spr, P = res.times, res.spread, res.times.shape[1]
    dirs = []
    for q in range(P):
        d = {
            "p": q + 1,
            "a_p": float(np.median(res.a[:, q])),
            "times": t[:, q],
            "censored": res.censored[:, q],
            "median": spr["median"][q],
            "median_95": [spr["median_lo"][q], spr["median_hi"][q]],
            "q10": spr["q_lo"][q],
            "q90": spr["q_hi"][q],
            "n_censored": int(spr["n_censored"][q]),
            # learned: live replicas that reached the threshold; diverged replicas never count
            "n_learned": int(np.isfinite(t[:, q]).sum()),
            "n_diverged": res.diverged,
            "sharpness_decades_0.1_to_0.9": float(np.median(res.sharpness[:, q])),
        }
        if res.predicted is not None:
            d["flow_theory_times"] = res.predicted[:, q]
            d["flow_theory_median"] = log_median(res.predicted[:, q])
            d["measured_over_theory_median"] = float(np.median(t[:, q] / res.predicted[:, q]))
        dirs.append(d)
    return json_clean(
        {
            "observable": res.observable,
            "threshold": res.threshold,
            **({"partial": res.partial} if res.partial else {}),
            **({"group": res.group} if res.group else {}),
            "units": "SGD steps; null = right-censored (never reached)",
            "median": "Kaplan-Meier median over seeds (censored at the last step); median_95: seed bootstrap",
            "interpolation": "linear in log(step) between log points",
            "replicas": res.replicas,
            "diverged_excluded": res.diverged,
            "directions": dirs,
            "flow_theory": {"formula": theory.FORMULAS["flow_escape"], "m0": res.predicted_source},
        }
    )


def summary_json(res: RunAnalysis) -> dict:
    fits = {}
    for name, f in res.fits.items():
        th = res.theory.get(name)
        fits[name] = {
            **f.to_dict(),
            "theory": th,
            "theory_formula": theory.FORMULAS.get(name),
            "window_rule": res.windows.get(name),
            "theory_in_interval": bool(f.covers(th)) if _has_value(th) else None,
        }
        if not _has_value(th):
            fits[name]["theory_reason"] = res.theory_reasons.get(name, "no theory value")
    out = {
        "observable": res.observable,
        "threshold": res.threshold,
        **({"partial": res.partial} if res.partial else {}),
        **({"group": res.group} if res.group else {}),
        "replicas": res.replicas,
        "diverged_excluded": res.diverged,
        "beta": res.beta_value,
        "information_exponent": res.k,
        "fits": fits,
        "no_fit": {name: w["no_fit"] for name, w in res.windows.items() if "no_fit" in w},
        "excluded": {name: w["excluded"] for name, w in res.windows.items() if w.get("excluded")},
        "theory_exponents": res.theory,
        "theory_reasons": res.theory_reasons,
        "emergence_scores": {
            **res.scores,
            "formula": "sign(argmax y - argmin y)(max y - min y)/sqrt(median_i (y_i - y_{i-1})^2) (Schaeffer et al. 2023)",
            "curves": "continuous = observable; discrete = 1{observable >= threshold} (recovered yes/no); loss = population MSE",
        },
        "final_loss_mean": res.plateau,
    }
    if res.predicted is not None:
        ratio = res.times / res.predicted
        out["flow_theory_check"] = {
            "median_measured_over_predicted": float(np.median(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else None,
            "formula": theory.FORMULAS["flow_escape"],
            "m0": res.predicted_source,
        }
    return json_clean(out)


def diverged_json(metrics: dict, observable: str, threshold: float) -> dict:
    """``summary.json``/``emergence.json`` of a run whose every replica diverged: no
    direction learned, no fit, the steps at which each replica diverged."""
    R, P = np.asarray(metrics[observable]).shape[0], np.asarray(metrics[observable]).shape[-1]
    steps = np.asarray(metrics.get("diverged_step", np.full(R, -1)), np.int64).reshape(R)
    a = np.asarray(metrics["a"], np.float64) if "a" in metrics else None
    return json_clean(
        {
            "observable": observable,
            "threshold": threshold,
            "replicas": 0,
            "diverged_excluded": int(R),
            "diverged_steps": steps,
            "all_diverged": True,
            "directions": [
                {"p": q + 1, "a_p": float(np.median(a[:, q])) if a is not None else None, "n_learned": 0, "n_diverged": int(R)}
                for q in range(P)
            ],
            "fits": {},
        }
    )


def fmt(v, spec=".3g"):
    """``v`` formatted with ``spec``; a missing or non-finite value is ``-``, padded to the
    width ``spec`` asks for, so that tables stay aligned."""
    if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
        width = re.match(r"^[<>^]?(\d*)", spec).group(1)
        return "-".rjust(int(width) if width else 1)
    return format(v, spec)


def print_table(res: RunAnalysis, stream=sys.stdout):
    spr = res.spread
    P = res.times.shape[1]
    if res.partial:
        print(res.partial, file=stream)
    print(
        f"emergence ({res.observable} >= {res.threshold}), {res.replicas} replicas"
        + (f", {res.diverged} diverged excluded" if res.diverged else "")
        + ":",
        file=stream,
    )
    print(
        f"  {'p':>3} {'a_p':>7} {'median T_p':>11} {'95% interval':>23} {'10%':>10} {'90%':>10} {'flow th.':>10} {'width':>6} {'score':>6}"
        f" {'learned':>8} {'diverged':>8}",
        file=stream,
    )
    R_all = res.replicas + res.diverged
    pred = log_median(res.predicted, axis=0) if res.predicted is not None else np.full(P, np.nan)
    sc = res.scores.get("continuous_mean_curve", np.full(P, np.nan))
    for q in range(P):
        print(
            f"  {q + 1:>3} {np.median(res.a[:, q]):7.4f} {fmt(spr['median'][q], '11,.0f')} "
            f"[{fmt(spr['median_lo'][q], '10,.0f')}, {fmt(spr['median_hi'][q], '10,.0f')}] {fmt(spr['q_lo'][q], '10,.0f')} "
            f"{fmt(spr['q_hi'][q], '10,.0f')} {fmt(pred[q], '10,.0f')} {fmt(float(np.median(res.sharpness[:, q])), '6.2f')} "
            f"{fmt(float(sc[q]), '6.1f')} {int(np.isfinite(res.times[:, q]).sum()):>4}/{R_all:<3} {res.diverged:>8}",
            file=stream,
        )
    if "loss_mean_curve" in res.scores:
        print(
            f"  emergence score (Schaeffer et al.), replica-mean curves: directions median {np.median(sc):.1f} (continuous), "
            f"{np.median(res.scores['discrete_mean_curve']):.1f} (recovered yes/no); total loss {res.scores['loss_mean_curve']:.1f}",
            file=stream,
        )
        print(
            "  median: Kaplan-Meier (censored at the last step), 95% interval from a seed bootstrap (- : censored); "
            "width = decades of step from 0.1 to 0.9; flow th. = exact flow escape from the initial overlaps / lr; "
            "a quantile among replicas that never learned the direction is -",
            file=stream,
        )
    print("fitted exponents (95% bootstrap over seeds) vs theory:", file=stream)
    names = {
        "emergence_time_vs_p": "emergence time vs p",
        "emergence_time_vs_a": "emergence time vs a_p",
        "loss_vs_step": "loss vs step",
    }
    for key, f in res.fits.items():
        thv = res.theory.get(key)
        extra = ""
        if key == "loss_vs_step":
            extra = f"  finite-P additive model {fmt(res.windows[key]['additive_model_slope_same_window'], '.3f')}"
            extra += f"  window steps [{f.window[0]:,.0f}, {f.window[1]:,.0f}]"
        warn = caveats(f)
        print(
            f"  {names.get(key, key):<24} {f.slope:7.3f} [{f.ci[0]:7.3f}, {f.ci[1]:7.3f}]  "
            f"theory {theory_text(thv, res.theory_reasons.get(key, ''))}"
            f"  R^2 {fmt(f.r2, '5.3f')}{extra}" + (f"  CAUTION: {'; '.join(warn)}" if warn else ""),
            file=stream,
        )
    for key, w in res.windows.items():
        if "no_fit" in w:
            print(f"  {names.get(key, key):<24} no fit: {w['no_fit']}", file=stream)
    for key, w in res.windows.items():
        for why in w.get("excluded", [])[:5]:
            print(f"  {names.get(key, key):<24} left out {why}", file=stream)
        if len(w.get("excluded", [])) > 5:
            print(f"  {names.get(key, key):<24} ... and {len(w['excluded']) - 5} more left out (see summary.json)", file=stream)
    if "loss_vs_step" in res.fits and P < LOSS_EXPONENT_MIN_P:
        print(
            f"  note: with P = {P} directions the loss is a staircase of {P} drops. Telling beta apart by the loss exponent "
            f"needs P >= {LOSS_EXPONENT_MIN_P} and >= 8 seeds (docs/model.md §3); at this P compare the fit with the "
            "finite-P additive model, not with the asymptotic theory",
            file=stream,
        )
