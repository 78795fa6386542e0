"""Notebook safety: importing the package changes no global state, a float64 run leaves
JAX's x64 mode as it was, and Ctrl-C (a real SIGINT) stops a long run within seconds."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(script: str, **kw):
    # a backend other than Agg, so that a module switching to Agg would be seen
    env = {**os.environ, "MPLBACKEND": "svg"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, **kw)


def test_importing_every_module_leaves_matplotlib_and_jax_unchanged():
    r = _python(
        """
        import importlib, json, pkgutil
        import matplotlib, jax
        backend = matplotlib.get_backend()
        rc = {k: repr(v) for k, v in matplotlib.rcParams.items()}
        flags = (jax.config.x64_enabled, jax.config.jax_numpy_rank_promotion)
        import scaling_sgd, scaling_sgd.analysis
        # the analysis folder is mapped into the package: walk it as well
        names = [m.name for m in pkgutil.walk_packages(scaling_sgd.__path__, "scaling_sgd.")]
        names += [m.name for m in pkgutil.walk_packages(scaling_sgd.analysis.__path__, "scaling_sgd.analysis.")]
        for name in names:
            importlib.import_module(name)
        changed = [k for k, v in matplotlib.rcParams.items() if repr(v) != rc[k]]
        print(json.dumps({"n": len(names), "backend": [backend, matplotlib.get_backend()], "changed": changed,
                          "flags": [flags, (jax.config.x64_enabled, jax.config.jax_numpy_rank_promotion)]}))
        """
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] >= 30  # every module of the package, the analysis included
    assert out["backend"][0] == out["backend"][1]
    assert out["changed"] == []
    assert out["flags"][0] == out["flags"][1]


def test_float64_run_leaves_x64_mode_as_it_was():
    r = _python(
        """
        import jax, scaling_sgd as ss
        assert not jax.config.x64_enabled
        res = ss.run({"teacher": {"P": 2}, "student": {"m": 2}, "data": {"d": 8},
                      "train": {"steps": 20, "dtype": "float64", "progress": False}, "log": {"points": 3}})
        assert res.loss.dtype.name == "float64", res.loss.dtype
        assert not jax.config.x64_enabled
        import jax.numpy as jnp
        assert jnp.zeros(1).dtype.name == "float32"
        print("ok")
        """
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.slow
def test_sigint_stops_a_long_run_within_seconds_and_keeps_the_part_done(tmp_path):
    cfg = tmp_path / "long.toml"
    cfg.write_text(
        "[teacher]\nP = 3\n[student]\nm = 3\n[data]\nd = 64\n[train]\nsteps = 2_000_000_000\nlr = 1e-6\n[log]\npoints = 40\n"
    )
    out = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-m", "scaling_sgd.cli", "run", str(cfg), "--out", str(out)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SCALING_SGD_COMPILATION_CACHE": "0"},
    )
    # wait until it is past compilation and running
    t_end = time.monotonic() + 240
    err = ""
    while time.monotonic() < t_end and "compiled in" not in err:
        line = p.stderr.readline()
        if not line:
            break
        err += line
    assert "compiled in" in err, err
    time.sleep(3.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        rest_out, rest_err = p.communicate(timeout=60)
    finally:
        p.kill()
    stopped = time.monotonic() - t0
    assert stopped < 20, stopped
    assert p.returncode == 130, (p.returncode, rest_err[-2000:])
    assert "interrupted by SIGINT" in rest_err
    meta = json.loads((out / "config.json").read_text())
    assert meta["partial"] is True and 0 < meta["last_step"] < 2_000_000_000
    with np.load(out / "metrics.npz") as z:
        assert z["step"][-1] == meta["last_step"] and z["loss"].shape[1] == z["step"].size
        assert np.all(np.isfinite(z["loss"]))
