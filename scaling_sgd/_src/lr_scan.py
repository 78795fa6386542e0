"""The largest stable learning rate of a config: ``scaling_sgd.stable_lr``, ``scaling-sgd lr-scan``.

A learning rate is stable when no replica of the config's run (every ``beta`` and
``seed`` of it) diverges within its steps (the divergence rule of
:func:`.engines.base.divergence_check`).  The scan runs a geometric grid of ``points``
learning rates as replicas of one run (``beta x lr x seed``, one compiled program), then
refines between the largest stable rate and the next one up with a grid of the same size,
which reuses the program.  The grid moves up or down past its own span while its top is
stable or its bottom diverges (at most :data:`MAX_MOVES` times).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config as cfgmod
from .errors import ConfigError

__all__ = ["LrScan", "scan_lr", "stable_lr"]

# grid moves before the scan gives up (the grid spans ratio^(points-1) each time)
MAX_MOVES = 8


@dataclass(frozen=True)
class LrScan:
    """The result of :func:`scan_lr`.

    Attributes:
        lr: the largest stable learning rate found (``None``: every rate tried diverged).
        tried: ``(lr, replicas diverged, replicas)`` of every rate run, in order.
        steps: the steps each run took.
    """

    lr: float | None
    tried: tuple
    steps: int


def _as_config(config) -> dict:
    if isinstance(config, (str, Path)):
        config = cfgmod.load(config)
    if not isinstance(config, Mapping):
        raise ConfigError("config", "must be a table of tables (a dict) or a TOML file path")
    return cfgmod.resolve(config)


def _diverged_per_lr(cfg: dict, grid: np.ndarray) -> np.ndarray:
    """Replicas diverged at each rate of ``grid`` (one run, the rates as replicas)."""
    from . import runner
    from .spec import build_spec

    c = copy.deepcopy(cfg)
    c["train"]["lr"] = [float(x) for x in grid]
    c["train"]["progress"] = False
    c["log"]["overlap"] = False
    spec = build_spec(cfgmod.resolve(c))
    metrics, _ = runner.run(spec, None, progress=False)
    g = cfgmod.replica_grid(spec.config)
    n_beta = len(dict.fromkeys(g["beta"]))  # replicas are beta x lr x seed, seed fastest
    div = np.asarray(metrics["diverged"], bool).reshape(n_beta, len(grid), -1)
    return div.sum(axis=(0, 2)), div.shape[0] * div.shape[2]


def scan_lr(config, points: int = 8, ratio: float = 2.0, steps: int | None = None, lr: float | None = None) -> LrScan:
    """Scan learning rates for the largest stable one (see the module docstring).

    Args:
        config: a config (dict, resolved or not, or a TOML path); its ``train.lr`` is
            replaced by the grid, every other setting kept.
        points: rates per grid (one compiled program of ``points x`` the config's replicas
            without its ``lr`` list).
        ratio: the factor between neighbouring rates of the first grid.
        steps: steps of each run (default the config's ``train.steps``).
        lr: the top of the first grid (default the config's largest ``train.lr``).
    Returns:
        an :class:`LrScan`.
    """
    cfg = _as_config(config)
    if steps is not None:
        cfg["train"]["steps"] = int(steps)
    points = int(points)
    if points < 2 or not ratio > 1.0:
        raise ConfigError("lr-scan", f"points = {points}, ratio = {ratio}; accepted: points >= 2 and ratio > 1")
    top = float(lr) if lr is not None else float(max(np.atleast_1d(cfg["train"]["lr"])))
    grid = top * ratio ** -np.arange(points, dtype=np.float64)  # decreasing
    tried = []

    def run(grid):
        div, n = _diverged_per_lr(cfg, grid)
        tried.extend((float(x), int(k), int(n)) for x, k in zip(grid, div))
        return div == 0

    stable = run(grid)
    span = grid[0] / grid[-1] * ratio  # the next grid starts one ratio past this one
    for _ in range(MAX_MOVES):
        if stable[0]:  # the top is stable: look higher
            grid = grid * span
        elif not stable.any():  # all diverge: look lower
            grid = grid / span
        else:
            break
        stable = run(grid)
    if not stable.any():
        return LrScan(None, tuple(tried), int(cfg["train"]["steps"]))
    i = int(np.argmax(stable))  # the largest stable rate of a decreasing grid
    best = float(grid[i])
    if i > 0:  # refine between it and the next rate up, which diverged
        fine = grid[i - 1] * (grid[i] / grid[i - 1]) ** (np.arange(1, points + 1) / (points + 1))
        ok = run(fine)
        if ok.any():
            best = float(fine[int(np.argmax(ok))])
    return LrScan(best, tuple(tried), int(cfg["train"]["steps"]))


def stable_lr(config, **kw) -> float | None:
    """The largest learning rate at which no replica of ``config``'s run diverges
    (:func:`scan_lr`; ``None`` when every rate tried diverged)."""
    return scan_lr(config, **kw).lr
