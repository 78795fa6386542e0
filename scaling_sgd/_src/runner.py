"""From a resolved config to a results directory: the host side of a run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import config as cfgmod
from .engines import get_engine
from .engines.common import Progress, Replicas, Static, log_grid, pad_replicas, replica_padding
from .hermite import activation
from .model import Model
from .results import environment, write_run

__all__ = ["build", "run", "teacher_coefficients", "enable_dtype"]


def enable_dtype(dtype: str) -> None:
    """float64 runs need JAX's x64 mode, which is process-wide; float32 needs nothing."""
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def teacher_coefficients(cfg: dict, betas) -> np.ndarray:
    """``(R, P)`` float64 teacher coefficients: the explicit ``teacher.a`` or the power law."""
    P = cfg["teacher"]["P"]
    if cfg["teacher"]["a"] is not None:
        return np.tile(np.asarray(cfg["teacher"]["a"], np.float64), (len(betas), 1))
    p = np.arange(1, P + 1, dtype=np.float64)
    a = p[None, :] ** (-np.asarray(betas, np.float64)[:, None])
    return a / np.sqrt(np.sum(a * a, axis=1, keepdims=True))


def build(cfg: dict) -> tuple[Static, Replicas, np.ndarray]:
    """Static description, replica arrays and log grid of a resolved config."""
    t, s, tr = cfg["teacher"], cfg["student"], cfg["train"]
    deg = t["activation_degree"]
    teacher = activation(t["activation"], deg)
    student = activation(s["activation"], deg) if s["activation"] is not None else teacher
    model = Model(d=cfg["data"]["d"], P=t["P"], m=s["m"], teacher=teacher, student=student, basis=t["basis"])
    grid = cfgmod.replica_grid(cfg)
    ov = cfg["log"]["overlap"]
    if ov == "auto":  # small enough to keep: the (R, T, m, P) array is bounded in memory and on disk
        mP = s["m"] * t["P"]
        size = len(grid["seed"]) * (cfg["log"]["points"] + 1) * mP
        with_overlap = mP <= cfgmod.OVERLAP_AUTO_MAX and size <= cfgmod.OVERLAP_AUTO_MAX_ELEMENTS
    else:
        with_overlap = bool(ov)
    static = Static(
        model=model,
        batch_size=tr["batch_size"],
        optimizer=tr["optimizer"],
        optimizer_kwargs=tuple(sorted(tr["optimizer_kwargs"].items())),
        schedule=tr["schedule"],
        dtype=tr["dtype"],
        with_overlap=with_overlap,
        flow_rtol=cfg["flow"]["rtol"],
        flow_atol=cfg["flow"]["atol"],
        flow_solver=cfg["flow"]["solver"],
    )
    reps = Replicas(
        seed=np.asarray(grid["seed"], np.int64),
        lr=np.asarray(grid["lr"], np.float64),
        a=teacher_coefficients(cfg, grid["beta"]),
        beta=np.asarray(grid["beta"], np.float64),
        init_scale=s["init_scale"],
        diverge_bound=tr["diverge_bound"],
    )
    return static, reps, log_grid(tr["steps"], cfg["log"]["points"])


def run(cfg: dict, out_dir: str | Path | None = None, label: str = "") -> tuple[dict, dict]:
    """Run a resolved config; write it to ``out_dir`` if given.

    Returns ``(metrics, meta)``: ``metrics`` as in ``metrics.npz`` (SPEC section 4),
    ``meta`` the extra ``config.json`` fields.
    """
    enable_dtype(cfg["train"]["dtype"])
    static, reps, steps = build(cfg)
    simulate = get_engine(cfg["train"]["engine"])
    progress = Progress(steps, static.batch_size * reps.R, label=label, enabled=cfg["train"]["progress"])
    t0 = time.perf_counter()
    # Several local devices: pad the replica axis to a multiple of their number so that it
    # is sharded across all of them, and drop the pads.
    raw = simulate(static, pad_replicas(reps, replica_padding(reps.R)), steps, progress)
    raw = {k: np.asarray(v)[: reps.R] for k, v in raw.items()}
    wall = time.perf_counter() - t0
    # Small runs repeat grid points (a static length); keep each step once.
    step, idx = np.unique(steps, return_index=True)
    metrics = {"step": step.astype(np.int64)}
    for k, v in raw.items():
        metrics[k] = v[:, idx] if np.ndim(v) >= 2 else v
    metrics.update(seed=reps.seed, lr=reps.lr, beta=reps.beta, a=reps.a)
    nd = int(np.sum(metrics["diverged"]))
    meta = {
        "hash": cfgmod.config_hash(cfg),
        "engine": cfg["train"]["engine"],
        "replicas": reps.R,
        "diverged_replicas": nd,
        "wall_time_s": wall,
        "samples_per_s": float(steps[-1]) * static.batch_size * reps.R / wall if wall > 0 else None,
        "environment": environment(),
        "format": 1,
    }
    if out_dir is not None:
        write_run(out_dir, cfg, metrics, meta)
    return metrics, meta
