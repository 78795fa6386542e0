"""Shared test helpers: one dtype-aware tolerance, small configs."""

from __future__ import annotations

import numpy as np

import scaling_sgd as ss

RTOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 2e-5}


def assert_close(actual, desired, dtype=np.float64, rtol=None, atol=0.0, err_msg=""):
    """``assert_allclose`` with the relative tolerance of ``dtype`` unless given."""
    rtol = RTOL[np.dtype(dtype)] if rtol is None else rtol
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=err_msg)


def small_config(**over) -> dict:
    """A resolved small config; ``over`` maps 'table.key' -> value."""
    raw: dict = {
        "teacher": {"P": 3, "beta": 1.0},
        "student": {"m": 4},
        "data": {"d": 16},
        "train": {"steps": 50, "lr": 1e-3, "seed": 0, "progress": False},
        "log": {"points": 10},
    }
    for k, v in over.items():
        t, key = k.split(".")
        raw.setdefault(t, {})[key] = v
    return ss.resolve_config(raw)


def mc_se_tol(samples, n_se: float = 5.0) -> float:
    """``n_se`` standard errors of the mean of ``samples``."""
    samples = np.asarray(samples)
    return n_se * samples.std(ddof=1) / np.sqrt(samples.size)
