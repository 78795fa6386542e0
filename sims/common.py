"""The plumbing shared by the experiments: experiment files, their sweeps, checks, results.

An experiment is a config ``sims/NN_name.toml`` and a module
``sims/experiments/NN_name.py``.  The config holds ordinary scaling-sgd tables, its
``[sweep]`` table included (the package's one sweep dialect, docs/sweeps.md: aliases,
``zip`` axes, and ``lr``/``seed``/``beta`` lists folded into vmapped replicas of one
point), and three tables of its own:

* ``[experiment]``: title, prediction and analysis settings (fit windows, ...), free-form;
* ``[gpu]`` and ``[quick]``: ``"table.key" = value`` overrides for a larger (GPU) and a
  tiny (smoke-test) setting, applied with :func:`scaling_sgd._src.config.set_key` before
  the sweep is planned (``"sweep.zip"`` replaces an axis, ``"experiment.x"`` a setting).

The runs of an experiment are a sweep directory ``results/sims/<name>[-gpu|-quick]/``
(:func:`scaling_sgd._src.sweep.plan` and :func:`~scaling_sgd._src.sweep.run_sweep`): a point
whose config hash is already complete there is reused, so an interrupted
``reproduce all`` resumes where it stopped.  Because a point folds ``beta`` and ``lr``
into its replicas, :meth:`Run.groups` splits it into groups of one setting
(:func:`scaling_sgd.analysis.core.replica_groups`, as the sweep analysis does).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from scaling_sgd import load_run
from scaling_sgd._src import config as cfgmod
from scaling_sgd._src import sweep
from scaling_sgd._src.errors import ConfigError
from scaling_sgd._src.results import atomic_write_json, is_run_dir
from scaling_sgd.analysis.core import replica_groups, select_replicas
from scaling_sgd.analysis.emergence import emergence_score, emergence_times, loss_fit_window
from scaling_sgd.analysis.fit import MIN_SEEDS  # noqa: F401 - a row needs this many seeds to discriminate

REPO = Path(__file__).resolve().parents[1]
SIMS = REPO / "sims"
FIG_DIR = SIMS / "figures"
RESULT_DIR = SIMS / "results"
RUN_ROOT = REPO / "results" / "sims"
MODES = ("cpu", "gpu", "quick")
_OWN_TABLES = ("experiment", "gpu", "quick")


class ExperimentError(ValueError):
    """A bad experiment name or file: one line naming the key and what is accepted."""


def experiment_files() -> dict[str, Path]:
    """``{name: path}`` of every experiment config ``sims/NN_*.toml`` (sorted)."""
    return {p.stem: p for p in sorted(SIMS.glob("[0-9][0-9]_*.toml"))}


@dataclasses.dataclass
class Experiment:
    """A loaded experiment.

    Attributes:
        name: file stem, e.g. ``"02_emergence_vs_p"``.  mode: ``"cpu"``, ``"gpu"`` or
        ``"quick"``.  raw: the scaling-sgd tables (``[sweep]`` included) with the mode's
        overrides applied.  params: the ``[experiment]`` table.
    """

    name: str
    mode: str
    raw: dict
    params: dict

    @property
    def tag(self) -> str:
        return self.name if self.mode == "cpu" else f"{self.name}-{self.mode}"

    @property
    def run_root(self) -> Path:
        return RUN_ROOT / self.tag

    @property
    def grid(self) -> dict:
        return self.plan().grid

    def plan(self, raw: dict | None = None) -> sweep.Plan:
        """The sweep plan of ``raw`` (default: the experiment's own tables)."""
        return sweep.plan(self.raw if raw is None else raw)

    def get(self, key: str, default=None):
        return self.params.get(key, default)


def load_experiment(name: str, mode: str = "cpu") -> Experiment:
    """Read ``sims/<name>.toml``, apply the ``[gpu]`` or ``[quick]`` overrides and resolve
    every sweep point (bad input is an :class:`ExperimentError` before any compute)."""
    files = experiment_files()
    if name not in files:
        raise ExperimentError(f"experiment: unknown name {name!r}; accepted: {', '.join(files)}, all")
    if mode not in MODES:
        raise ExperimentError(f"mode: got {mode!r}; accepted: {', '.join(MODES)}")
    with files[name].open("rb") as f:
        raw = tomllib.load(f)
    where = f"sims/{name}.toml" + ("" if mode == "cpu" else f" [{mode}]")
    try:
        if mode != "cpu":
            for dotted, value in raw.get(mode, {}).items():
                cfgmod.set_key(raw, dotted, value, where=where)
        params = dict(raw.get("experiment", {}))
        exp = Experiment(name, mode, {k: v for k, v in raw.items() if k not in _OWN_TABLES}, params)
        exp.plan()
    except ConfigError as e:
        raise ExperimentError(f"{e} (in {where})") from None
    return exp


# -- runs ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """The results of one sweep point, or of one group of its replicas.

    Attributes:
        settings: swept key (``table.key``) -> value; in a group, ``teacher.beta`` and
            ``train.lr`` are the group's own scalars.
        cfg: the point's resolved config.  meta: its ``config.json`` fields other than
            the config (:attr:`scaling_sgd.Result.meta`).
        metrics: the ``metrics.npz`` arrays (a group: its replicas only).
    """

    settings: dict
    cfg: dict
    meta: dict
    metrics: dict

    def groups(self) -> list[Run]:
        """One :class:`Run` per ``(beta, lr)`` of the replicas, seeds as replicas."""
        out = []
        for (b, lr), idx in replica_groups(self.cfg, self.metrics):
            settings = {**self.settings, "teacher.beta": b, "train.lr": lr}
            out.append(Run(settings, self.cfg, self.meta, select_replicas(self.metrics, idx)))
        return out

    def single(self) -> Run:
        """This run, checked to hold one ``(beta, lr)`` group (its replicas differ only in
        ``seed``): for the experiments whose statistics pool every replica of a point."""
        n = len(replica_groups(self.cfg, self.metrics))
        if n != 1:
            raise ValueError(f"a point of {self.settings} holds {n} (beta, lr) groups; this experiment needs one per point")
        return self

    def common(self, name: str) -> float:
        """The value of the replicated setting ``name`` (``beta``, ``lr``) shared by every
        replica; ``ValueError`` if they differ (split with :meth:`groups` first)."""
        v = np.asarray(self.metrics[name], np.float64)
        if not np.all(v == v[0]):
            raise ValueError(f"the replicas have several values of {name}: split them with Run.groups()")
        return float(v[0])

    @property
    def ok(self) -> np.ndarray:
        """``(R,)`` bool: the replicas that did not diverge."""
        return ~np.asarray(self.metrics["diverged"], bool)

    @property
    def times(self) -> np.ndarray:
        """``(R, P)`` emergence steps with the config's observable and threshold."""
        an = self.cfg["analysis"]
        return emergence_times(self.metrics["step"], self.metrics[an["observable"]], an["threshold"])[0]

    @property
    def step(self) -> np.ndarray:
        return np.asarray(self.metrics["step"], np.float64)


def run_sweep(exp: Experiment, raw: dict | None = None, part: str | None = None, force: bool = False) -> list[Run]:
    """Compute the points of ``exp``'s sweep that are not done (all with ``force``) and
    return every point's results in grid order.

    Args:
        raw: another set of tables to plan (default: the experiment's own).
        part: a sub-directory of the experiment's run directory for such a second sweep.
    Raises:
        RuntimeError: when a point failed (its ``error.json`` says why).
    """
    pl = exp.plan(raw)
    out = exp.run_root if part is None else exp.run_root / part
    t0 = time.perf_counter()
    counts = sweep.run_sweep(pl, out, force=force, stream=sys.stdout)
    print(
        f"  [{exp.tag}{'/' + part if part else ''}] {counts['computed']} point(s) computed, "
        f"{counts['already_done']} reused, in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    failed = [p.dir for p in pl.points if not is_run_dir(out / p.dir)]
    if failed:
        raise RuntimeError(f"{exp.tag}: {len(failed)} point(s) failed, see {out}/<point>/error.json: {', '.join(failed)}")
    runs = []
    for p in pl.points:
        res = load_run(out / p.dir)
        runs.append(Run(dict(p.settings), p.config, res.meta, res.metrics))
    return runs


# -- statistics shared by several experiments ---------------------------------------------
def bootstrap(stat, n_units: int, n_boot: int = 500, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap over independent units (seeds) of a composite statistic.

    Args:
        stat: ``stat(idx) -> float`` for an index array of resampled units (with
            repetition); ``stat(arange(n))`` is the point estimate.
        n_units: number of units.
    Returns:
        ``(estimate, lo, hi)``; resamples whose statistic is not finite are dropped, and
        the interval is ``nan`` when fewer than half of them are left.
    """
    rng = np.random.default_rng(seed)
    est = float(stat(np.arange(n_units)))
    vals = np.array([stat(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size < n_boot // 2:
        return est, math.nan, math.nan
    q = (1.0 - level) / 2.0
    return est, float(np.quantile(vals, q)), float(np.quantile(vals, 1.0 - q))


def window_slope(x, y, lo: float, hi: float, min_points: int = 4) -> float:
    """Log-log slope of ``y`` vs ``x`` over ``lo <= x <= hi`` (``x > 0``)
    (:func:`scaling_sgd.analysis.fit.fit_from_draws`); ``nan`` with fewer than
    ``min_points`` points in the window."""
    from scaling_sgd.analysis.fit import fit_from_draws

    x = np.asarray(x, np.float64)
    if np.sum((x >= lo) & (x <= hi) & (x > 0)) < min_points:
        return math.nan
    return fit_from_draws(x, y, window=(lo, hi)).slope


def emergence_scores(step, skill, loss, T, pad: float):
    """Emergence scores (:func:`scaling_sgd.analysis.emergence.emergence_score`) of one
    replica on its log-step grid inside the learning window ``[min T / pad, max T * pad]``
    (the plateau before any learning would make any curve look abrupt).

    Returns ``(per-direction skill scores (P,), loss score)``; the loss is scored as the
    gain ``-loss``, so that both are positive for learning.  ``nan`` without a window.
    """
    fin = T[np.isfinite(T)]
    sel = (step >= fin.min() / pad) & (step <= fin.max() * pad) if fin.size else np.zeros(step.shape, bool)
    if sel.sum() < 3:
        return np.full(skill.shape[-1], math.nan), math.nan
    return emergence_score(skill[sel], axis=0), float(emergence_score(-loss[sel]))


def score_ratios(run: Run, pad: float):
    """Per non-diverged replica: the median skill score over its learned directions and
    its loss score (:func:`emergence_scores`).  Returns ``(skill (R,), loss (R,))``."""
    T = run.times
    sk, sl = [], []
    for i in np.flatnonzero(run.ok):
        s_skill, s_loss = emergence_scores(run.step, run.metrics["skill"][i], run.metrics["loss"][i], T[i], pad)
        learned = np.isfinite(T[i])
        sk.append(np.nanmedian(s_skill[learned]) if learned.any() else math.nan)
        sl.append(s_loss)
    return np.array(sk, np.float64), np.array(sl, np.float64)


def trend(values) -> str:
    """How a sequence changes along its order: ``"rises"``, ``"falls"`` (strictly
    monotone), ``"does not change"`` or ``"is not monotone"`` (non-finite entries ignored)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return "is undetermined"
    dv = np.diff(v)
    if np.all(dv > 0):
        return "rises"
    if np.all(dv < 0):
        return "falls"
    if np.all(dv == 0):
        return "does not change"
    return "is not monotone"


def fmt_steps(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:,.0f}"


# -- checks and results ---------------------------------------------------------------------
def verdict(predicted: float, lo: float, hi: float, tol: float = 0.0, fitted: float | None = None) -> bool | None:
    """Does the prediction agree with the fit?  ``True`` when ``predicted`` lies in the
    interval ``[lo, hi]`` widened by ``tol`` on each side; ``None`` when there is nothing
    to judge: no prediction, an undefined interval (too few finite bootstrap resamples),
    or, when ``fitted`` is given, no fitted value (a finite interval around a fit that
    failed is not a result)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or not math.isfinite(predicted):
        return None
    if fitted is not None and not math.isfinite(fitted):
        return None
    return bool(lo - tol <= predicted <= hi + tol)


def check(
    quantity: str,
    predicted: float,
    fitted: float,
    lo: float,
    hi: float,
    note: str = "",
    tol: float = 0.0,
    why: str = "",
    above: bool = False,
    discriminates: bool = True,
    scope: str = "",
) -> dict:
    """One row of the validation table.

    ``why`` is the short reason shown in the table when the row does not agree (the
    notes hold the evidence).  ``above=True`` makes the prediction one-sided
    (``quantity > predicted``: agrees when the whole interval lies above it).
    ``discriminates=False`` marks a row whose test cannot tell the prediction from its
    alternatives (too few directions, a two-point fit, too few seeds): it is shown, but
    not counted as support; ``scope`` says why in a few words (``"finite-P illustration"``,
    ``"beyond the theorem (k = 3, odd)"``, ...).
    """
    agrees = verdict(predicted, lo, hi, tol, fitted=fitted)
    if above and agrees is not None:
        agrees = bool(lo > predicted)
    return {
        "quantity": quantity,
        "predicted": float(predicted),
        "above": bool(above),
        "fitted": float(fitted),
        "lo": float(lo),
        "hi": float(hi),
        "tol": float(tol),
        "agrees": agrees,
        "note": note,
        "why": why,
        "discriminates": bool(discriminates),
        "scope": scope,
    }


# -- what a row can test ---------------------------------------------------------------------
# The few reasons a row cannot discriminate, as the ``scope`` text of :func:`check`
# (docs/model.md §3, "Where the formulas hold").
BEYOND_K3 = "beyond the theorem: k = 3, an odd activation (the theorem assumes an even one with k > 2)"
BEYOND_K2 = "beyond the theorem: k = 2 (the theorem assumes an even activation with k > 2)"


def beyond_theorem(k: int | None) -> str:
    """The scope text of a row whose activation lies outside the theorem's assumption (an
    even activation with information exponent ``k > 2``); ``""`` inside it."""
    if k == 2:
        return BEYOND_K2
    if k == 3:
        return BEYOND_K3
    if k is None or k < 2:
        return f"beyond the theorem: k = {k} (the theorem assumes an even activation with k > 2)"
    if k % 2 == 1:
        return f"beyond the theorem: k = {k}, an odd activation (the theorem assumes an even one with k > 2)"
    return ""


def finite_p(P: int, what: str = "the loss exponent") -> str:
    """Scope text of a row measured at ``P`` directions, too few for ``what`` to tell beta
    apart (``P < LOSS_EXPONENT_MIN_P``, docs/model.md §3); ``""`` at larger P."""
    from scaling_sgd.analysis.output import LOSS_EXPONENT_MIN_P

    if P >= LOSS_EXPONENT_MIN_P:
        return ""
    return f"P = {P}: finite-P illustration ({what} tells beta apart only for P >= {LOSS_EXPONENT_MIN_P})"


def few(seeds: int | None = None, points: int | None = None, fit=None) -> list[str]:
    """Why an interval is too coarse to discriminate: fewer than ``MIN_SEEDS`` seeds, or a
    fit through two points (:func:`scaling_sgd.analysis.fit.caveats` for a
    :class:`~scaling_sgd.analysis.fit.PowerLawFit`, else from ``seeds`` and ``points``)."""
    from scaling_sgd.analysis.fit import caveats

    out = list(caveats(fit, seeds)) if fit is not None else []
    if fit is None and seeds is not None and seeds < MIN_SEEDS:
        out.append(f"{seeds} seeds < {MIN_SEEDS}")
    if points is not None and points <= 2 and "2 points" not in out:
        out.append(f"{points}-point fit")
    return out


def scope(*reasons) -> dict:
    """``discriminates`` and ``scope`` for :func:`check` from the reasons a row cannot
    discriminate (strings or lists of strings; empty ones ignored): ``check(..., **scope(...))``."""
    flat = []
    for r in reasons:
        flat += [x for x in (r if isinstance(r, (list, tuple)) else [r]) if x]
    return {"discriminates": not flat, "scope": "; ".join(dict.fromkeys(flat))}


# A loss row discriminates beta only where the additive model's exponent at the simulated
# P (over the loss fit window) lies this close to the asymptote (docs/model.md §3: ~0.05 at
# P >= 256); experiments 09 and 13 use it.
ASYMPTOTE_TOL = 0.1


def additive_near_asymptote(beta: float, P: int, sigma: float, asymptote: float) -> tuple[float, bool]:
    """The additive model's loss exponent at ``P`` over the loss fit window (2nd to
    ``max(P // 10, 4)``-th median emergence, log scatter ``sigma``), and whether it lies
    within :data:`ASYMPTOTE_TOL` of ``asymptote``: whether a loss row at this P can tell
    beta apart."""
    from scaling_sgd.analysis.theory import additive_loss_exponent

    additive = additive_loss_exponent(beta, P, 1.0, sigma, n_seeds=200)
    return additive, math.isfinite(additive) and abs(additive - asymptote) <= ASYMPTOTE_TOL


def theory_value(name: str, beta: float, k: int | None = None) -> tuple[float, str]:
    """The theory exponent ``name`` (:func:`scaling_sgd.analysis.theory.exponent`) for a
    row: ``(value, "")``, or ``(nan, reason)`` where the paper predicts no power law
    (``beta <= 1/2``): such a row is shown with its reason, never judged."""
    from scaling_sgd.analysis.theory import exponent

    value, why = exponent(name, beta, k)
    return (math.nan, why) if value is None else (float(value), "")


def print_checks(checks: list[dict], stream=None) -> None:
    """Fitted values beside theory, one line each."""
    stream = stream or sys.stdout
    w = max([len(c["quantity"]) for c in checks] + [8])
    print(f"  {'quantity':<{w}}  {'theory':>9}  {'fitted':>9}  {'95% interval':>21}  agrees", file=stream)
    for c in checks:
        ag = {True: "yes", False: "NO", None: "n/a"}[c["agrees"]]
        th = f"{c['predicted']:9.3f}" if math.isfinite(c["predicted"]) else f"{'none':>9}"
        print(
            f"  {c['quantity']:<{w}}  {th}  {c['fitted']:9.3f}  [{c['lo']:9.3f}, {c['hi']:9.3f}]  {ag}"
            + ("" if c.get("discriminates", True) else f"  (cannot discriminate: {c.get('scope', '')})"),
            file=stream,
        )


@dataclasses.dataclass
class Outcome:
    """What an experiment returns: its validation rows, figure, notes derived from its
    numbers, the runs behind them (one per sweep point) and extra numbers for the record."""

    checks: list
    figure: Path | None
    notes: list
    runs: list
    extra: dict = dataclasses.field(default_factory=dict)


def settings_summary(cfg: dict) -> dict:
    """The settings worth printing in a report: dimensions, activation, lr, steps, seeds."""
    t, s, tr = cfg["teacher"], cfg["student"], cfg["train"]
    seeds = tr["seed"] if isinstance(tr["seed"], list) else [tr["seed"]]
    return {
        "engine": tr["engine"],
        "d": cfg["data"]["d"],
        "P": t["P"],
        "m": s["m"],
        "beta": t["beta"],
        "activation": t["activation"],
        "lr": tr["lr"],
        "steps": tr["steps"],
        "batch_size": tr["batch_size"],
        "seeds": len(seeds),
        "dtype": tr["dtype"],
    }


def write_result(exp: Experiment, out: Outcome, wall_s: float) -> Path:
    """Write ``sims/results/<tag>.json`` (small: what the report needs)."""
    import jax

    obj = {
        "name": exp.name,
        "mode": exp.mode,
        "title": exp.get("title", exp.name),
        "prediction": exp.get("prediction", ""),
        "checks": out.checks,
        "figure": str(out.figure.relative_to(SIMS)) if out.figure is not None else None,
        "notes": out.notes,
        "wall_time_s": wall_s,
        "compute_s": float(sum(r.meta.get("wall_time_s", 0.0) for r in out.runs)),
        "engines": sorted({r.cfg["train"]["engine"] for r in out.runs}),
        "grid": exp.grid,
        "settings": settings_summary(out.runs[0].cfg) if out.runs else {},
        "runs": len(out.runs),
        "backend": jax.default_backend(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "extra": out.extra,
    }
    RESULT_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULT_DIR / f"{exp.tag}.json"
    atomic_write_json(path, obj)
    return path


def figure_path(exp: Experiment) -> Path:
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    return FIG_DIR / f"{exp.tag}.png"


def save_figure(fig, exp: Experiment) -> Path:
    """Write ``fig`` to ``sims/figures/<tag>.png`` and release it."""
    import matplotlib.pyplot as plt

    path = figure_path(exp)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_skills(ax, step, skill, title: str = "") -> None:
    """One replica's ``skill`` ``(T, P)`` against the step (log axis), coloured by ``p``."""
    import matplotlib.pyplot as plt

    P = skill.shape[-1]
    cmap = plt.get_cmap("viridis")
    sel = step > 0
    for p in range(P):
        ax.plot(step[sel], skill[sel, p], color=cmap(p / max(P - 1, 1)), lw=1.2)
    ax.set(xscale="log", ylabel="skill$_p$", title=title)


def load_json(path: Path) -> dict:
    with Path(path).open() as f:
        return json.load(f)


# -- the loss exponent of the large-P experiments (09, 13) ------------------------------------
def loss_exponent(g: Run, x=None, n_boot: int = 400, seed: int = 0, lo_rank: int = 2, hi_rank: int | None = None):
    """Log-log slope of the seed-mean loss against ``x`` (default: the step) over the loss
    fit window (:func:`scaling_sgd.analysis.emergence.loss_fit_window`, the ``lo_rank``-th to
    the ``hi_rank``-th median emergence), with a bootstrap over the non-diverged seeds that
    recomputes the window from each resample.

    Returns ``dict(est, lo, hi, wlo, whi, seeds)`` (window in units of ``x``).
    """
    idx = np.flatnonzero(g.ok)
    T = g.times
    x = g.step if x is None else np.asarray(x, np.float64)
    step = g.step

    def to_x(s):  # a step on the log grid -> x, interpolated in log-log
        pos = step > 0
        return float(np.exp(np.interp(np.log(s), np.log(step[pos]), np.log(x[pos]))))

    def fit(ii):
        sub = idx[ii]
        lo, hi = loss_fit_window(np.median(T[sub], axis=0), lo_rank, hi_rank)
        if not math.isfinite(lo):
            return math.nan
        return window_slope(x, np.mean(g.metrics["loss"][sub], axis=0), to_x(lo), to_x(hi))

    est, lo, hi = bootstrap(fit, idx.size, n_boot, seed=seed)
    wlo, whi = loss_fit_window(np.median(T[idx], axis=0), lo_rank, hi_rank)
    if math.isfinite(wlo):
        wlo, whi = to_x(wlo), to_x(whi)
    return {"est": est, "lo": lo, "hi": hi, "wlo": wlo, "whi": whi, "seeds": int(idx.size)}
