"""The experiments, one module each: ``sims/experiments/NN_name.py`` beside its config
``sims/NN_name.toml``.

Each module has ``run(exp, force) -> sims.output.Outcome``: it runs (or reuses) its sweep,
fits the predicted quantities, checks them against theory, draws
``sims/figures/<name>.png`` and writes notes derived from its numbers.

Conventions: emergence times come from :func:`scaling_sgd.analysis.emergence_times` with
the config's observable and threshold; replicas flagged ``diverged`` are excluded (and
counted in the notes); medians over seeds treat a censored time (``inf``) as larger than
any finite one, so a median is finite only when more than half of the seeds learned the
direction.  Intervals are 95% percentile bootstraps over seeds.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["names", "get"]

_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """Every experiment module, sorted (``01_staircase``, ...)."""
    return sorted(p.stem for p in _DIR.glob("[0-9][0-9]_*.py"))


def get(name: str):
    """The ``run`` function of experiment ``name``."""
    if name not in names():
        raise KeyError(f"no experiment module sims/experiments/{name}.py")
    return importlib.import_module(f"{__name__}.{name}").run
