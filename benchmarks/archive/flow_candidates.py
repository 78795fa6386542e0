"""Candidates for the ``flow`` integrator: RKC against a scalar W-method, ``lax.map`` against
``vmap`` over replicas, and the cost of a ``ros2`` step.

    python benchmarks/archive/flow_candidates.py rosw P STEPS RTOL [ACTIVATION [REFERENCE_RUN_DIR]]
    python benchmarks/archive/flow_candidates.py rkc P STEPS RTOL [ACTIVATION [REFERENCE_RUN_DIR]]
    python benchmarks/archive/flow_candidates.py replicas P STEPS R
    python benchmarks/archive/flow_candidates.py ros2step P N

Setting: P = m, beta = 1, d = 1e4, lr = 1e-4, seed 0, float64 (``ACTIVATION`` default h4).

``rosw``: ROS2 (the W-method of ``flow_solvers.ROS2``) with the cheapest structured Jacobian, one
scalar per neuron: ``J_i = -max(alpha_i, 0) I`` with ``alpha_i = coef_i + r2_i K'(1)`` read off
the gradient (for h4 it is the exact relaxation rate of a learned neuron's ``P + m - 1``
tangent directions, ``4 a_p``: the stiff modes; the solve is a division).  Two gradients per
step, no Jacobian, no spectral radius.  ``rkc``: the package's RKC (``flow.solver = "rkc"``).
Both print attempted steps, gradient evaluations and wall time (compile included), save
the observables (``candidate_*.npz``), and, given a reference run directory of the same
setting (e.g. ``results/flow_scaling/P32_ros2_R1_steps2e+09_rtol1e-05_float64``), the
median and largest relative deviation of the emergence steps from it.

``ros2step``: seconds per attempted step of the ``ros2`` solver at P = m (its
``N``-step solve, compiled first), to bound the runs too long to make.

``replicas``: the package's RKC over ``R`` seeds with ``lax.map`` (one replica after another)
against ``vmap`` (lockstep), same numbers, wall time of each.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import scaling_sgd as ss  # noqa: E402
from scaling_sgd._src import model as mdl  # noqa: E402
from scaling_sgd._src.engines import driver, flow, flow_solvers  # noqa: E402
from scaling_sgd._src.schedules import tau_over_lr  # noqa: E402
from scaling_sgd._src.spec import build_spec  # noqa: E402


def _parts(spec):
    return spec.static, spec.replicas, spec.steps


def _setting(P, steps, rtol, activation="h4", seeds=(0,)):
    raw = {
        "teacher": {"P": P, "beta": 1.0, "activation": activation},
        "student": {"m": P},
        "data": {"d": 10_000},
        "train": {"engine": "flow", "steps": int(steps), "lr": 1e-4, "seed": list(seeds), "dtype": "float64", "progress": False},
        "log": {"points": 200},
        "flow": {"rtol": rtol, "atol": 1e-9},
    }
    static, reps, grid = _parts(build_spec(ss.resolve_config(raw)))
    ts = jnp.asarray(1e-4 * tau_over_lr("constant", grid, grid[-1]))
    return static, reps, grid, ts


def rosw(P, steps, rtol, activation="h4"):
    """ROS2 with J_i = -max(alpha_i, 0) I; observables recorded when an output time is hit."""
    static, reps, grid, ts = _setting(P, steps, rtol, activation)
    model, a = static.model, jnp.asarray(reps.a[0])
    s_, t_ = model.student, model.teacher
    gam = 1 + 1 / math.sqrt(2)
    T = ts.shape[0]

    def grad_alpha(C):
        r2 = jnp.sum(C * C, axis=-1)
        r = jnp.sqrt(jnp.maximum(r2, 1e-300))
        rr = r[:, None] * r[None, :]
        G = jnp.where(jnp.eye(P, dtype=bool), 1.0, (C @ C.T) / rr)
        M = C[:, :P] / r[:, None]
        dKG, dKM = s_.kernel_derivative(G), s_.kernel_derivative(M, t_)
        coef = (2.0 * s_.kernel(G) - G * dKG) @ r2 - (2.0 * s_.kernel(M, t_) - M * dKM) @ a
        g = (coef[:, None] * C + (rr * dKG) @ C).at[:, :P].add(-(r[:, None] * dKM * a[None, :]))
        return g, coef + r2 * s_.kernel_derivative(jnp.ones((), C.dtype))

    def body(c):
        t, C, h, k, outs, n, bad, nrej = c
        target = ts[jnp.minimum(k, T - 1)]
        h_try, hits = jnp.minimum(h, target - t), h >= target - t
        g0, al = grad_alpha(C)
        inv = lambda b: b / (1.0 + gam * h_try * jnp.maximum(al, 0.0))[:, None]
        k1 = inv(-g0)
        k2 = inv(-grad_alpha(C + h_try * k1)[0] - 2.0 * k1)
        Cn = C + h_try * (1.5 * k1 + 0.5 * k2)
        err = jnp.sqrt(jnp.mean((0.5 * h_try * (k1 + k2) / (1e-9 + rtol * jnp.maximum(jnp.abs(C), jnp.abs(Cn)))) ** 2))
        finite = jnp.isfinite(err)
        acc = finite & (err <= 1.0)
        fac = jnp.where(finite, jnp.clip(0.9 * jnp.maximum(err, 1e-10) ** -0.5, 0.2, 5.0), 0.2)
        t = jnp.where(acc, jnp.where(hits, target, t + h_try), t)
        C = jnp.where(acc, Cn, C)
        reached = acc & hits
        rec = reached & (ts <= t) & (jnp.arange(T) >= k)

        def write(outs):
            o = mdl.gram_observables(model, C @ C.T, C[:, :P], a)
            return jax.tree.map(lambda O, x: jnp.where(rec.reshape((-1,) + (1,) * x.ndim), x[None], O), outs, o)

        outs = jax.lax.cond(reached, write, lambda o: o, outs)
        k = jnp.where(reached, jnp.sum(ts <= t), k)
        h = jnp.where(reached, jnp.maximum(h, h_try * fac), h_try * fac)
        return t, C, h, k, outs, n + 1, bad | (h < 1e-12 * jnp.maximum(t, 1.0)), nrej + (~acc)

    def solve(C0):
        o0 = mdl.gram_observables(model, C0 @ C0.T, C0[:, :P], a)
        outs = jax.tree.map(lambda x: jnp.broadcast_to(x, (T,) + x.shape), o0)
        c0 = (0.0, C0, jnp.minimum(1e-3, ts[1]), jnp.sum(ts <= 0), outs, 0, False, 0)
        c = jax.lax.while_loop(lambda c: (c[3] < T) & (c[5] < 500_000) & ~c[6], body, c0)
        return c[4], c[5], c[7], c[3] >= T

    t0 = time.perf_counter()
    o, n, nrej, ok = jax.block_until_ready(jax.jit(solve)(flow.init(static, 0, 0.1)))
    wall = time.perf_counter() - t0
    name = f"candidate_rosw_P{P}_{rtol:.0e}_{activation}.npz"
    np.savez(name, step=grid, **{k: np.asarray(v)[None] for k, v in o.items()})
    return {"steps": int(n), "rejected": int(nrej), "fevals": 2 * int(n), "ok": bool(ok), "wall_s": wall, "saved": name}


def rkc(P, steps, rtol, activation="h4"):
    static, reps, grid, ts = _setting(P, steps, rtol, activation)
    t0 = time.perf_counter()
    out = driver.simulate(flow.Flow(solver=flow_solvers.RKC(rtol, 1e-9)), static, reps, grid)
    wall = time.perf_counter() - t0
    name = f"candidate_rkc_P{P}_{rtol:.0e}_{activation}.npz"
    np.savez(name, **{k: v for k, v in out.items() if k in ("step", "loss", "skill", "alignment", "norm2")})
    return {
        "steps": int(out["solver_steps"][0]),
        "fevals": int(out["solver_fevals"][0]),
        "ok": not bool(out["diverged"][0]),
        "wall_s": wall,
        "saved": name,
    }


def replicas(P, steps, R):
    static, reps, grid, ts = _setting(P, steps, 1e-5, seeds=range(R))
    out = {}
    for mode in ("map", "vmap"):
        t0 = time.perf_counter()
        o = driver.simulate(flow.Flow(solver=flow_solvers.RKC(1e-5, 1e-9), replicas=mode), static, reps, grid)
        out[mode] = {
            "wall_s": time.perf_counter() - t0,
            "steps": o["solver_steps"].tolist(),
            "final_loss": o["loss"][:, -1].tolist(),
        }
    return out


def ros2step(P, n):
    static, reps, grid, ts = _setting(P, 5e8, 1e-5)
    C0, a = flow.init(static, 0, 0.1), jnp.asarray(reps.a[0])
    F = flow.vector_field(static.model)
    jac = lambda c: flow.block_jacobian(static.model, c, a)  # noqa: E731
    f = jax.jit(lambda c: flow_solvers.solve(flow_solvers.ROS2(1e-5, 1e-9, max_steps=n), lambda y: F(y, a), jac, c, ts))
    t0 = time.perf_counter()
    jax.block_until_ready(f(C0))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, _, steps = jax.block_until_ready(f(C0))
    wall = time.perf_counter() - t0
    return {"steps": int(steps), "s_per_step": wall / int(steps), "compile_s": first - wall}


def _against(ref_dir, grid, skill):
    """Median / max relative deviation of the emergence steps from a reference run."""
    from scaling_sgd.analysis.emergence import emergence_times

    _, ref = ss.read_run(ref_dir)
    step, idx = np.unique(grid, return_index=True)
    np.testing.assert_array_equal(step, ref["step"])
    ta, ca = emergence_times(ref["step"], ref["skill"][:1])
    tb, cb = emergence_times(step, np.asarray(skill)[:, idx])
    both = ~ca & ~cb
    rel = np.abs(tb[both] / ta[both] - 1.0)
    return {
        "median_rel_dev": float(np.median(rel)),
        "max_rel_dev": float(np.max(rel)),
        "learned_by_one_only": int(np.sum(ca != cb)),
    }


def main(argv):
    cmd, P, steps = argv[0], int(argv[1]), float(argv[2]) if len(argv) > 2 else 0.0
    load = os.getloadavg()[0]
    if cmd == "replicas":
        res = replicas(P, steps, int(argv[3]))
    elif cmd == "ros2step":
        res = ros2step(P, int(argv[2]))
    else:
        rtol = float(argv[3])
        act = argv[4] if len(argv) > 4 else "h4"
        if act.startswith("{"):  # Hermite coefficients as a TOML inline table, e.g. "{2 = 0.5, 4 = 0.7}"
            import tomllib

            act = tomllib.loads(f"v = {act}")["v"]
        res = {"rosw": rosw, "rkc": rkc}[cmd](P, steps, rtol, act)
        res.update(rtol=rtol, activation=act)
        if len(argv) > 5:
            with np.load(res["saved"]) as z:
                res.update(_against(argv[5], z["step"], z["skill"]))
    res.update(candidate=cmd, P=P, train_steps=steps, load_before=load, load_after=os.getloadavg()[0])
    res["jax_version"] = jax.__version__
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
