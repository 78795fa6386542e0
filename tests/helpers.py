"""Shared test helpers: one dtype-aware tolerance, small configs."""

from __future__ import annotations

import numpy as np

import scaling_sgd as ss

RTOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 2e-5}


# The smallest complete config file: two replicas, a few milliseconds a run (CLI tests).
TINY_TOML = """
[teacher]
P = 2
[student]
m = 2
[data]
d = 8
[train]
steps = 20
lr = 1e-3
seed = [0, 1]
progress = false
[log]
points = 5
"""


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


def sgd_reference(static, reps, log_steps, bound):
    """Per replica, a Python loop of the per-step reference ``sgd.step`` (one fresh batch
    per step, drawn by ``sgd.draw_batch``) with the loss check at the log points.

    Returns a dict: ``loss`` ``(R, T)``, ``norm2`` ``(R, T, m)``, ``overlap`` ``(R, T, m, P)``
    at the log points; ``W`` ``(R, steps + 1, m, d)`` after every step; ``e2`` ``(R, steps)``
    the largest squared error of each step's batch (at the weights before the step);
    ``diverged`` ``(R,)`` and ``diverged_step`` ``(R,)``.
    """
    import jax
    import jax.numpy as jnp

    from scaling_sgd._src.engines import sgd
    from scaling_sgd._src.engines.base import divergence_check

    step = jax.jit(sgd.step, static_argnums=0)
    err = jax.jit(lambda W, th, a, x: jnp.max(sgd.batch_grad(static, W, th, a, x)[1] ** 2))
    steps = int(log_steps[-1])
    out = {k: [] for k in ("loss", "norm2", "overlap", "W", "e2", "diverged", "diverged_step")}
    for r in range(reps.R):
        st = sgd.init(static, jnp.uint32(reps.seed[r]), reps.init_scale)
        a = jnp.asarray(reps.a[r])
        lr = jnp.asarray(reps.lr[r])
        t, obs, Ws, e2 = 0, [], [np.asarray(st.W)], []
        for t1 in log_steps:
            while t < t1:
                e2.append(float(err(st.W, st.theta, a, sgd.draw_batch(static, st.key_data, t))))
                st = step(static, st, t, lr, a, steps, bound)
                Ws.append(np.asarray(st.W))
                t += 1
            o = sgd.observe(static, st, a)
            div, div_step = divergence_check(st.diverged, st.diverged_step, o["loss"], bound, int(t1))
            st = st._replace(diverged=div, diverged_step=div_step)
            M = np.asarray(st.W[:, : static.model.P] if st.theta is None else st.W @ st.theta.T)
            obs.append((float(o["loss"]), np.asarray(o["norm2"]), M / np.sqrt(np.asarray(o["norm2"]))[:, None]))
        out["loss"].append([o[0] for o in obs])
        out["norm2"].append([o[1] for o in obs])
        out["overlap"].append([o[2] for o in obs])
        out["W"].append(Ws)
        out["e2"].append(e2)
        out["diverged"].append(bool(st.diverged))
        out["diverged_step"].append(int(st.diverged_step))
    return {k: np.asarray(v) for k, v in out.items()}


def spec_parts(cfg: dict):
    """``(static, replicas, log steps)`` of a resolved config (its :class:`RunSpec`)."""
    from scaling_sgd._src.spec import build_spec

    spec = build_spec(cfg)
    return spec.static, spec.replicas, spec.steps
