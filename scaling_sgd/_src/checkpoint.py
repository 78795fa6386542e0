"""Checkpoints: the driver's state of a run kept on disk, so that a run stopped by SIGTERM,
SIGINT or ``kill -9`` resumes where it was when the same command is run again.

A checkpoint is one file beside the run folder, in the hidden folder that holds runs
being written (``OUT/../.scaling-sgd-tmp/<name>.checkpoint.npz``), so that writing the run
folder (atomically, as a folder) never touches it and no glob of run folders sees it.  It
holds every array of the driver's carry (:class:`.engines.driver.Chunk`: the engine state,
the next log point and the observables so far), the work budget of the next chunk, and the
hash of the run's config: a checkpoint of another config is never used.  It is written
atomically (a temporary file, flushed, then renamed), so a kill while writing leaves the
previous checkpoint.  The finished run removes it.

The numbers of a resumed run are those of an uninterrupted one, bit for bit: each step is
the same code wherever a chunk ends, and the carry is restored exactly (raw PRNG keys and
floats as stored).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from .files import atomic_write_bytes, unlink_quietly
from .results import TMP_DIR

__all__ = ["Checkpoint", "checkpoint_path", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
# Seconds between checkpoints: at least MIN between two (a run with many short log points
# writes at most that often), at most EVERY (a long log segment is saved inside).
MIN_INTERVAL_S = 10.0
EVERY_S = 180.0


def checkpoint_path(out_dir) -> Path:
    """Where the checkpoint of the run folder ``out_dir`` lives."""
    out = Path(out_dir)
    return out.parent / TMP_DIR / f"{out.name}.checkpoint.npz"


class Checkpoint:
    """The checkpoint of one run folder (see the module docstring).

    Args:
        out_dir: the run folder.  run_hash: the config hash of the run.
        min_interval_s, interval_s: the least and the most seconds between two saves
            (``SCALING_SGD_CHECKPOINT_S`` sets ``interval_s``).
    """

    def __init__(self, out_dir, run_hash: str, min_interval_s: float = MIN_INTERVAL_S, interval_s: float | None = None):
        self.path = checkpoint_path(out_dir)
        self.hash = run_hash
        env = os.environ.get("SCALING_SGD_CHECKPOINT_S", "").strip()
        self.interval_s = float(interval_s if interval_s is not None else (env or EVERY_S))
        self.min_interval_s = min(float(min_interval_s), self.interval_s)
        #: the step a run resumed from (set by the driver), ``None`` for a fresh start
        self.resumed_step = None

    def due(self, new_log_point: bool, since_save_s: float) -> bool:
        """Whether to save now: a log point was reached since the last save and at least
        ``min_interval_s`` passed, or ``interval_s`` passed."""
        return since_save_s >= self.interval_s or (new_log_point and since_save_s >= self.min_interval_s)

    def save(self, chunk, budget: int) -> None:
        """Write the driver's carry ``chunk`` and the next chunk's ``budget`` (atomically)."""
        leaves = jax.device_get(jax.tree.leaves(chunk))
        arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
        buf = io.BytesIO()
        np.savez(buf, format=CHECKPOINT_FORMAT, hash=self.hash, budget=int(budget), n_leaves=len(leaves), **arrays)
        atomic_write_bytes(self.path, buf.getvalue())

    def restore(self, template):
        """``(chunk, budget)`` from the file, placed like ``template`` (the initial carry of
        this run), or ``None`` when there is no usable checkpoint: none, another config's,
        another format, or arrays whose shapes or types differ from the template's (a
        checkpoint that cannot be read is ignored, and the run starts from step 0)."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if int(z["format"]) != CHECKPOINT_FORMAT or str(z["hash"]) != self.hash:
                    return None
                leaves = [z[f"leaf_{i}"] for i in range(int(z["n_leaves"]))]
                budget = int(z["budget"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        ref = jax.tree.leaves(template)
        if len(leaves) != len(ref) or any(
            np.shape(a) != np.shape(b) or np.asarray(a).dtype != b.dtype for a, b in zip(leaves, ref)
        ):
            return None
        placed = [jax.device_put(a, b.sharding) for a, b in zip(leaves, ref)]
        return jax.tree.unflatten(jax.tree.structure(template), placed), budget

    def remove(self) -> None:
        """Remove the checkpoint (the run finished and was written)."""
        unlink_quietly(self.path)
