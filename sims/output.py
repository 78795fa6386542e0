"""What an experiment leaves behind: its outcome, ``sims/results/<tag>.json``, its figure
``sims/figures/<tag>.png``, and the rows printed beside theory."""

from __future__ import annotations

import contextvars
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path

from scaling_sgd._src.files import atomic_write_bytes, atomic_write_json
from sims import load
from sims.load import Experiment

FIG_DIR = load.SIMS / "figures"
RESULT_DIR = load.SIMS / "results"
_FIGURES_TO = contextvars.ContextVar("figures_to", default=None)


def figures_to(folder: Path):
    """Inside this block figures are drawn into ``folder`` instead of ``sims/figures``."""
    return load.scoped(_FIGURES_TO, Path(folder))


@dataclasses.dataclass
class Outcome:
    """What an experiment returns: its validation rows, figure, notes derived from its
    numbers, the runs behind them (one per sweep point) and extra numbers for the record."""

    checks: list
    figure: Path | None
    notes: list
    runs: list
    extra: dict = dataclasses.field(default_factory=dict)


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


def write_result(exp: Experiment, out: Outcome, wall_s: float, records: list[str] = ()) -> Path:
    """Write ``sims/results/<tag>.json`` (small: what the report needs).  ``records``: the
    per-seed record files (``sims/data/``) the outcome can be refitted from."""
    import jax

    obj = {
        "name": exp.name,
        "mode": exp.mode,
        "title": exp.get("title", exp.name),
        "prediction": exp.get("prediction", ""),
        "checks": out.checks,
        "figure": str(out.figure.relative_to(load.SIMS)) if out.figure is not None else None,
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
        "records": sorted(records),
    }
    RESULT_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULT_DIR / f"{exp.tag}.json"
    atomic_write_json(path, obj)
    return path


def load_json(path: Path) -> dict:
    with Path(path).open() as f:
        return json.load(f)


def figure_path(exp: Experiment) -> Path:
    folder = _FIGURES_TO.get() or FIG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{exp.tag}.png"


def save_figure(fig, exp: Experiment) -> Path:
    """Write ``fig`` to ``sims/figures/<tag>.png`` (whole or not at all: an interrupted
    write leaves the figure that was there) and release it."""
    import matplotlib.pyplot as plt

    path = figure_path(exp)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
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
