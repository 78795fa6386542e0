"""The flow-engine figures of benchmarks/NOTES.md, from the runs of ``benchmarks/flow_scaling.py``.

    python benchmarks/archive/flow_analysis.py slope RUN_DIR [--hi 26]
    python benchmarks/archive/flow_analysis.py staircase REFERENCE_RUN_DIR RUN_DIR
    python benchmarks/archive/flow_analysis.py loss32

``slope``: the loss exponent of a multi-seed run: the seed-mean loss fitted against the step
between the 2nd and the ``hi``-th median emergence (SPEC section 3: the 2nd to the P/10-th),
with a bootstrap interval over seeds (:func:`analysis.fit.fit_power_law`), and each seed's own
slope in the same window.

``staircase``: emergence steps (skill 0.5, :func:`analysis.emergence.emergence_times`) of
two runs of the same config and seed: median and largest relative deviation over the
directions both learned, directions learned by only one, final losses.

``loss32``: the logged float32 loss against float64 at learned states (students on their
teacher directions with ``r2 = a``, perturbed): the plain closed form and the double-word
evaluation the engines log (:func:`scaling_sgd._src.model.population_loss_accurate`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from scaling_sgd.analysis.emergence import emergence_times
from scaling_sgd.analysis.fit import fit_from_draws, fit_power_law


def _load(run_dir):
    import scaling_sgd as ss

    cfg, m = ss.read_run(run_dir)
    return cfg["config"], m


def slope(run_dir: str, hi: int) -> dict:
    cfg, m = _load(run_dir)
    step, loss = m["step"].astype(np.float64), m["loss"]
    T, _ = emergence_times(m["step"], m["skill"], cfg["analysis"]["threshold"])
    med = np.sort(np.median(T, axis=0))  # inf (censored) sorts last
    lo, up = float(med[1]), float(med[hi - 1])
    fit = fit_power_law(step[1:], loss[:, 1:], window=(lo, up), stat="mean", n_boot=2000)
    per_seed = [fit_from_draws(step[1:], loss[r, 1:], None, (lo, up)).slope for r in range(loss.shape[0])]
    out = {
        "run": run_dir,
        "seeds": m["seed"].tolist(),
        "window_steps": (lo, up),
        "slope": fit.slope,
        "ci95": fit.ci,
        "interval_method": fit.method,
        "n_points": fit.n_points,
        "per_seed": per_seed,
        "theory": -(2 * cfg["teacher"]["beta"] - 1) / cfg["teacher"]["beta"],
    }
    print(
        f"{run_dir}: slope of the seed-mean loss between the 2nd and {hi}th median emergence "
        f"(steps {lo:.3g} to {up:.3g}, {fit.n_points} log points): {fit.slope:.3f}, 95% interval "
        f"[{fit.ci[0]:.3f}, {fit.ci[1]:.3f}] ({fit.method}); per seed {', '.join(f'{s:.3f}' for s in per_seed)}; "
        f"theory {out['theory']:.3f}"
    )
    return out


def staircase(ref_dir: str, run_dir: str) -> dict:
    cref, a = _load(ref_dir)
    crun, b = _load(run_dir)
    for k in ("teacher", "student", "data"):
        if cref[k] != crun[k]:
            raise SystemExit(f"staircase: the runs differ in [{k}]")
    np.testing.assert_array_equal(a["seed"], b["seed"])
    np.testing.assert_array_equal(a["step"], b["step"])
    ta, ca = emergence_times(a["step"], a["skill"], cref["analysis"]["threshold"])
    tb, cb = emergence_times(b["step"], b["skill"], crun["analysis"]["threshold"])
    both = ~ca & ~cb
    rel = np.abs(tb[both] / ta[both] - 1.0)
    out = {
        "reference": ref_dir,
        "run": run_dir,
        "learned_by_both": int(both.sum()),
        "directions": int(both.size),
        "learned_by_one_only": int(np.sum(ca != cb)),
        "median_rel_dev": float(np.median(rel)),
        "max_rel_dev": float(np.max(rel)),
        "n_above_1pct": int(np.sum(rel > 0.01)),
        "final_loss_reference": a["loss"][:, -1].tolist(),
        "final_loss": b["loss"][:, -1].tolist(),
    }
    print(
        f"emergence steps of {run_dir} against {ref_dir}: {out['learned_by_both']} of {out['directions']} directions "
        f"learned by both ({out['learned_by_one_only']} by one only); relative deviation median {out['median_rel_dev']:.2e}, "
        f"max {out['max_rel_dev']:.2e} ({out['n_above_1pct']} above 1%); final loss {out['final_loss']} vs "
        f"{out['final_loss_reference']}"
    )
    return out


def loss32() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)  # this script's own float64 reference
    import jax.numpy as jnp

    from scaling_sgd._src import model as mdl
    from scaling_sgd._src.hermite import activation
    from scaling_sgd._src.model import teacher_coefficients

    print("float32 loss at learned states, relative error against float64 of the same float32 state")
    print(f"  {'P=m':>5} {'loss':>10} {'plain f32':>11} {'logged f32':>11}")
    for P in (32, 256):
        h4 = activation("h4")
        model = mdl.Model(d=10_000, P=P, m=P, teacher=h4, student=h4)
        a = teacher_coefficients({"P": P, "a": None}, [1.0])[0]
        rng = np.random.default_rng(0)
        plain = jax.jit(lambda C, a, model=model, P=P: mdl.population_loss(model, C @ C.T, C[:, :P], a))
        logged = jax.jit(lambda C, a, model=model: mdl.population_loss_accurate(model, C, a))
        for eps in (1e-2, 3e-3, 1e-3, 3e-4):
            C = np.zeros((P, 2 * P))
            C[np.arange(P), np.arange(P)] = np.sqrt(a)
            C += eps * rng.standard_normal(C.shape) * np.sqrt(a)[:, None] / np.sqrt(2 * P)
            C32, a32 = jnp.asarray(C, jnp.float32), jnp.asarray(a, jnp.float32)
            C64, a64 = C32.astype(jnp.float64), a32.astype(jnp.float64)
            ref = float(mdl.population_loss(model, C64 @ C64.T, C64[:, :P], a64))
            e_plain = float(plain(C32, a32)) / ref - 1
            e_logged = float(logged(C32, a32)) / ref - 1
            print(f"  {P:5d} {ref:10.2e} {e_plain:+11.2e} {e_logged:+11.2e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slope")
    s.add_argument("run_dir")
    s.add_argument("--hi", type=int, default=26)
    s = sub.add_parser("staircase")
    s.add_argument("reference")
    s.add_argument("run_dir")
    sub.add_parser("loss32")
    args = ap.parse_args(argv)
    if args.cmd == "slope":
        slope(args.run_dir, args.hi)
    elif args.cmd == "staircase":
        staircase(args.reference, args.run_dir)
    else:
        loss32()
    return 0


if __name__ == "__main__":
    sys.exit(main())
