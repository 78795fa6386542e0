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
replicas that ran, with no fitted parameter; :func:`race_from_config` gives the same
prediction for a config before (or instead of) running it.  docs/model.md §3 gives the
derivation and the limits: the model ignores the interaction of neurons before their
escape (a neuron's cosines with the other directions, and the other neurons' pull on the
same direction), so it is a finite-width, finite-``d`` theory of the additive picture, not
of the dynamics after the escapes.

Loss, plateau and frontier follow from the predicted steps by the additive model: the loss
is ``K(1) sum_p a_p^2`` over the directions not yet learned.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling_sgd._src.schedules import tau_over_lr

from .escape import assign_neurons, flow_escape_time, kernel_coeffs, pair_escape_times

__all__ = ["RacePrediction", "race", "race_from_config", "tau_to_steps"]


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


def race(result, observable: str | None = None, threshold: float | None = None, within_run: bool = False) -> RacePrediction:
    """The race model's emergence steps for the replicas of ``result`` (a
    :class:`scaling_sgd.Result`), from their own initial students.

    Args:
        result: a run whose student and teacher share their activation, with information
            exponent ``k > 2``.
        observable, threshold: the emergence criterion (default: the run's ``[analysis]``).
        within_run: predict only the directions won by the end of the run
            (``train.steps``); the others get ``steps = inf`` and ``neuron = -1``.  For
            ``sigma = c_k h_k`` the pairs that cannot escape by then (a bound from the
            single-direction flow, :func:`_escape_lower_bound`) leave the race before any
            quadrature, which is what makes ``m P`` in the millions affordable; the
            directions won within the run get the steps of the full race, up to the
            ``1e-4`` with which :func:`.escape.pair_escape_times` ranks near ties.
    Raises:
        ValueError: different student and teacher activations, or ``k <= 2`` (no escape
            from a small overlap: the race model does not apply).
    """
    observable, threshold = result.criterion(observable, threshold)
    return _race(result.config, result.initial_observables, result.a, result.lr, observable, threshold, within_run)


def race_from_config(
    config, observable: str | None = None, threshold: float | None = None, within_run: bool = False
) -> RacePrediction:
    """The race model's emergence steps for the replicas a config would run, without running
    it: :func:`race` of that run, from the same initial students (the config's seeds) and
    the same teacher and clock.

    The initial students are computed with two settings that leave them unchanged: a log grid
    of two points (the initial observables keep a buffer of ``log.points`` copies of the
    ``(R, m, P)`` cosines, 13 GB at ``P = m = 1024`` with 8 seeds and 200 points) and, for
    the ``flow`` engine, the ``ros2`` solver (``rkc``'s start estimates the spectral radius
    with 41 gradient evaluations, ``O(m^2 (P + m))`` each; a diffrax solver's start is the
    whole solve).  The start of the flow is the engine's, not the solver's.

    Args:
        config: a config (a dict, resolved or not, or a TOML path), as :func:`scaling_sgd.run`
            takes it.
        observable, threshold, within_run: as :func:`race`.
    Raises:
        ValueError: as :func:`race`; ``ConfigError`` on a bad config.
    """
    from scaling_sgd._src.api import Result, _as_config
    from scaling_sgd._src.spec import build_spec

    cfg = _as_config(config)
    spec = build_spec(cfg)
    start = {**cfg, "log": {**cfg["log"], "points": 2}}
    if cfg["train"]["engine"] == "flow":
        start["flow"] = {**cfg["flow"], "solver": "ros2"}
    # Results with no metrics: their criterion and initial students are the run's own
    observable, threshold = Result(spec.config, {}, {}).criterion(observable, threshold)
    unrun = Result(start, {}, {})
    return _race(spec.config, unrun.initial_observables, spec.replicas.a, spec.replicas.lr, observable, threshold, within_run)


def _escape_lower_bound(M0, r2, a, coeffs, threshold: float, observable: str):
    """A lower bound on every pair's flow escape time for ``sigma = c_k h_k`` (``None`` for
    any other activation): with ``K(m) = c^2 m^k`` the cosine obeys
    ``dm/dtau <= k c^2 a m^(k-1)``, so reaching ``m_c`` takes at least
    ``(m0^(2-k) - m_c^(2-k)) / (k (k-2) c^2 a)``.  ``r2`` relaxes towards ``a m^k``, which
    grows with ``m``, so ``r2 <= max(r2_0, a m^k)`` and ``skill = r2 m^k / a`` reaches the
    threshold only once ``m^k >= min(threshold a / r2_0, threshold^(1/2))``; ``alignment``
    only once ``m^2 >= threshold``.  Shapes: ``M0`` ``(m, P)``, ``r2`` ``(m,)``, ``a``
    ``(P,)``."""
    nz = np.flatnonzero(coeffs)
    if nz.size != 1:
        return None
    k, c2 = int(nz[0]), float(coeffs[nz[0]]) ** 2
    if observable == "alignment":
        mck = np.full((M0.shape[0], a.size), threshold ** (k / 2.0))
    else:
        mck = np.minimum(threshold * a[None, :] / r2[:, None], np.sqrt(threshold))
    e = (k - 2.0) / k  # m^(2-k) = (m^k)^(-e)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero cosine or coefficient: never (nan or inf)
        return np.maximum(M0 ** (2.0 - k) - mck ** (-e), 0.0) / (k * (k - 2.0) * c2 * a[None, :])


def _race(cfg, initial, a, lr, observable: str, threshold: float, within_run: bool = False) -> RacePrediction:
    """The race of the resolved config ``cfg`` from ``initial()``, its initial observables
    (``overlap`` ``(R, m, P)``, ``norm2`` ``(R, m)``; called once the config is known to
    fit the model), teacher coefficients ``a`` ``(R, P)`` and learning rates ``lr`` ``(R,)``."""
    from scaling_sgd import activation

    t, s = cfg["teacher"], cfg["student"]
    if s.get("activation") not in (None, t["activation"]):
        raise ValueError("race: the student's activation differs from the teacher's; accepted: one activation for both")
    act = activation(t["activation"], t.get("activation_degree", 12))
    if act.info_exponent is None or act.info_exponent <= 2:
        raise ValueError(f"race: information exponent k = {act.info_exponent}; accepted: k > 2 (escape from a small overlap)")
    coeffs = kernel_coeffs(t["activation"], t.get("activation_degree", 12))
    obs0 = initial()
    M0 = np.asarray(obs0["overlap"], np.float64)  # (R, m, P)
    # an even sigma escapes from either sign; an odd component makes only a positive cosine grow
    M0 = np.maximum(M0, 0.0) if any(c != 0.0 for j, c in enumerate(coeffs) if j % 2 == 1) else np.abs(M0)
    r2 = np.asarray(obs0["norm2"], np.float64)  # (R, m)
    a = np.asarray(a, np.float64)
    lr = np.asarray(lr, np.float64)
    tr = cfg["train"]
    schedule, n0 = tr.get("schedule", "constant"), tr.get("schedule_n0", 0.0)
    tau_end = lr * float(tau_over_lr(schedule, np.asarray(float(tr["steps"])), tr["steps"], n0))  # (R,)
    if within_run:
        keep = np.ones(M0.shape, bool)
        for r in range(M0.shape[0]):  # one replica at a time: the bound's temporaries are (m, P)
            lb = _escape_lower_bound(M0[r], r2[r], a[r], coeffs, threshold, observable)
            if lb is not None:
                keep[r] = lb <= 1.01 * tau_end[r]  # a margin over the quadrature error of the escape times
        r_, i_, p_ = np.nonzero(keep)
        cost = np.full(M0.shape, np.inf)
        cost[r_, i_, p_] = pair_escape_times(M0[r_, i_, p_], r2[r_, i_], a[r_, p_], coeffs, threshold, observable)
    else:
        cost = pair_escape_times(M0, r2[:, :, None], a[:, None, :], coeffs, threshold, observable)
    who = assign_neurons(cost, "order")
    have = who >= 0
    idx = np.where(have, who, 0)
    m0 = np.take_along_axis(M0, idx[:, None, :], 1)[:, 0]
    r2w = np.take_along_axis(r2, idx, 1)
    # the winners, at full accuracy; in slices, as the quadrature holds 20001 points a pair
    tau = np.full(a.shape, np.inf)
    rows, cols = np.nonzero(have)
    for j in range(0, rows.size, 256):
        sl = (rows[j : j + 256], cols[j : j + 256])
        tau[sl] = flow_escape_time(m0[sl], r2w[sl], a[sl], coeffs, threshold, observable)
    if within_run:
        late = ~(tau <= tau_end[:, None])
        tau, have = np.where(late, np.inf, tau), have & ~late
    steps = tau_to_steps(tau / lr[:, None], schedule, tr["steps"], n0)
    return RacePrediction(steps=steps, tau=tau, neuron=np.where(have, who, -1), a=a, K1=float(np.sum(np.square(coeffs))))
