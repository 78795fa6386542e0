"""Hermite activations, kernels and information exponents.

An activation is a finite Hermite expansion ``sigma(z) = sum_j c_j h_j(z)`` on the
orthonormal (probabilists') Hermite functions ``h_j = He_j / sqrt(j!)``, so that for
unit vectors ``u, v`` with ``rho = <u, v>`` and ``x ~ N(0, I_d)``

    E[h_i(<x,u>) h_j(<x,v>)] = delta_ij rho^j,   K(rho) = sum_j c_j^2 rho^j.

The coefficients are held as a hashable tuple so an :class:`Activation` can be a static
(compile-time) argument: changing the activation recompiles, changing numbers does not.
Non-polynomial activations (ReLU, tanh, ...) are represented by their Hermite expansion
truncated at a chosen degree; student and teacher then share *that* polynomial, so every
closed form below is exact for the simulated model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping

import numpy as np

from .lazy import lazy

jnp = lazy("jax.numpy")
_special = lazy("scipy.special")

__all__ = ["Activation", "activation", "hermite_coefficients", "hermite_he", "hn", "NONPOLYNOMIAL"]


def hermite_he(z, degree: int):
    """``[He_0(z), ..., He_degree(z)]`` by the stable three-term recurrence
    ``He_{j+1} = z He_j - j He_{j-1}`` (the one Hermite recurrence of the package).

    ``z`` is a JAX or NumPy array (any shape); the result has its type.
    """
    prev, cur = (np.ones_like(z) if isinstance(z, np.ndarray) else jnp.ones_like(z)), z
    out = [prev]
    for j in range(1, degree + 1):
        out.append(cur)
        prev, cur = cur, z * cur - j * prev
    return out


@dataclasses.dataclass(frozen=True)
class Activation:
    """A Hermite-polynomial activation.

    Attributes:
        coeffs: tuple ``(c_0, ..., c_J)`` of Python floats, the coefficients on ``h_j``.
        name: a label for figures and results.
    """

    coeffs: tuple[float, ...]
    name: str = ""

    def __post_init__(self):
        c = tuple(float(v) for v in self.coeffs)
        while len(c) > 1 and c[-1] == 0.0:
            c = c[:-1]
        if not c or all(v == 0.0 for v in c):
            raise ValueError("activation has no non-zero Hermite coefficient")
        if not all(math.isfinite(v) for v in c):
            raise ValueError("activation coefficients must be finite")
        object.__setattr__(self, "coeffs", c)

    # -- scalar facts ---------------------------------------------------------------
    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    @property
    def info_exponent(self) -> int | None:
        """``k = min{j >= 1 : c_j != 0}``; ``None`` for a constant activation."""
        for j, c in enumerate(self.coeffs):
            if j >= 1 and c != 0.0:
                return j
        return None

    @property
    def norm2(self) -> float:
        """``K(1) = E[sigma(z)^2] = sum_j c_j^2``."""
        return float(sum(c * c for c in self.coeffs))

    def c(self, j: int) -> float:
        return self.coeffs[j] if 0 <= j < len(self.coeffs) else 0.0

    def to_dict(self) -> dict[str, float]:
        return {str(j): c for j, c in enumerate(self.coeffs) if c != 0.0}

    # -- functions (JAX, any shape, elementwise) ------------------------------------
    def __call__(self, z):
        """``sigma(z) = sum_j c_j He_j(z) / sqrt(j!)``."""
        return self.value_and_derivative(z)[0]

    def derivative(self, z):
        """``sigma'(z) = sum_j c_j sqrt(j) h_{j-1}(z)`` (since ``He_j' = j He_{j-1}``)."""
        return self.value_and_derivative(z)[1]

    def value_and_derivative(self, z):
        """Return ``(sigma(z), sigma'(z))`` sharing one Hermite recurrence."""
        s = jnp.zeros_like(z)
        ds = jnp.zeros_like(z)
        he = hermite_he(z, self.degree)
        for j, h in enumerate(he):
            cj = self.c(j)
            if cj != 0.0:
                s = s + (cj / math.sqrt(math.factorial(j))) * h
                if j >= 1:
                    # c_j h_j' = c_j j He_{j-1} / sqrt(j!)
                    ds = ds + (cj * j / math.sqrt(math.factorial(j))) * he[j - 1]
        return s, ds

    def kernel(self, rho, other: Activation | None = None):
        """``K(rho) = sum_j c_j c'_j rho^j`` with ``c' = other.coeffs`` (default: self).

        ``E[sigma(<x,u>) sigma'(<x,v>)]`` for unit ``u, v`` with ``<u, v> = rho``.
        Evaluated by Horner's rule; exact for ``|rho| <= 1``.
        """
        c = self.cross_coeffs(other)
        out = jnp.zeros_like(rho) + c[-1]
        for cj in reversed(c[:-1]):
            out = out * rho + cj
        return out

    def kernel_derivative(self, rho, other: Activation | None = None):
        """``K'(rho) = sum_j j c_j c'_j rho^(j-1)``."""
        c = self.cross_coeffs(other)
        dc = [j * c[j] for j in range(1, len(c))] or [0.0]
        out = jnp.zeros_like(rho) + dc[-1]
        for cj in reversed(dc[:-1]):
            out = out * rho + cj
        return out

    def cross_coeffs(self, other: Activation | None = None) -> tuple[float, ...]:
        o = self if other is None else other
        n = max(len(self.coeffs), len(o.coeffs))
        c = tuple(self.c(j) * o.c(j) for j in range(n))
        while len(c) > 1 and c[-1] == 0.0:
            c = c[:-1]
        return c

    def numpy(self, z: np.ndarray) -> np.ndarray:
        """Float64 NumPy evaluation (for references)."""
        z = np.asarray(z, dtype=np.float64)
        s = np.zeros_like(z)
        for j, h in enumerate(hermite_he(z, self.degree)):
            s += self.c(j) * h / math.sqrt(math.factorial(j))
        return s


def hn(n: int, scale: float = 1.0) -> Activation:
    """The single Hermite function ``h_n`` (information exponent ``n``)."""
    if n < 0:
        raise ValueError("Hermite degree must be >= 0")
    return Activation(tuple([0.0] * n + [float(scale)]), name=f"h{n}")


def hermite_coefficients(f: Callable[[np.ndarray], np.ndarray], degree: int, half_width: float = 14.0, n: int = 28_001):
    """``c_j = E[f(z) h_j(z)]``, ``j = 0..degree``, ``z ~ N(0, 1)``.

    Composite Simpson quadrature on ``[-half_width, half_width]`` with ``z = 0`` a node,
    so functions with a kink at the origin (ReLU, |z|) are integrated to ~1e-12, unlike
    Gauss-Hermite whose error decays only algebraically for kinked integrands.
    """
    if n % 2 == 0:
        n += 1
    z = np.linspace(-half_width, half_width, n)
    h = z[1] - z[0]
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    w *= h / 3.0 * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    fz = f(z)
    return tuple(float(np.sum(w * fz * h) / math.sqrt(math.factorial(j))) for j, h in enumerate(hermite_he(z, degree)))


NONPOLYNOMIAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "abs": np.abs,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "gelu": lambda z: 0.5 * z * (1.0 + _special.erf(z / math.sqrt(2.0))),
}

_HN = re.compile(r"^h(\d+)$")
ACCEPTED = (
    "'h1'..'h30', one of "
    + ", ".join(repr(k) for k in NONPOLYNOMIAL)
    + (", or a table of Hermite coefficients such as {4 = 1.0, 6 = 0.3}")
)


def activation(spec: str | Mapping | Activation, degree: int = 12) -> Activation:
    """Build an :class:`Activation` from a config value.

    Args:
        spec: ``"h4"`` (any ``h<n>``), a non-polynomial name (see ``NONPOLYNOMIAL``,
            expanded to ``degree``), or a mapping ``{j: c_j}`` (keys may be strings).
        degree: truncation degree for non-polynomial activations.

    Raises:
        ValueError: with the accepted values, on anything else.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        m = _HN.match(spec.strip().lower())
        if m and int(m.group(1)) <= 30:
            return hn(int(m.group(1)))
        name = spec.strip().lower()
        if name in NONPOLYNOMIAL:
            return Activation(hermite_coefficients(NONPOLYNOMIAL[name], degree), name=f"{name}[{degree}]")
        raise ValueError(f"unknown activation {spec!r}; accepted: {ACCEPTED}")
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"empty activation; accepted: {ACCEPTED}")
        c: dict[int, float] = {}
        for k, v in spec.items():
            try:
                j = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"activation key {k!r} is not a Hermite degree; accepted: {ACCEPTED}") from None
            if not 0 <= j <= 30 or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"activation entry {k!r} = {v!r}: need degree 0..30 and a number")
            c[j] = float(v)
        coeffs = [0.0] * (max(c) + 1)
        for j, v in c.items():
            coeffs[j] = v
        name = "+".join(f"{v:g}h{j}" for j, v in sorted(c.items()) if v != 0.0)
        return Activation(tuple(coeffs), name=name)
    raise ValueError(f"activation must be a string or a table; accepted: {ACCEPTED}")
