"""The race model on the very seeds of experiments 09 to 11, 14 and 15, beside their stored fits.

    python -m sims.race_rows [--mode cpu|quick] [--out sims/results/race_rows.json]

For each point of the experiment's sweep the race model (:func:`scaling_sgd.analysis.race.
race_from_config`) predicts every replica's emergence steps from its own initial student,
without simulating; the prediction is then put through the experiment's own estimator:

* 09 (and 14, its beta = 0.75 arm at P = 1024, and 15, its width arms at m = 2P): per beta, the slope of the median ``T_p`` against ``p`` over the directions with a
  finite median (:func:`~scaling_sgd.analysis.fit.fit_power_law`), and the loss exponent of
  the seed-mean additive loss over the loss fit window
  (:func:`~scaling_sgd.analysis.fit.loss_exponent`), both on the run's own log grid;
* 10: the compute frontier's slope, read from ``sims/results/race_frontier.json``
  (:mod:`sims.race_frontier`, experiment 6's envelope and fit on the race's losses);
* 11: the slope of the median plateau against the width over the experiment's ``fit_m``
  (the plateau is the additive loss over the directions no neuron wins).

A step the race puts past the run's end is censored (``inf``), as the run records it.  The
estimators, windows and bootstrap seeds are the experiments' own, fixed before any race
number was computed; nothing is fitted to the stored results.  Each row gives the race
value and whether it lies inside the stored 95% interval of the simulated fit: a
discriminating test of the finite-size additive picture (the asymptotic theory rows stay
beside it in VALIDATION.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from scaling_sgd._src.config import replica_grid
from scaling_sgd._src.engines.base import log_grid
from scaling_sgd._src.files import atomic_write_json
from scaling_sgd.analysis.fit import bootstrap, fit_from_draws, fit_power_law, loss_exponent
from scaling_sgd.analysis.race import race_from_config
from sims import load, output
from sims.checks import sizes_label, verdict
from sims.load import Experiment
from sims.reproduce import resolve_names


def _prediction(cfg: dict, within_run: bool = False):
    """``(race prediction, its steps with those past the run censored, log steps,
    per-replica betas)`` of one sweep point.  ``within_run``: leave untimed the pairs that
    cannot escape before the run's end (their steps are censored here either way, and the
    greedy race matches in time order); the cost of ``m P`` timed pairs per seed at P = 1024."""
    pred = race_from_config(cfg, within_run=within_run)
    steps = np.where(pred.steps <= cfg["train"]["steps"], pred.steps, np.inf)
    grid = log_grid(int(cfg["train"]["steps"]), int(cfg["log"]["points"]))
    return pred, steps, grid, np.asarray(replica_grid(cfg)["beta"], np.float64)


def _row(exp: Experiment, quantity: str, race_value: float, how: str) -> dict:
    """The race value beside the experiment's stored check of the same quantity (its
    results file ``sims/results/<tag>.json``), judged as the checks are (:func:`.checks.verdict`)."""
    path = output.RESULT_DIR / f"{exp.tag}.json"
    stored = output.load_json(path)["checks"] if path.is_file() else []
    c = next((c for c in stored if c["quantity"] == quantity), None)
    row = {"experiment": exp.name, "quantity": quantity, "race": race_value, "how": how}
    if c is None:
        return row | {"fitted": float("nan"), "lo": float("nan"), "hi": float("nan"), "inside": None}
    return row | {
        "fitted": c["fitted"],
        "lo": c["lo"],
        "hi": c["hi"],
        "inside": verdict(race_value, c["lo"], c["hi"], fitted=c["fitted"]),
    }


def rows_09(mode: str, name: str = "09_loss_exponent_P256", within_run: bool = False) -> list[dict]:
    exp = load.load_experiment(name, mode)
    nb = int(exp.get("n_boot", 400))
    points = exp.plan().points  # one point, or one point per seed (joined in grid order, as the analysis does)
    each = [_prediction(pt.config, within_run) for pt in points]
    grid = each[0][2]
    T = np.concatenate([e[1] for e in each])
    betas = np.concatenate([e[3] for e in each])
    loss = np.concatenate([e[0].loss(grid) for e in each])
    P = T.shape[1]
    at = sizes_label(P, int(points[0].config["student"]["m"]))
    p = np.arange(1, P + 1)
    out = []
    for j, b in enumerate(sorted(set(betas.tolist()))):
        sel = betas == b
        fit = loss_exponent(grid, T[sel], loss[sel], n_boot=nb, seed=j)
        out.append(
            _row(
                exp,
                f"loss exponent, beta={b:g}, {at}",
                fit["est"],
                f"seed-mean additive loss of {int(sel.sum())} seeds over the 2nd to the P/10-th median race emergence",
            )
        )
        med = np.median(T[sel], axis=0)
        learned = np.isfinite(med)
        fp = fit_power_law(p[learned], T[sel][:, learned], stat="median", n_boot=nb, seed=100 + j)
        out.append(
            _row(
                exp,
                f"slope of T_p vs p, beta={b:g}, {at}",
                fp.slope,
                f"median race emergence step over {int(learned.sum())}/{P} directions",
            )
        )
    return out


def rows_11(mode: str) -> list[dict]:
    exp = load.load_experiment("11_width_floor_P256", mode)
    nb = int(exp.get("n_boot", 400))
    lo_m, hi_m = exp.get("fit_m", [4, 64])
    points = exp.plan().points
    ms = np.array([int(pt.config["student"]["m"]) for pt in points], float)
    plateaus = []
    for pt in points:
        pred = race_from_config(pt.config)
        # the additive loss at the run's end: a^2 of every direction not learned by then
        plateaus.append(pred.loss([pt.config["train"]["steps"]])[:, 0])
    sel = (ms >= lo_m) & (ms <= hi_m)
    R = min(x.size for x in plateaus)
    est, _, _ = bootstrap(lambda ii: fit_from_draws(ms[sel], [np.median(x[ii]) for x, s in zip(plateaus, sel) if s]).slope, R, nb)
    beta = float(points[0].config["teacher"]["beta"])
    P = int(points[0].config["teacher"]["P"])
    return [
        _row(
            exp,
            f"slope of plateau vs m, beta={beta:g}, P={P}",
            est,
            f"median over {R} seeds of the race's plateau (additive loss of the directions unlearned at the run's end), "
            f"widths {ms[sel].astype(int).tolist()}",
        )
    ]


def rows_10(mode: str) -> list[dict]:
    """Experiment 10's frontier slope from ``sims/results/race_frontier.json`` (``python -m
    sims.race_frontier``: the race on the same seeds, widths and fit), when it has the P."""
    path = output.RESULT_DIR / "race_frontier.json"
    exp = load.load_experiment("10_compute_frontier_P256", mode)
    points = exp.plan().points
    (P,) = {int(pt.config["teacher"]["P"]) for pt in points}
    beta = float(points[0].config["teacher"]["beta"])
    rows = [r for r in output.load_json(path)["rows"] if r["P"] == P] if path.is_file() and mode == "cpu" else []
    return [
        _row(
            exp,
            f"slope of compute frontier, beta={beta:g}",
            r["slope"],
            f"lower envelope over widths {r['widths']} of the seed-mean additive loss, fitted where it lies in "
            f"[0.02, 0.5] ({r['n_window']} points; sims/race_frontier.py)",
        )
        for r in rows
    ]


def rows_14(mode: str) -> list[dict]:
    """Experiment 14 is experiment 9's analysis at P = 1024: the same rows."""
    return rows_09(mode, "14_loss_exponent_P1024", within_run=True)


def rows_15(mode: str) -> list[dict]:
    """Experiment 15 is experiment 9's analysis at m = 2P: the same rows."""
    return rows_09(mode, "15_width_arms_P256", within_run=True)


#: experiment number -> its race rows
ROWS = {"09": rows_09, "10": rows_10, "11": rows_11, "14": rows_14, "15": rows_15}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="the race model on the seeds of experiments 09 to 11, 14 and 15, beside their fits")
    ap.add_argument("--mode", default="cpu", choices=("cpu", "quick"))
    ap.add_argument("--out", type=Path, default=None, help="default: sims/results/race_rows[-quick].json")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=sorted(ROWS),
        default=None,
        help="recompute these experiments' rows, keep the others in --out",
    )
    args = ap.parse_args(argv)
    out = args.out or output.RESULT_DIR / f"{load.tagged('race_rows', args.mode)}.json"
    only = args.only or sorted(ROWS)
    kept = output.load_json(out)["rows"] if args.only and out.is_file() else []
    fresh = {}
    for key in only:
        fresh[key] = ROWS[key](args.mode)
        print(f"rows of {key}: {len(fresh[key])}", flush=True)
    # the file keeps the order of ROWS; an experiment's rows are all fresh or all kept
    names = {key: resolve_names([key])[0] for key in ROWS}
    rows = []
    for key in sorted(ROWS):
        rows += fresh[key] if key in fresh else [r for r in kept if r["experiment"] == names[key]]
    atomic_write_json(out, {"mode": args.mode, "rows": rows})
    for r in rows:
        said = {True: "inside", False: "outside", None: "no judgement"}[r["inside"]]
        print(f"{r['quantity']:45s} race {r['race']:+.3f}  fitted {r['fitted']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]  {said}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
