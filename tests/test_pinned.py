"""Pinned results: a few small runs of every engine, compared with arrays stored on disk.

The arrays in ``tests/data/pinned_runs.npz`` are this file's reference outputs; a
refactoring must leave them unchanged.  On the machine and JAX version
that wrote them (recorded in ``pinned_runs.json``) the comparison is bitwise.  Elsewhere,
XLA may generate other floating-point code for another CPU or compiler version, so the
comparison is to a tolerance that a change of the mathematics would exceed by orders of
magnitude (a wrong sign, a missing term or a different random stream moves these numbers
by O(1) relative).

Regenerate only after a change that is *meant* to move the numbers, and say so in the
commit message::

    python tests/test_pinned.py --regenerate
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
NPZ = DATA / "pinned_runs.npz"
META = DATA / "pinned_runs.json"

_BASE = {
    "teacher": {"P": 3, "beta": 1.0, "activation": "h4", "basis": "canonical"},
    "student": {"m": 4, "init_scale": 0.3},
    "data": {"d": 16},
    "train": {"steps": 300, "lr": [1e-3, 3e-3], "seed": [0, 5], "progress": False, "batch_size": 1, "dtype": "float32"},
    "log": {"points": 12, "overlap": True},
    "flow": {"solver": "ros2", "rtol": 1e-6, "atol": 1e-9},
}

# name -> overrides of _BASE ("table.key": value); every setting that matters is explicit,
# so that a later change of a default does not move a pinned run.
CASES = {
    "sgd_f32": {"train.engine": "sgd"},
    "sgd_f64_mixed_random_cosine_B3": {
        "train.engine": "sgd",
        "train.dtype": "float64",
        "train.batch_size": 3,
        "teacher.activation": {"2": 0.5, "3": 0.6, "4": 0.62},
        "teacher.basis": "random",
        "train.schedule": "cosine",
        "train.lr": [2e-3],
    },
    "sgd_adam_f32": {"train.engine": "sgd", "train.optimizer": "adam", "train.lr": [1e-3], "train.steps": 100},
    "sgd_diverging_f32": {"train.engine": "sgd", "train.lr": [1e-3, 40.0], "train.seed": [1], "student.init_scale": 1.0},
    "reduced_f32_B2": {"train.engine": "reduced", "train.batch_size": 2, "data.d": 32, "train.steps": 400},
    "reduced_f64": {"train.engine": "reduced", "train.dtype": "float64", "data.d": 24},
    "flow_ros2_f64": {
        "train.engine": "flow",
        "train.dtype": "float64",
        "data.d": 64,
        "train.steps": 2_000_000,
        "train.lr": [1e-3],
        "student.init_scale": 0.5,
    },
    "flow_tsit5_f64_beta": {
        "train.engine": "flow",
        "train.dtype": "float64",
        "flow.solver": "tsit5",
        "data.d": 32,
        "train.steps": 200_000,
        "train.lr": [1e-3],
        "teacher.beta": [0.5, 1.5],
        "train.seed": [2],
    },
}
ARRAYS = ("loss", "skill", "alignment", "norm2", "overlap", "diverged", "diverged_step", "step")


def _config(over: dict) -> dict:
    import copy

    raw = copy.deepcopy(_BASE)
    for k, v in over.items():
        t, key = k.split(".")
        raw.setdefault(t, {})[key] = v
    return raw


def _run(name: str) -> dict:
    import scaling_sgd as ss

    cfg = ss.resolve_config(_config(CASES[name]))
    metrics = ss.run(cfg).metrics
    return {k: np.asarray(metrics[k]) for k in ARRAYS if k in metrics}


def _environment() -> dict:
    import jax
    import jaxlib

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "cpu": cpu, "backend": jax.default_backend()}


def regenerate() -> None:
    DATA.mkdir(exist_ok=True)
    out = {}
    for name in CASES:
        for k, v in _run(name).items():
            out[f"{name}/{k}"] = v
    np.savez_compressed(NPZ, **out)
    META.write_text(json.dumps({"environment": _environment(), "cases": CASES, "base": _BASE}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {NPZ} ({len(out)} arrays) and {META}")


@pytest.fixture(scope="module")
def pinned():
    with np.load(NPZ) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(META.read_text())
    return arrays, meta["environment"] == _environment()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_pinned_run_is_unchanged(pinned, name):
    arrays, same_machine = pinned
    got = _run(name)
    want = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k, v in want.items():
        g = got[k]
        assert g.shape == v.shape and g.dtype == v.dtype, (k, g.shape, v.shape, g.dtype, v.dtype)
        if same_machine or v.dtype.kind in "biu":
            # bitwise, NaN where NaN
            assert np.array_equal(g, v, equal_nan=True), f"{name}/{k} changed (max |diff| {np.nanmax(np.abs(g - v))})"
        else:
            rtol = 1e-9 if v.dtype == np.float64 else 2e-3
            np.testing.assert_allclose(g, v, rtol=rtol, atol=rtol * np.nanmax(np.abs(v)), err_msg=f"{name}/{k}")


if __name__ == "__main__":
    if "--regenerate" in sys.argv:
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_numpy_rank_promotion", "raise")
        regenerate()
    else:
        print(__doc__)
