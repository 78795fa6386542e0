"""Checkers of config values: each returns the value or raises :class:`ConfigError` whose
message names the key and the accepted values.  Shared by :mod:`.config` and the engines,
which validate their own settings tables with them."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

__all__ = ["is_int", "is_num", "check_int", "check_num", "check_choice", "finfo", "check_representable", "scalar_or_list"]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def check_int(key, v, lo=None, hi=None, what=""):
    if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = what or (f">= {lo}" if hi is None else f"in [{lo}, {hi}]")
        raise ConfigError(key, f"got {v!r}; accepted: an integer {rng}")
    return v


def check_num(key, v, lo=None, lo_open=False, hi=None, what=""):
    bad = not is_num(v)
    if not bad and lo is not None:
        bad = v <= lo if lo_open else v < lo
    if not bad and hi is not None:
        bad = v > hi
    if bad:
        rng = what or (f"{'>' if lo_open else '>='} {lo}" if lo is not None else "finite")
        raise ConfigError(key, f"got {v!r}; accepted: a number {rng}")
    return float(v)


def check_choice(key, v, choices):
    if not isinstance(v, str) or v not in choices:
        raise ConfigError(key, f"got {v!r}; accepted: {', '.join(repr(c) for c in choices)}")
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


def scalar_or_list(key, v, check):
    if isinstance(v, list):
        if not v:
            raise ConfigError(key, "empty list; accepted: a value or a non-empty list of values")
        return [check(key, x) for x in v]
    return check(key, v)
