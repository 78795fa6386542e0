"""The scalar W-method (``flow.solver = "rosw"``): its rate is the Jacobian's on a learned
neuron's tangent directions, it converges as rtol falls to the RKC solution, and through
the engine it counts two gradients a step and locates the same emergences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src.engines import flow, flow_solvers, rkc

from helpers import small_config, spec_parts

TS = np.concatenate([[0.0], np.geomspace(0.1, 2000.0, 30)])


@pytest.mark.parametrize("activation", ["h4", "h3", {2: 0.5, 3: 0.4, 4: 0.7}])
def test_rate_is_the_jacobian_on_the_tangent_directions_of_an_aligned_neuron(activation):
    """One neuron ``c = 0.7 e_1`` along ``theta_1`` (P = 3, m = 1: coordinates ``theta_1..3``
    and the neuron's own direction): the block Jacobian of the flow (``jax.jacfwd`` of the
    gradient row) does not mix ``c``'s direction with the others, and acts as ``-alpha`` on the
    direction off every ``theta``.  On the other teacher directions it is ``-alpha`` too for a
    single Hermite degree >= 3 (``K''(0) = 0``); a degree-2 part adds ``a_q K''(0)``, which
    ``alpha`` misses (where the scalar W-method loses its edge)."""
    static, reps, _ = spec_parts(
        small_config(**{"teacher.P": 3, "student.m": 1, "data.d": 16, "train.dtype": "float64", "teacher.activation": activation})
    )
    a = jnp.asarray(reps.a[0])
    C = jnp.zeros((1, 4), jnp.float64).at[0, 0].set(0.7)
    g, alpha = flow.gradient_and_rate(static.model, C, a)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(flow.gradient(static.model, C, a)))
    J = np.asarray(flow.block_jacobian(static.model, C, a))[0]
    al = float(alpha[0])
    assert al > 0.1  # a stiff mode, not a vacuous zero
    np.testing.assert_allclose([J[0, 1:], J[1:, 0]], 0.0, atol=1e-12)
    np.testing.assert_allclose(J[1:, 1:] - np.diag(np.diag(J[1:, 1:])), 0.0, atol=1e-12)
    assert abs(J[3, 3] + al) <= 1e-12 * al
    teacher = np.diag(J)[1:3]
    if isinstance(activation, str):
        np.testing.assert_allclose(teacher, -al, rtol=1e-12)
    else:
        assert np.all(np.abs(teacher / -al - 1) > 0.05), (teacher, al)


def _small():
    cfg = small_config(**{"data.d": 30, "teacher.P": 3, "student.m": 4, "teacher.activation": "h4", "train.dtype": "float64"})
    static, reps, _ = spec_parts(cfg)
    return static, jnp.asarray(reps.a[0]), flow.init(static, 3, 0.3)


def test_rosw_converges_to_the_rkc_solution_as_rtol_falls():
    """A staircase through plateaus and stiff learned phases: the W-method's outputs approach
    RKC's rtol = 1e-9 solution as its rtol falls (second order in ``h``: the error falls by
    more than 10 over two decades of rtol) and meet it to 1e-4 at rtol = 1e-6."""
    static, a, C0 = _small()
    ts = jnp.asarray(TS)
    F = flow.vector_field(static.model)
    y_ref, st = jax.jit(lambda c: rkc.solve(F, c, ts, a, rkc.RKCSettings(rtol=1e-9, atol=1e-12)))(C0)
    assert int(st.k) == len(TS) and not bool(st.failed)
    f = lambda c: F(c, a)  # noqa: E731

    def jac(c):
        g, alpha = flow.gradient_and_rate(static.model, c, a)
        return -g, alpha

    errs = []
    for rtol in (1e-4, 1e-6):
        ys, failed, _ = jax.jit(lambda c, r=rtol: flow_solvers.solve(flow_solvers.ROSW(r, r * 1e-3), f, jac, c, ts))(C0)
        assert not bool(failed)
        errs.append(float(jnp.max(jnp.abs(ys - y_ref))))
    assert errs[1] < 1e-4 and errs[1] < 0.1 * errs[0], errs
    loss = jax.vmap(lambda c: 2 * flow.loss(static.model, c, a))(y_ref)
    assert loss[-1] < 0.5 * loss[0]  # it learns: not a trivial plateau


def _run(solver: str, rtol: float):
    cfg = {
        "teacher": {"P": 8, "beta": 1.0, "activation": "h4"},
        "student": {"m": 8},
        "data": {"d": 1000},
        "train": {"engine": "flow", "steps": 20_000_000, "lr": 1e-3, "seed": 0, "dtype": "float64", "progress": False},
        "log": {"points": 40},
        "flow": {"solver": solver, "rtol": rtol},
    }
    return ss.run(cfg).metrics


def test_engine_with_rosw_counts_two_gradients_a_step_and_finds_the_rkc_emergences():
    """``flow.solver = "rosw"`` through the engine: ``solver_fevals = 2 steps + 1`` (the
    first-same-as-last gradient at the start), the emergence steps it locates between its
    steps within 1e-3 of RKC's at rtol 1e-8 (every direction RKC learns, and no other), and
    the logged loss within 1e-3 (or 1e-12 once all is learned)."""
    ref, x = _run("rkc", 1e-8), _run("rosw", 1e-6)
    assert int(x["solver_fevals"][0]) == 2 * int(x["solver_steps"][0]) + 1
    cr, cx = np.asarray(ref["crossing_step"][0]), np.asarray(x["crossing_step"][0])
    assert np.isfinite(cr).sum() >= 4  # several emergences within the run
    np.testing.assert_array_equal(np.isfinite(cx), np.isfinite(cr))
    both = np.isfinite(cr)
    np.testing.assert_allclose(cx[both], cr[both], rtol=1e-3)
    np.testing.assert_allclose(x["loss"], ref["loss"], rtol=1e-3, atol=1e-12)  # the loss ends near 1e-16
