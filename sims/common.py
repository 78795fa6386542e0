"""The plumbing shared by the experiments: experiment configs, cached runs, fits, checks.

An experiment file ``sims/NN_name.toml`` holds ordinary scaling-sgd tables (the base
config, validated by :func:`scaling_sgd.resolve_config`) and four tables of its own:

* ``[experiment]``: title and analysis settings (fit windows, ...), free-form;
* ``[sweep]``: a grid, ``key = [values]`` with ``key`` a sweep name (``d``, ``m``, ``P``,
  ``lr``, ``engine``, ``activation``, ...) or ``table.key``; one run per grid point;
* ``[gpu]`` and ``[quick]``: ``"table.key" = value`` overrides for a larger (GPU) and a
  tiny (smoke-test) setting; ``"sweep.x"`` and ``"experiment.x"`` override those tables.

Runs land in ``results/sims/<name>[-gpu|-quick]/<point>/`` in the SPEC results format and
are reused when a directory with the same config hash is already complete, so an
interrupted ``reproduce all`` resumes where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import tomllib

from scaling_sgd._src import config as cfgmod
from scaling_sgd._src.results import atomic_write_json, is_run_dir, read_run

REPO = Path(__file__).resolve().parents[1]
SIMS = REPO / "sims"
FIG_DIR = SIMS / "figures"
RESULT_DIR = SIMS / "results"
RUN_ROOT = REPO / "results" / "sims"
MODES = ("cpu", "gpu", "quick")

# Sweep names -> config keys (the names the sweep runner uses; ``table.key`` also works).
SWEEP_KEYS = {
    "d": "data.d",
    "P": "teacher.P",
    "m": "student.m",
    "beta": "teacher.beta",
    "a": "teacher.a",
    "activation": "teacher.activation",
    "lr": "train.lr",
    "seed": "train.seed",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "engine": "train.engine",
    "init_scale": "student.init_scale",
    "dtype": "train.dtype",
}
_OWN_TABLES = ("experiment", "sweep", "gpu", "quick")


class ExperimentError(ValueError):
    """A bad experiment file: one line naming the key and what is accepted."""


def experiment_files() -> dict[str, Path]:
    """``{name: path}`` of every experiment config ``sims/NN_*.toml`` (sorted)."""
    return {p.stem: p for p in sorted(SIMS.glob("[0-9][0-9]_*.toml"))}


def _set(raw: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ExperimentError(f"{dotted}: override keys must be 'table.key'")
    raw.setdefault(parts[0], {})[parts[1]] = copy.deepcopy(value)


def _sweep_key(name: str) -> str:
    key = SWEEP_KEYS.get(name, name)
    if "." not in key:
        raise ExperimentError(f"sweep.{name}: unknown sweep key; accepted: {', '.join(SWEEP_KEYS)} or table.key")
    return key


@dataclasses.dataclass
class Experiment:
    """A loaded experiment.

    Attributes:
        name: file stem, e.g. ``"02_emergence_vs_p"``.  mode: ``"cpu"``, ``"gpu"`` or
        ``"quick"``.  base: the scaling-sgd tables.  grid: ``{config key: [values]}``.
        params: the ``[experiment]`` table.
    """

    name: str
    mode: str
    base: dict
    grid: dict
    params: dict

    @property
    def tag(self) -> str:
        return self.name if self.mode == "cpu" else f"{self.name}-{self.mode}"

    @property
    def run_root(self) -> Path:
        return RUN_ROOT / self.tag

    def points(self) -> list[tuple[str, dict, dict]]:
        """Grid points as ``(label, raw config, {key: value})``.

        The grid is the product of the ``[sweep]`` lists; the special key ``zip`` is a
        list of tables whose keys move together (e.g. ``{d = 64, steps = 2_000_000}``).
        """
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            raw = copy.deepcopy(self.base)
            parts, point = [], {}
            for k, v in zip(keys, values):
                items = [(_sweep_key(kk), vv) for kk, vv in v.items()] if k == "zip" else [(k, v)]
                for kk, vv in items:
                    _set(raw, kk, vv)
                    point[kk] = vv
                    parts.append(f"{kk.split('.')[1]}={_label(vv)}")
            out.append(("_".join(parts) or "run", raw, point))
        return out

    def get(self, key: str, default=None):
        return self.params.get(key, default)


def _label(v) -> str:
    if isinstance(v, list):  # a replica list: first-last and count, e.g. seed=0-15n16
        return f"{_label(v[0])}-{_label(v[-1])}n{len(v)}" if v else "none"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "+".join(f"h{k}x{c:g}" for k, c in v.items())
    return str(v)


def load_experiment(name: str, mode: str = "cpu") -> Experiment:
    """Read ``sims/<name>.toml`` and apply the ``[gpu]`` or ``[quick]`` overrides."""
    files = experiment_files()
    if name not in files:
        raise ExperimentError(f"experiment: unknown name {name!r}; accepted: {', '.join(files)}, all")
    if mode not in MODES:
        raise ExperimentError(f"mode: got {mode!r}; accepted: {', '.join(MODES)}")
    with files[name].open("rb") as f:
        raw = tomllib.load(f)
    params = dict(raw.get("experiment", {}))
    grid = {(k if k == "zip" else _sweep_key(k)): (v if isinstance(v, list) else [v]) for k, v in raw.get("sweep", {}).items()}
    base = {k: v for k, v in raw.items() if k not in _OWN_TABLES}
    if mode != "cpu":
        for dotted, value in raw.get(mode, {}).items():
            table, _, key = dotted.partition(".")
            if table == "experiment":
                params[key] = value
            elif table == "sweep":
                grid[key if key == "zip" else _sweep_key(key)] = value if isinstance(value, list) else [value]
            else:
                _set(base, dotted, value)
    exp = Experiment(name=name, mode=mode, base=base, grid=grid, params=params)
    for label, point, _ in exp.points():  # validate every point before any compute
        try:
            cfgmod.resolve(point)
        except cfgmod.ConfigError as e:
            raise ExperimentError(f"{name} [{label}] {e}") from None
    return exp


def run_point(exp: Experiment, label: str, raw: dict, force: bool = False) -> tuple[dict, dict, dict]:
    """Run one grid point (or reuse a complete run with the same config hash).

    Returns ``(metrics, config_json, resolved config)``.
    """
    from scaling_sgd._src.runner import run

    cfg = cfgmod.resolve(raw)
    out = exp.run_root / label
    if not force and is_run_dir(out):
        meta, metrics = read_run(out)
        if meta.get("hash") == cfgmod.config_hash(cfg):
            print(f"  [{exp.tag}/{label}] reusing {out} ({meta['wall_time_s']:.1f} s when run)", flush=True)
            return metrics, meta, cfg
    t0 = time.perf_counter()
    metrics, meta = run(cfg, out, label=f"  [{exp.tag}/{label}] ")
    print(
        f"  [{exp.tag}/{label}] {meta['engine']}: {time.perf_counter() - t0:.1f} s"
        + (f", {meta['samples_per_s']:,.0f} samples/s" if meta.get("samples_per_s") else ""),
        flush=True,
    )
    meta, metrics = read_run(out)
    return metrics, meta, cfg


def run_all(exp: Experiment, force: bool = False) -> list[dict]:
    """Run every grid point; returns ``[{label, values, metrics, meta, cfg}]``."""
    out = []
    for label, raw, point in exp.points():
        metrics, meta, cfg = run_point(exp, label, raw, force)
        out.append({"label": label, "values": point, "metrics": metrics, "meta": meta, "cfg": cfg})
    return out


# -- statistics: the fits are the analysis package's; only the generic seed bootstrap
# for composite statistics (moving windows, envelopes, score ratios) lives here ----------
def power_law_fit(x, y) -> tuple[float, float]:
    """Least-squares fit of ``log y = s log x + c`` over finite positive points
    (:func:`analysis.fit.fit_from_draws`).  Returns ``(s, c)``; ``nan`` when fewer than
    two usable points."""
    from analysis.fit import fit_from_draws

    f = fit_from_draws(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return float(f.slope), float(f.intercept)


def fit_over_seeds(x, y_reps, n_boot: int = 400, stat: str = "median", seed: int = 0) -> tuple[float, float, float]:
    """Slope of ``stat_seeds y`` vs ``x`` with its bootstrap interval over seeds
    (:func:`analysis.fit.fit_power_law`; the median handles censored ``inf``).
    Returns ``(slope, lo, hi)``."""
    from analysis.fit import fit_power_law

    f = fit_power_law(np.asarray(x, np.float64), np.asarray(y_reps, np.float64), stat=stat, n_boot=n_boot, seed=seed)
    return float(f.slope), float(f.ci[0]), float(f.ci[1])


def bootstrap(stat, n_units: int, n_boot: int = 500, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap over independent units (seeds) of a composite statistic.

    Args:
        stat: ``stat(idx) -> float`` for an index array of resampled units (with
            repetition); ``stat(arange(n))`` is the point estimate.
        n_units: number of units.
    Returns:
        ``(estimate, lo, hi)``; resamples whose statistic is not finite are dropped.
    """
    rng = np.random.default_rng(seed)
    est = float(stat(np.arange(n_units)))
    vals = np.array([stat(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size < n_boot // 2:
        return est, math.nan, math.nan
    q = (1.0 - level) / 2.0
    return est, float(np.quantile(vals, q)), float(np.quantile(vals, 1.0 - q))


def emergence_score(x, y) -> float:
    """Emergence score (:func:`analysis.emergence.emergence_score`, Schaeffer et al. eq. 1)
    of the curve ``y`` ordered by ``x``: large when the change happens in a few jumps,
    ``~ n`` for a steady ramp over ``n`` points, ``inf`` for a pure step."""
    from analysis.emergence import emergence_score as score

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)[np.argsort(x)]
    return float(score(y)) if y.size >= 3 else math.nan


def median_curve_time(step, curves):
    """Pointwise median over replicas of ``curves`` ``(R, T)``; returns ``(T,)``."""
    return np.median(np.asarray(curves), axis=0)


# -- checks and results ------------------------------------------------------------------
def verdict(predicted: float, lo: float, hi: float, tol: float = 0.0) -> bool | None:
    """Does the prediction agree with the fit?  ``True`` when ``predicted`` lies in the
    interval ``[lo, hi]`` widened by ``tol`` on each side, ``None`` when the interval is
    undefined (too few finite bootstrap resamples)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or not math.isfinite(predicted):
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
) -> dict:
    """One row of the validation table.

    ``why`` is the short reason shown in the table when the row does not agree (the
    notes hold the evidence).  ``above=True`` makes the prediction one-sided
    (``quantity > predicted``: agrees when the whole interval lies above it).
    """
    agrees = verdict(predicted, lo, hi, tol)
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
    }


def print_checks(checks: list[dict], stream=None) -> None:
    """Fitted values beside theory, one line each."""
    import sys

    stream = stream or sys.stdout
    w = max([len(c["quantity"]) for c in checks] + [8])
    print(f"  {'quantity':<{w}}  {'theory':>9}  {'fitted':>9}  {'95% interval':>21}  agrees", file=stream)
    for c in checks:
        ag = {True: "yes", False: "NO", None: "n/a"}[c["agrees"]]
        print(
            f"  {c['quantity']:<{w}}  {c['predicted']:9.3f}  {c['fitted']:9.3f}  [{c['lo']:9.3f}, {c['hi']:9.3f}]  {ag}",
            file=stream,
        )


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


def write_result(
    exp: Experiment, checks: list[dict], figure: Path | None, wall_s: float, runs: list[dict], notes: list[str], extra=None
):
    """Write ``sims/results/<tag>.json`` (small: what the report needs)."""
    import jax

    engines = sorted({r["cfg"]["train"]["engine"] for r in runs})
    obj = {
        "name": exp.name,
        "mode": exp.mode,
        "title": exp.get("title", exp.name),
        "prediction": exp.get("prediction", ""),
        "checks": checks,
        "figure": str(figure.relative_to(SIMS)) if figure is not None else None,
        "notes": notes,
        "wall_time_s": wall_s,
        "compute_s": float(sum(r["meta"].get("wall_time_s", 0.0) for r in runs)),
        "engines": engines,
        "grid": {k: v for k, v in exp.grid.items()},
        "settings": settings_summary(runs[0]["cfg"]) if runs else {},
        "runs": len(runs),
        "backend": jax.default_backend(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "extra": extra or {},
    }
    RESULT_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULT_DIR / f"{exp.tag}.json"
    atomic_write_json(path, obj)
    return path


def figure_path(exp: Experiment) -> Path:
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    return FIG_DIR / f"{exp.tag}.png"


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def load_json(path: Path) -> dict:
    with Path(path).open() as f:
        return json.load(f)
