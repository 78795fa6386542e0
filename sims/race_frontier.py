"""The race model's compute-frontier slope against P, from random initial students alone.

For each ``P`` the setting is experiment 10's (``sims/10_compute_frontier_P256.toml``:
``beta = 0.8``, ``h4``, ``d = 1e4``, ``lr = 1e-4``, ``5e8`` steps, its initialisation and its
seeds ``0..7``) with widths ``m = 1, 2, 4, ..., P``.  Nothing is simulated: each width's
emergence steps are the race model's (:func:`scaling_sgd.analysis.race.race_from_config`,
the function ``race(result)`` runs on) for the initial students the run would have, and its
loss is the additive one, ``K(1) sum_p a_p^2 1{step < T_p}``, on the run's own log grid.
The frontier is experiment 6's (its ``_frontier``: the lower envelope over widths of the
seed-mean loss vs ``C = m x step``), fitted with :func:`~scaling_sgd.analysis.fit.fit_from_draws`
where it lies in the experiment's loss window ``[0.02, 0.5]``, with the same bootstrap over
seeds.  At ``P = 256`` the students are those of experiment 10's runs (same seeds).

    python -m sims.race_frontier [--out sims/results/race_frontier.json] [--P 256 512 ...] [--seeds 8]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import math
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from scaling_sgd._src.engines.base import log_grid
from scaling_sgd._src.files import atomic_write_bytes, atomic_write_json
from scaling_sgd.analysis.fit import bootstrap, fit_from_draws
from scaling_sgd.analysis.race import race_from_config
from sims import load

EXPERIMENT = "10_compute_frontier_P256"
MEASURED = load.SIMS / "results" / f"{EXPERIMENT}.json"
OUT = load.SIMS / "results" / "race_frontier.json"
# Fixed before any result was seen: experiment 10's own seeds.  P = 4096 is left out of
# the default list: its widest width alone takes 67 s for two of the eight seeds (5 GB
# resident) on a shared 2-core machine, so the whole P runs well past three minutes.
SEEDS = 8
PS = (256, 512, 1024, 2048)


def experiment() -> dict:
    """Experiment 10's TOML (its ``[experiment]`` table holds the fit window and ``n_boot``)."""
    with (load.SIMS / f"{EXPERIMENT}.toml").open("rb") as f:
        return tomllib.load(f)


def input_dim(exp: dict, P: int) -> int:
    """Experiment 10's ``d``, or the smallest the flow engine takes (``d >= P + m`` with
    ``m`` up to ``P``) where that is larger."""
    return max(int(exp["data"]["d"]), 2 * P)


def config(exp: dict, P: int, m: int, seeds, d: int) -> dict:
    """Experiment 10's run config at ``P``, width ``m``, ``seeds`` and ``d``."""
    cfg = {k: copy.deepcopy(v) for k, v in exp.items() if k not in ("experiment", "sweep", "gpu", "quick")}
    cfg["teacher"]["P"], cfg["student"]["m"], cfg["data"]["d"] = P, m, d
    cfg["train"]["seed"] = list(seeds)
    cfg["train"]["progress"] = False
    return cfg


def race_losses(exp: dict, P: int, widths, seeds, step, d: int, log=print):
    """``(W, S, T)`` additive loss of each width and seed at the log steps ``step``, from
    the race model's steps within the run, and the teacher ``a`` ``(P,)`` with ``K(1)``.
    The seeds go in groups of at most ``2^25 / (m P)`` (a seed's students do not depend on
    the others), so that the ``(S, m, P)`` cosines and escape times stay near 256 MB."""
    out = np.empty((len(widths), len(seeds), step.size))
    for w, m in enumerate(widths):
        t0 = time.perf_counter()
        group = max(1, 2**25 // (m * P))
        for j in range(0, len(seeds), group):
            pred = race_from_config(config(exp, P, m, seeds[j : j + group], d), within_run=True)
            out[w, j : j + group] = pred.loss(step)
        log(f"  P={P} m={m}: {time.perf_counter() - t0:.1f} s")
    return out, pred.a[0], pred.K1


def _experiment_frontier():
    """Experiment 6's envelope (imported when needed: its module draws with pyplot)."""
    return importlib.import_module("sims.experiments.06_compute_frontier")._frontier


def frontier(losses, widths, step, idx):
    """Experiment 6's frontier of the seeds ``idx``: ``(grid, curves, envelope)``."""
    runs = [SimpleNamespace(settings={"student.m": m}, step=step, metrics={"loss": losses[w]}) for w, m in enumerate(widths)]
    return _experiment_frontier()(runs, [idx] * len(runs))


def slope(losses, widths, step, idx, window) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Experiment 6's fit: the frontier's log-log slope where it lies in ``window`` (``nan``
    with fewer than 4 points); also ``(grid, envelope, in-window mask)``."""
    grid, _, env = frontier(losses, widths, step, idx)
    sel = np.isfinite(env) & (env >= window[0]) & (env <= window[1])
    est = fit_from_draws(grid[sel], env[sel]).slope if sel.sum() >= 4 else math.nan
    return est, grid, env, sel


def cutoff(a: np.ndarray, K1: float, level: float) -> int:
    """The number ``n`` of top directions to learn before the additive loss
    ``K(1) sum_{p > n} a_p^2`` falls to ``level``."""
    tail = K1 * (np.sum(a**2) - np.cumsum(a**2))  # tail[n - 1] = K(1) sum_{p > n} a_p^2
    return int(np.argmax(tail <= level)) + 1


def one_p(exp: dict, P: int, seeds, log=print) -> dict:
    """The race frontier at ``P``: slope, bootstrap interval and what sets the window."""
    t0 = time.perf_counter()
    window = tuple(exp["experiment"]["fit_loss"])
    beta = float(exp["teacher"]["beta"])
    n_boot = int(exp["experiment"]["n_boot"])
    widths = [2**j for j in range(int(math.log2(P)) + 1)]
    d = input_dim(exp, P)
    step = log_grid(int(exp["train"]["steps"]), int(exp["log"]["points"])).astype(np.float64)
    losses, a, K1 = race_losses(exp, P, widths, seeds, step, d, log)
    t_race = time.perf_counter() - t0
    est, grid, env, sel = slope(losses, widths, step, np.arange(len(seeds)), window)
    _, lo, hi = bootstrap(lambda ii: slope(losses, widths, step, ii, window)[0], len(seeds), n_boot)
    _, curves, _ = frontier(losses, widths, step, np.arange(len(seeds)))
    on = np.argmin(curves, axis=0)[sel]  # the width that makes each window point
    row = {
        "P": P,
        "d": d,
        "widths": widths,
        "seeds": list(seeds),
        "slope": est,
        "lo": lo,
        "hi": hi,
        "n_window": int(sel.sum()),
        "C_window": [float(grid[sel].min()), float(grid[sel].max())] if sel.any() else None,
        "envelope_min": float(np.min(env[np.isfinite(env)])),  # below window[0]: the run reaches the window's end
        "window_points_by_width": {str(widths[w]): int(np.sum(on == w)) for w in np.unique(on)},
        "n_at_window": {str(level): cutoff(a, K1, level) for level in window},
        # the loss left by n directions, sum_{n < p <= P} a_p^2, falls with log-slope
        # -(2 beta - 1) / (1 - (n/P)^(2 beta - 1)) in n: this factor at the window's low end
        "cutoff_factor_at_low_end": 1.0 / (1.0 - (cutoff(a, K1, window[0]) / P) ** (2.0 * beta - 1.0)),
        "race_s": round(t_race, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    log(
        f"P={P}: slope {est:.3f} [{lo:.3f}, {hi:.3f}], {row['n_window']} window points, "
        f"{row['total_s']:.0f} s (race {row['race_s']:.0f} s)"
    )
    return row


def measured() -> dict:
    """Experiment 10's fitted frontier slope at P = 256 (its first check)."""
    res = json.loads(MEASURED.read_text())
    c = next(c for c in res["checks"] if c["quantity"].startswith("slope of compute frontier, beta="))
    return {
        "P": res["settings"]["P"],
        "slope": c["fitted"],
        "lo": c["lo"],
        "hi": c["hi"],
        "source": str(MEASURED.relative_to(load.REPO)),
    }


def figure(out: dict, path: Path) -> Path:
    """Race-model slope vs P with its interval, experiment 10's measured point, and -1/3."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = out["rows"]
    P = np.array([r["P"] for r in rows], float)
    s = np.array([r["slope"] for r in rows])
    err = np.abs(np.array([[r["lo"] for r in rows], [r["hi"] for r in rows]]) - s)
    ax.errorbar(
        P, s, yerr=err, fmt="o-", color="C0", capsize=3, label=f"race model ({len(rows[0]['seeds'])} seeds, 95% bootstrap)"
    )
    m = out["measured"]
    merr = [[m["slope"] - m["lo"]], [m["hi"] - m["slope"]]]
    ax.errorbar([m["P"] * 1.04], [m["slope"]], yerr=merr, fmt="s", color="C3", capsize=3, label="measured, flow (experiment 10)")
    ax.axhline(out["asymptotic"], color="k", ls="--", lw=1, label="(1 - 2 beta)/(1 + beta) = -1/3: asymptotic, logs dropped")
    ax.set(xscale="log", xlabel="number of directions P", ylabel="compute-frontier slope (loss in [0.02, 0.5])")
    ax.set_xticks(P, [str(int(p)) for p in P])
    ax.set_xticks([], minor=True)
    ax.set_xlim(P.min() / 1.3, P.max() * 1.3)
    ax.set_title("Compute-frontier slope vs P, beta = 0.8, h4, d = 1e4", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    # as sims.output.save_figure writes (whole or not at all), without pyplot's figure manager
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.race_frontier", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--P", type=int, nargs="+", default=list(PS))
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--figure", type=Path, default=load.SIMS / "figures" / "race_frontier.png")
    args = ap.parse_args(argv)
    exp = experiment()
    seeds = list(range(args.seeds))

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    rows = [one_p(exp, P, seeds, log) for P in args.P]
    out = {
        "what": "race-model compute-frontier slope vs P (no simulation of the dynamics); experiment 10's setting and fit",
        "setting": {
            "experiment": EXPERIMENT,
            "beta": exp["teacher"]["beta"],
            "activation": exp["teacher"]["activation"],
            "lr": exp["train"]["lr"],
            "steps": exp["train"]["steps"],
            "log_points": exp["log"]["points"],
            "fit_loss": exp["experiment"]["fit_loss"],
            "n_boot": exp["experiment"]["n_boot"],
            "d": "experiment 10's d, or 2 P (the flow's d >= P + m) where larger",
        },
        "asymptotic": (1 - 2 * exp["teacher"]["beta"]) / (1 + exp["teacher"]["beta"]),
        "measured": measured(),
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    log(f"wrote {args.out} and {figure(out, args.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
