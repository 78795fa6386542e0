"""Checkers of config values: each returns the value or raises :class:`ConfigError` whose
message names the key and the accepted values.  Shared by :mod:`.config` and the engines,
which validate their own settings tables with them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from .errors import ConfigError

__all__ = [
    "is_int",
    "is_num",
    "check_int",
    "check_num",
    "check_choice",
    "finfo",
    "check_representable",
    "scalar_or_list",
    "check_distinct",
    "check_activation_table",
    "check_depth",
    "short",
]

# The longest repr of a value an error line quotes (a 200 KB value is cut in the middle).
SHORT_REPR = 120


def short(v) -> str:
    """``repr(v)``, cut in the middle to :data:`SHORT_REPR` characters."""
    r = repr(v)
    if len(r) <= SHORT_REPR:
        return r
    half = SHORT_REPR // 2 - 3
    return f"{r[:half]} ... {r[-half:]} ({len(r):,} characters)"


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    """A finite real number that a float can hold (an integer past ``1.8e308`` is not)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def check_int(key, v, lo=None, hi=None, what=""):
    if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = what or (f">= {lo}" if hi is None else f"in [{lo}, {hi}]")
        raise ConfigError(key, f"got {short(v)}; accepted: an integer {rng}")
    return v


def check_num(key, v, lo=None, lo_open=False, hi=None, what=""):
    bad = not is_num(v)
    if not bad and lo is not None:
        bad = v <= lo if lo_open else v < lo
    if not bad and hi is not None:
        bad = v > hi
    if bad:
        rng = what or (f"{'>' if lo_open else '>='} {lo}" if lo is not None else "finite")
        raise ConfigError(key, f"got {short(v)}; accepted: a number {rng}")
    return float(v)


def check_choice(key, v, choices):
    if not isinstance(v, str) or v not in choices:
        raise ConfigError(key, f"got {short(v)}; accepted: {', '.join(repr(c) for c in choices)}")
    return v


def finfo(dtype: str):
    return np.finfo(np.float64 if dtype == "float64" else np.float32)


def check_representable(key, v, dtype, lo=None, hi=None, why="") -> float:
    """``v`` must lie in ``[lo, hi]``, by default the positive normal numbers of the run's
    dtype, so that it neither underflows to 0 nor overflows to inf when the engine casts it."""
    fi = finfo(dtype)
    lo = float(fi.tiny) if lo is None else lo
    hi = float(fi.max) if hi is None else hi
    if not lo <= abs(v) <= hi:
        why = why or f"{'0' if abs(v) < lo else 'inf'} in {dtype}"
        raise ConfigError(key, f"got {v!r} ({why}); accepted: a number in [{lo:.3g}, {hi:.3g}] for {dtype}")
    return v


def check_distinct(key, values: list, what: str = "replica") -> list:
    """A replica list holds each value once (``-0.0`` and ``0.0`` are one value): a repeated
    value runs a copy that the analysis would count as an independent replica."""
    seen = set()
    for x in values:
        if x in seen:
            raise ConfigError(
                key, f"lists {x!r} twice; accepted: distinct values (a repeated {what} is a copy, not another sample)"
            )
        seen.add(x)
    return values


def scalar_or_list(key, v, check):
    if isinstance(v, list):
        if not v:
            raise ConfigError(key, "empty list; accepted: a value or a non-empty list of values")
        return [check(key, x) for x in v]
    return check(key, v)


# The deepest nesting of tables and arrays a config may have (the deepest real one is 4:
# [sweep] zip = [{...}] of lists); deeper input would only exhaust Python's stack.
MAX_DEPTH = 16


def check_depth(key: str, value) -> None:
    """Raise :class:`ConfigError` when ``value`` nests lists or tables deeper than
    :data:`MAX_DEPTH` (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, tuple, Mapping)):
            if depth >= MAX_DEPTH:
                raise ConfigError(key, f"nests arrays or tables too deeply; accepted: at most {MAX_DEPTH} levels")
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, Mapping) else v))


_DEGREE = re.compile(r"^(0|[1-9][0-9]?)$")


def check_activation_table(key: str, table: Mapping, dtype: str) -> dict:
    """A table ``{j: c_j}`` of Hermite coefficients, checked: each key one degree
    ``0..30`` written once (an integer, or its decimal string without a leading zero, so
    that ``'4'`` and ``'04'`` cannot both name ``c_4``), each value a number whose square
    is a normal number of the dtype (the loss is a sum of ``c_j^2`` terms: ``1e-25`` in
    float32 would make it exactly 0) or 0.  Returns ``{j: c_j}`` with integer keys."""
    fi = finfo(dtype)
    lo, hi = math.sqrt(float(fi.tiny)), math.sqrt(float(fi.max))
    out: dict[int, float] = {}
    for k, v in table.items():
        degree = type(k) is int or (isinstance(k, str) and _DEGREE.match(k) is not None)
        if not degree or not 0 <= int(k) <= 30:
            raise ConfigError(key, f"key {short(k)} is not a Hermite degree; accepted: integers 0..30 such as 4 or '4'")
        j = int(k)
        if j in out:
            raise ConfigError(key, f"degree {j} is given twice ({short(k)}); accepted: each degree once")
        if not is_num(v):
            raise ConfigError(key, f"c_{j} = {short(v)}; accepted: a finite number")
        if v != 0 and not lo <= abs(v) <= hi:
            raise ConfigError(
                key,
                f"c_{j} = {v!r}: c_{j}^2 is {'0' if abs(v) < lo else 'inf'} in {dtype}; accepted: 0 or |c_j| in [{lo:.3g}, {hi:.3g}]",
            )
        out[j] = float(v)
    return out
