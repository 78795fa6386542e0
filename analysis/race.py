"""The race model: a parameter-free finite-size theory of a run's emergence steps.

Each neuron ``i`` escapes towards direction ``p`` at the time a lone neuron would, from its
own initial cosine ``M_ip(0)`` and norm ``r2_i(0)``, under the population flow of one
direction with coefficient ``a_p`` (:func:`.escape.flow_escape_time`; to leading order
``tau_ip = M_ip(0)^-(k-2) / (k (k-2) c_k^2 a_p)``, ``1 / (8 a_p M_ip(0)^2)`` for ``h_4``).
The escapes then happen in time order, and each one takes its neuron and its direction
out of the race (:func:`.escape.assign_neurons`, rule ``"order"``): a neuron that has
learned a direction is not free for another.  A direction's predicted time is the escape
time of the neuron that wins it; a direction left without a neuron (``m < P``) is never
learned.  Flow time ``tau`` is converted to SGD steps by the run's own clock
(``tau = lr * tau_over_lr(step)``, :mod:`scaling_sgd._src.schedules`).

The initial students are the run's own: recomputed from its config and seeds
(:meth:`scaling_sgd.Result.initial_observables`), so the prediction is for the very
replicas that ran, with no fitted parameter.  docs/model.md §3 gives the derivation and the
limits: the model ignores the interaction of neurons before their escape (a neuron's
cosines with the other directions, and the other neurons' pull on the same direction), so
it is a finite-width, finite-``d`` theory of the additive picture, not of the dynamics
after the escapes.

Loss, plateau and frontier follow from the predicted steps by the additive model: the loss
is ``K(1) sum_p a_p^2`` over the directions not yet learned.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling_sgd._src.schedules import tau_over_lr

from .escape import assign_neurons, flow_escape_time, kernel_coeffs, pair_escape_times

__all__ = ["RacePrediction", "race", "tau_to_steps"]


@dataclasses.dataclass(frozen=True)
class RacePrediction:
    """The race model's prediction for the replicas of one run.

    Attributes:
        steps: ``(R, P)`` predicted emergence step of each direction (``inf``: never learned,
            or, with a decaying schedule, not within the run).
        tau: ``(R, P)`` the same in flow time ``tau``.
        neuron: ``(R, P)`` the neuron that wins each direction (``-1``: none).
        a: ``(R, P)`` teacher coefficients.
        K1: ``K(1) = sum_j c_j^2`` of the activation.
    """

    steps: np.ndarray
    tau: np.ndarray
    neuron: np.ndarray
    a: np.ndarray
    K1: float

    def loss(self, step) -> np.ndarray:
        """``(R, T)`` additive loss ``K(1) sum_p a_p^2 1{step < T_p}`` at the steps ``(T,)``."""
        step = np.asarray(step, np.float64)
        return self.K1 * np.sum(self.a[:, None, :] ** 2 * (step[:, None] < self.steps[:, None, :]), axis=-1)

    @property
    def plateau(self) -> np.ndarray:
        """``(R,)`` the loss the run ends on if it runs for ever: ``K(1) sum a_p^2`` over the
        directions no neuron wins."""
        return self.K1 * np.sum(np.where(self.neuron < 0, self.a**2, 0.0), axis=1)


def tau_to_steps(tau_over_lr_value, schedule: str, steps: int, n0: float = 0.0) -> np.ndarray:
    """SGD steps ``t`` with ``tau_over_lr(t) = tau_over_lr_value`` on the run's clock
    (:func:`scaling_sgd._src.schedules.tau_over_lr`).

    The constant schedule's clock is the step itself (any value, also past the run).  A
    decaying schedule's clock is inverted on ``[0, steps]``; a value past the run's end gives
    ``inf``.
    """
    x = np.asarray(tau_over_lr_value, np.float64)
    if schedule == "constant":
        return x.copy()
    grid = np.concatenate([[0.0], np.geomspace(1e-3, float(steps), 20_001)])
    clock = tau_over_lr(schedule, grid, steps, n0)
    inside = x <= clock[-1]
    t = np.exp(np.interp(np.log(np.maximum(x, 1e-300)), np.log(np.maximum(clock[1:], 1e-300)), np.log(grid[1:])))
    return np.where(x <= 0.0, 0.0, np.where(inside & np.isfinite(x), t, np.inf))


def race(result, observable: str | None = None, threshold: float | None = None) -> RacePrediction:
    """The race model's emergence steps for the replicas of ``result`` (a
    :class:`scaling_sgd.Result`), from their own initial students.

    Args:
        result: a run whose student and teacher share their activation, with information
            exponent ``k > 2``.
        observable, threshold: the emergence criterion (default: the run's ``[analysis]``).
    Raises:
        ValueError: different student and teacher activations, or ``k <= 2`` (no escape
            from a small overlap: the race model does not apply).
    """
    from scaling_sgd import activation

    cfg = result.config
    t, s = cfg["teacher"], cfg["student"]
    if s.get("activation") not in (None, t["activation"]):
        raise ValueError("race: the student's activation differs from the teacher's; accepted: one activation for both")
    act = activation(t["activation"], t.get("activation_degree", 12))
    if act.info_exponent is None or act.info_exponent <= 2:
        raise ValueError(f"race: information exponent k = {act.info_exponent}; accepted: k > 2 (escape from a small overlap)")
    observable, threshold = result.criterion(observable, threshold)
    coeffs = kernel_coeffs(t["activation"], t.get("activation_degree", 12))
    obs0 = result.initial_observables()
    M0 = np.asarray(obs0["overlap"], np.float64)  # (R, m, P)
    # an even sigma escapes from either sign; an odd component makes only a positive cosine grow
    M0 = np.maximum(M0, 0.0) if any(c != 0.0 for j, c in enumerate(coeffs) if j % 2 == 1) else np.abs(M0)
    r2 = np.asarray(obs0["norm2"], np.float64)  # (R, m)
    a = np.asarray(result.a, np.float64)
    cost = pair_escape_times(M0, r2[:, :, None], a[:, None, :], coeffs, threshold, observable)
    who = assign_neurons(cost, "order")
    have = who >= 0
    idx = np.where(have, who, 0)
    m0 = np.where(have, np.take_along_axis(M0, idx[:, None, :], 1)[:, 0], 0.0)
    r2w = np.take_along_axis(r2, idx, 1)
    tau = np.where(have, flow_escape_time(m0, r2w, a, coeffs, threshold, observable), np.inf)  # the winners, at full accuracy
    lr = np.asarray(result.lr, np.float64)[:, None]
    tr = cfg["train"]
    steps = tau_to_steps(tau / lr, tr.get("schedule", "constant"), tr["steps"], tr.get("schedule_n0", 0.0))
    return RacePrediction(steps=steps, tau=tau, neuron=np.where(have, who, -1), a=a, K1=float(np.sum(np.square(coeffs))))
