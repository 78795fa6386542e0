"""``scaling-sgd analyze RUN_DIR``: the analysis of one run written beside its results.

:func:`analyze_run` reads a run directory, analyses it (:mod:`.core`), and writes
``emergence.json``, ``summary.json`` (:mod:`.output`) and the figures (:mod:`.figures`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaling_sgd import load_run
from scaling_sgd._src.emergence import criterion
from scaling_sgd._src.files import atomic_write_json

from .core import analyze_metrics, partial_text
from .figures import make_figures
from .output import diverged_json, emergence_json, print_table, summary_json

__all__ = ["analyze_run"]


def analyze_run(run_dir, observable=None, threshold=None, stream=None, n_boot: int = 1000, figures: bool = True) -> dict:
    """Analyse a run directory: write ``emergence.json``, ``summary.json`` and the figures
    into it; print the table to ``stream`` (if given).  Returns the summary dict.

    A run whose every replica diverged is a result, not an error: its files say so (no
    direction learned, no fit) and no figure is drawn.

    Raises:
        ResultsError: the run folder is damaged (one line naming what is wrong).
    """
    run_dir = Path(run_dir)
    result = load_run(run_dir)
    cfg, metrics, meta = result.config, result.metrics, result.meta
    observable, threshold = criterion(cfg, observable, threshold)
    R = metrics["loss"].shape[0]
    if np.asarray(metrics.get("diverged", np.zeros(R, bool)), bool).all():
        return _all_diverged(run_dir, meta, cfg, metrics, observable, threshold, stream)
    res = analyze_metrics(metrics, cfg, observable, threshold, n_boot, meta=meta)
    summary = summary_json(res)
    summary["run"] = {"dir": str(run_dir), "hash": meta.get("hash"), "engine": meta.get("engine", cfg["train"].get("engine"))}
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


def _all_diverged(run_dir: Path, meta: dict, cfg: dict, metrics: dict, observable: str, threshold: float, stream) -> dict:
    """The analysis files of a run whose every replica diverged."""
    summary = diverged_json(metrics, observable, threshold)
    if partial_text(cfg, meta, metrics["step"]):
        summary = {"partial": partial_text(cfg, meta, metrics["step"]), **summary}
    summary["run"] = {"dir": str(run_dir), "hash": meta.get("hash"), "engine": meta.get("engine", cfg["train"].get("engine"))}
    atomic_write_json(run_dir / "emergence.json", summary)
    atomic_write_json(run_dir / "summary.json", summary)
    if stream is not None:
        if summary.get("partial"):
            print(summary["partial"], file=stream)
        steps = ", ".join(f"{int(s):,}" for s in summary["diverged_steps"])
        print(
            f"every replica diverged ({summary['diverged_excluded']} of {summary['diverged_excluded']}, at steps {steps}): "
            "no direction counts as learned, nothing to fit",
            file=stream,
        )
        print(f"wrote {run_dir / 'summary.json'} and emergence.json (no figures)", file=stream)
    return summary
