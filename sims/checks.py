"""The rows of the validation table: a prediction beside its fit, whether they agree, and
whether the row can discriminate at all; and the words the notes use for numbers."""

from __future__ import annotations

import math

import numpy as np

from scaling_sgd.analysis.fit import MIN_SEEDS, caveats
from scaling_sgd.analysis.output import LOSS_EXPONENT_MIN_P
from scaling_sgd.analysis.theory import additive_loss_exponent, exponent


def verdict(predicted: float, lo: float, hi: float, tol: float = 0.0, fitted: float | None = None) -> bool | None:
    """Does the prediction agree with the fit?  ``True`` when ``predicted`` lies in the
    interval ``[lo, hi]`` widened by ``tol`` on each side; ``None`` when there is nothing
    to judge: no prediction, an undefined interval (too few finite bootstrap resamples),
    or, when ``fitted`` is given, no fitted value (a finite interval around a fit that
    failed is not a result)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or not math.isfinite(predicted):
        return None
    if fitted is not None and not math.isfinite(fitted):
        return None
    return bool(lo - tol <= predicted <= hi + tol)


def check(
    quantity: str,
    predicted: float,
    fitted: float,
    lo: float,
    hi: float,
    note: str = "",
    tol: float = 0.0,
    why: str = "",
    above: bool = False,
    discriminates: bool = True,
    scope: str = "",
) -> dict:
    """One row of the validation table.

    ``why`` is the short reason shown in the table when the row does not agree (the
    notes hold the evidence).  ``above=True`` makes the prediction one-sided
    (``quantity > predicted``: agrees when the whole interval lies above it).
    ``discriminates=False`` marks a row whose test cannot tell the prediction from its
    alternatives (too few directions, a two-point fit, too few seeds): it is shown, but
    not counted as support; ``scope`` says why in a few words (``"finite-P illustration"``,
    ``"beyond the theorem (k = 3, odd)"``, ...).
    """
    agrees = verdict(predicted, lo, hi, tol, fitted=fitted)
    if above and agrees is not None:
        agrees = bool(lo > predicted)
    return {
        "quantity": quantity,
        "predicted": float(predicted),
        "above": bool(above),
        "fitted": float(fitted),
        "lo": float(lo),
        "hi": float(hi),
        "tol": float(tol),
        "agrees": agrees,
        "note": note,
        "why": why,
        "discriminates": bool(discriminates),
        "scope": scope,
    }


# -- what a row can test ---------------------------------------------------------------------
# The few reasons a row cannot discriminate, as the ``scope`` text of :func:`check`
# (docs/model.md §3, "Where the formulas hold").
BEYOND_K3 = "beyond the theorem: k = 3, an odd activation (the theorem assumes an even one with k > 2)"
BEYOND_K2 = "beyond the theorem: k = 2 (the theorem assumes an even activation with k > 2)"


def beyond_theorem(k: int | None) -> str:
    """The scope text of a row whose activation lies outside the theorem's assumption (an
    even activation with information exponent ``k > 2``); ``""`` inside it."""
    if k == 2:
        return BEYOND_K2
    if k == 3:
        return BEYOND_K3
    if k is None or k < 2:
        return f"beyond the theorem: k = {k} (the theorem assumes an even activation with k > 2)"
    if k % 2 == 1:
        return f"beyond the theorem: k = {k}, an odd activation (the theorem assumes an even one with k > 2)"
    return ""


def finite_p(P: int, what: str = "the loss exponent") -> str:
    """Scope text of a row measured at ``P`` directions, too few for ``what`` to tell beta
    apart (``P < LOSS_EXPONENT_MIN_P``, docs/model.md §3); ``""`` at larger P."""
    if P >= LOSS_EXPONENT_MIN_P:
        return ""
    return f"P = {P}: finite-P illustration ({what} tells beta apart only for P >= {LOSS_EXPONENT_MIN_P})"


def few(seeds: int | None = None, points: int | None = None, fit=None) -> list[str]:
    """Why an interval is too coarse to discriminate: fewer than ``MIN_SEEDS`` seeds, or a
    fit through two points (:func:`scaling_sgd.analysis.fit.caveats` for a
    :class:`~scaling_sgd.analysis.fit.PowerLawFit`, else from ``seeds`` and ``points``)."""
    out = list(caveats(fit, seeds)) if fit is not None else []
    if fit is None and seeds is not None and seeds < MIN_SEEDS:
        out.append(f"{seeds} seeds < {MIN_SEEDS}")
    if points is not None and points <= 2 and "2 points" not in out:
        out.append(f"{points}-point fit")
    return out


def scope(*reasons) -> dict:
    """``discriminates`` and ``scope`` for :func:`check` from the reasons a row cannot
    discriminate (strings or lists of strings; empty ones ignored): ``check(..., **scope(...))``."""
    flat = []
    for r in reasons:
        flat += [x for x in (r if isinstance(r, (list, tuple)) else [r]) if x]
    return {"discriminates": not flat, "scope": "; ".join(dict.fromkeys(flat))}


# A loss row discriminates beta only where the additive model's exponent at the simulated
# P (over the loss fit window) lies this close to the asymptote (docs/model.md §3: ~0.05 at
# P >= 256); experiments 09 and 13 use it.
ASYMPTOTE_TOL = 0.1


def additive_near_asymptote(beta: float, P: int, sigma: float, asymptote: float) -> tuple[float, bool]:
    """The additive model's loss exponent at ``P`` over the loss fit window (2nd to
    ``max(P // 10, 4)``-th median emergence, log scatter ``sigma``), and whether it lies
    within :data:`ASYMPTOTE_TOL` of ``asymptote``: whether a loss row at this P can tell
    beta apart."""
    additive = additive_loss_exponent(beta, P, 1.0, sigma, n_seeds=200)
    return additive, math.isfinite(additive) and abs(additive - asymptote) <= ASYMPTOTE_TOL


def theory_value(name: str, beta: float, k: int | None = None) -> tuple[float, str]:
    """The theory exponent ``name`` (:func:`scaling_sgd.analysis.theory.exponent`) for a
    row: ``(value, "")``, or ``(nan, reason)`` where the paper predicts no power law
    (``beta <= 1/2``): such a row is shown with its reason, never judged."""
    value, why = exponent(name, beta, k)
    return (math.nan, why) if value is None else (float(value), "")


# -- words for numbers in the notes ----------------------------------------------------------
def trend(values) -> str:
    """How a sequence changes along its order: ``"rises"``, ``"falls"`` (strictly
    monotone), ``"does not change"`` or ``"is not monotone"`` (non-finite entries ignored)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return "is undetermined"
    dv = np.diff(v)
    if np.all(dv > 0):
        return "rises"
    if np.all(dv < 0):
        return "falls"
    if np.all(dv == 0):
        return "does not change"
    return "is not monotone"


def fmt_steps(x: float) -> str:
    """A step count with thousands separators, or ``inf``."""
    return "inf" if not math.isfinite(x) else f"{x:,.0f}"


def sizes_label(P: int, m: int) -> str:
    """``P=256`` in a row's name, ``P=256, m=512`` when the width is not ``P``."""
    return f"P={P}" + ("" if m == P else f", m={m}")
