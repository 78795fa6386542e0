"""From a run spec to metrics (and a results directory): the host side of a run."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import numpy as np

from . import preflight
from .checkpoint import Checkpoint
from .engines.driver import Interrupted, simulate
from .environment import environment
from .progress import NoProgress, Progress
from .results import write_run
from .schema import REPLICATED
from .spec import RunSpec

__all__ = ["run", "precision", "enable_compilation_cache"]


def precision(dtype: str):
    """The context a run of ``dtype`` needs: JAX's x64 mode for ``float64``, scoped to the
    run (the process-wide flag is left as it was); nothing for ``float32``."""
    if dtype == "float64":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache under the user's cache folder
    (``$XDG_CACHE_HOME/scaling-sgd/jax``, default ``~/.cache``), unless one is configured
    already or ``SCALING_SGD_COMPILATION_CACHE=0``.  A second process (the next job of a
    Slurm array, the same notebook tomorrow) then loads the compiled programs instead of
    compiling them.  Returns the folder in use, or ``None``."""
    import jax

    if os.environ.get("SCALING_SGD_COMPILATION_CACHE", "1") == "0":
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "scaling-sgd" / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # no writable cache folder: compile every time
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return str(folder)


def run(
    spec: RunSpec,
    out_dir=None,
    label: str = "",
    progress: bool | None = None,
    keep_partial: bool = False,
    force: bool = False,
    stop_signals=(signal.SIGINT, signal.SIGTERM),
    checkpoint_s: float | None = None,
):
    """Run a spec (:func:`.spec.build_spec`); write it to ``out_dir`` if given.

    Before compiling, :func:`.preflight.check` refuses an output folder that cannot take
    the results (or holds another config's, unless ``force``) and a run whose memory or
    disk estimate does not fit.

    With an ``out_dir`` the run is resumable (:mod:`.checkpoint`): its state is saved beside
    the folder at log points and every few minutes, and when a stop signal arrives; the
    same run started again (same config, same ``out_dir``) continues from there and ends
    with the numbers of an uninterrupted run.

    Args:
        spec: the run (a resolved config, built once).
        out_dir: the run directory to write, or ``None``.
        label: a prefix for progress lines.  progress: show progress (default: the
            config's ``train.progress``).
        keep_partial: on an interrupt (:class:`.engines.driver.Interrupted`), keep the
            log points done as a result marked ``partial`` (the command line does)
            instead of raising.
        force: replace another config's results in ``out_dir``.
        stop_signals: signals that stop the run between chunks (the driver's
            :class:`~.engines.driver.Interrupted`); others keep their own handlers.
        checkpoint_s: the most seconds between two checkpoints (default
            :data:`.checkpoint.EVERY_S`, or ``SCALING_SGD_CHECKPOINT_S``).
    Returns:
        ``(metrics, meta)``: ``metrics`` as in ``metrics.npz`` (docs/model.md §4),
        ``meta`` the other ``config.json`` fields.
    """
    preflight.check(spec, out_dir, force)
    engine, static, reps, steps = spec.engine, spec.static, spec.replicas, spec.steps
    show = spec.config["train"]["progress"] if progress is None else progress
    meter = Progress(label=label) if show else NoProgress()
    enable_compilation_cache()
    ckpt = Checkpoint(out_dir, spec.hash, interval_s=checkpoint_s) if out_dir is not None else None
    t0 = time.perf_counter()
    interrupted = None
    with precision(static.dtype):
        try:
            raw = simulate(engine, static, reps, steps, meter, stop_signals=stop_signals, checkpoint=ckpt)
        except Interrupted as e:
            if not keep_partial:
                raise
            raw, interrupted = e.partial, e.signal
    wall = time.perf_counter() - t0
    R = reps.R
    # Small runs repeat grid points (a static length); keep each step once.
    step, idx = np.unique(raw["step"], return_index=True)
    metrics = {"step": step.astype(np.int64)}
    for k, v in raw.items():
        if k == "stopped_at":
            continue
        if k != "step":
            v = np.asarray(v)[:R]
            metrics[k] = v[:, idx] if spec.metrics.get(k, ())[1:2] == ("step",) else v
    metrics.update({k: getattr(reps, k) for k in REPLICATED})
    done = int(step[-1])
    resumed = int(ckpt.resumed_step or 0) if ckpt is not None else 0
    # steps simulated in this process: a run whose replicas all diverged stopped there
    simulated = (int(raw["stopped_at"]) if raw.get("stopped_at", -1) >= 0 else done) - resumed
    sps = engine.work_units(static, reps)
    meta = {
        "hash": spec.hash,
        "engine": engine.name,
        "replicas": R,
        "diverged_replicas": int(np.sum(metrics["diverged"])),
        "wall_time_s": wall,
        # None for an engine that draws no samples (the flow)
        "samples_per_s": float(simulated) * sps / wall if wall > 0 and sps is not None else None,
        "environment": environment(),
        "format": 1,
    }
    if resumed:
        meta["resumed_from_step"] = resumed
    if interrupted:
        meta.update(partial=True, last_step=done, interrupted_by=interrupted)
    if raw.get("stopped_at", -1) >= 0:
        # every replica diverged: the log points after it hold their frozen values
        meta["all_diverged_at"] = int(raw["stopped_at"])
    if out_dir is not None:
        write_run(out_dir, spec.config, metrics, meta)
        if not interrupted:
            ckpt.remove()
    return metrics, meta
