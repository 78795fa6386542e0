"""Double-word ("float-float") arithmetic and an error-free Gram product, in any float type.

Why: the exact loss ``r2^T K(G) r2 - 2 r2^T K(M) a + a^T K(I) a`` is a sum of ``O(1)`` terms
that cancel to the loss.  Near a learned state the loss is ``1e-6`` or less, and in float32
both the Gram blocks ``W W^T``, ``W theta^T`` (rounded to ``2^-24`` of ``|w_i| |w_j|``) and the
sum lose every digit of it.  A float32 run cannot use float64 inside ``jit`` unless JAX's
process-wide x64 mode is on, so the loss of such a run is evaluated here in *double-word*
arithmetic: a number is an unevaluated sum ``hi + lo`` of two working-precision numbers
(``|lo| <= ulp(hi)/2``), which carries about ``2 x 24`` bits in float32.

* :func:`gram` computes ``X Y^T`` of working-precision matrices to about ``2^-40`` of
  ``|x_i| |y_j|`` with ordinary matrix products (Ozaki's error-free splitting): each row is cut
  into slices of ``beta`` bits on a common per-row grid, so that every product of two slices
  and every partial sum of ``n`` of them is an integer multiple of one unit below ``2^24``:
  every slice-by-slice matrix product is *exact* in the working precision, whatever the
  summation order of the backend, and the exact partial products are added in double-word.
* :class:`DW` numbers and the operations on them (Dekker, Knuth, Joldes-Muller-Popescu):
  ``two_sum``, ``two_prod`` (Veltkamp splitting: no fused multiply-add needed), addition,
  multiplication, division, square root, and a pairwise (tree) sum of an array.

Costs: ``S (S + 1) / 2`` matrix products for ``S = ceil(64 / beta) - 2`` slices
(``beta = (24 - ceil(log2 n)) // 2`` bits in float32; 36 products at ``n = 512``), and a few
tens of elementwise operations per Gram entry.  Used at log points only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .lazy import lazy

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = ["DW", "dw", "two_sum", "two_prod", "add", "mul", "div", "sqrt", "total", "gram", "value"]


class DW(NamedTuple):
    """A double-word number ``hi + lo`` (arrays of one shape and float type)."""

    hi: jax.Array
    lo: jax.Array


def dw(x, dtype=None) -> DW:
    """``x`` as a double-word number.  A Python float is split into its two leading
    working-precision words (so a float64 constant keeps ~48 bits in float32)."""
    if isinstance(x, float | int):
        dt = np.dtype(dtype or np.float32)
        hi = np.asarray(x, dt)  # NumPy on the host: a constant, also inside jit
        lo = np.asarray(float(x) - float(hi), dt)  # the rest, computed in float64
        return DW(jnp.asarray(hi), jnp.asarray(lo))
    x = jnp.asarray(x, dtype)
    return DW(x, jnp.zeros_like(x))


def value(x: DW):
    """Round a double-word number to the working precision."""
    return x.hi + x.lo


def _fast_two_sum(a, b):
    """``a + b = s + e`` exactly, for ``|a| >= |b|`` (or ``a = 0``)."""
    s = a + b
    return s, b - (s - a)


def two_sum(a, b):
    """``a + b = s + e`` exactly (Knuth), any ``a, b``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    """Veltkamp: ``a = hi + lo`` with each half of the mantissa, exactly."""
    nm = jnp.finfo(a.dtype).nmant + 1
    c = (2.0 ** ((nm + 1) // 2) + 1.0) * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    """``a b = p + e`` exactly (Dekker), without a fused multiply-add."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add(x: DW, y: DW) -> DW:
    """``x + y`` (accurate double-word sum, relative error ``~3 u^2``)."""
    s, e = two_sum(x.hi, y.hi)
    t, f = two_sum(x.lo, y.lo)
    s, e = _fast_two_sum(s, e + t)
    return DW(*_fast_two_sum(s, e + f))


def neg(x: DW) -> DW:
    return DW(-x.hi, -x.lo)


def mul(x: DW, y: DW) -> DW:
    """``x y`` (relative error ``~5 u^2``)."""
    p, e = two_prod(x.hi, y.hi)
    e = e + (x.hi * y.lo + x.lo * y.hi)
    return DW(*_fast_two_sum(p, e))


def div(x: DW, y: DW) -> DW:
    """``x / y`` (one correction step of the working-precision quotient)."""
    q1 = x.hi / y.hi
    r = add(x, neg(mul(y, DW(q1, jnp.zeros_like(q1)))))
    q2 = r.hi / y.hi
    return DW(*_fast_two_sum(q1, q2))


def sqrt(x: DW) -> DW:
    """``sqrt(x)`` for ``x >= 0`` (one Newton correction; ``sqrt(0) = 0``)."""
    s = jnp.sqrt(x.hi)
    p, e = two_prod(s, s)
    r = add(x, neg(DW(p, e)))
    c = jnp.where(s > 0, r.hi / (2.0 * jnp.where(s > 0, s, 1.0)), 0.0)
    return DW(*_fast_two_sum(s, c))


def total(x: DW) -> DW:
    """Sum of all entries, by pairwise double-word additions (error ``~u^2 log n``)."""
    hi, lo = x.hi.reshape(-1), x.lo.reshape(-1)
    n = hi.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    hi = jnp.pad(hi, (0, size - n))
    lo = jnp.pad(lo, (0, size - n))
    while hi.shape[0] > 1:
        h = hi.shape[0] // 2
        hi, lo = add(DW(hi[:h], lo[:h]), DW(hi[h:], lo[h:]))
    return DW(hi[0], lo[0])


def _slice_bits(n: int, dtype) -> tuple[int, int]:
    """``(beta, S)``: bits per slice so that ``n`` products of two slices add exactly, and the
    number of slices that leaves ``X Y^T`` to ``2^-40`` of ``|x| |y|`` (at most 2^-(S+2) beta n)."""
    nm = jnp.finfo(dtype).nmant + 1
    beta = (nm - max(1, math.ceil(math.log2(max(n, 2))))) // 2
    if beta < 2:
        raise ValueError(f"gram: inner dimension {n} is too large for an error-free split in {jnp.dtype(dtype).name}")
    return beta, max(2, math.ceil(64 / beta) - 2)


def _slices(X, beta: int, S: int):
    """``X = sum_s X_s + tail``: ``X_s`` integer multiples of ``2^(e_i - s beta)`` (row ``i``,
    ``|x_ij| < 2^e_i``) with magnitude ``<= 2^beta`` units.  Every step is exact (powers of two)."""
    _, e = jnp.frexp(jnp.max(jnp.abs(X), axis=-1, keepdims=True))
    out, rem = [], X
    for s in range(1, S + 1):
        unit = jnp.ldexp(jnp.ones_like(rem[..., :1]), e - s * beta)
        q = jnp.round(rem / unit) * unit
        out.append(q)
        rem = rem - q
    return out


def gram(X, Y=None) -> DW:
    """``X Y^T`` ``(m, k)`` of ``X`` ``(m, n)``, ``Y`` ``(k, n)`` (default ``Y = X``) in double-word,
    to about ``2^-40 |x_i| |y_j|``: the sum of the exact slice products ``X_s Y_t^T``,
    ``s + t <= S + 1``, smallest first.  With ``Y = X``, ``X_t X_s^T`` is the transpose of
    ``X_s X_t^T`` bit for bit (both are exact), so each pair is multiplied once."""
    dt = X.dtype
    n = X.shape[-1]
    beta, S = _slice_bits(n, dt)
    xs = _slices(X, beta, S)
    ys = xs if Y is None else _slices(Y, beta, S)
    acc, products = None, {}
    hp = jax.lax.Precision.HIGHEST  # the slices have <= beta + 1 bits: exact in any float32 mode
    for level in range(S + 1, 1, -1):  # s + t = level, smallest contributions first
        for s in range(max(1, level - S), min(S, level - 1) + 1):
            t = level - s
            if Y is None and s > t:
                p = products[(t, s)].T
            else:
                p = products[(s, t)] = jnp.matmul(xs[s - 1], ys[t - 1].T, precision=hp)
            acc = DW(p, jnp.zeros_like(p)) if acc is None else add(acc, DW(p, jnp.zeros_like(p)))
    return acc
