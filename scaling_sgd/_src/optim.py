"""Optimizers and learning-rate schedules.

Plain SGD (``w <- w - lr_t g``) is the default and is applied directly.  Any optax
gradient transformation named in the config (``"adam"``, ``"sgd"`` with momentum, ...)
may replace it in the ``sgd`` engine; it is built *inside* the traced program from the
traced learning rate, so changing ``lr`` never recompiles.

Schedules are functions of the step count ``t`` (0-based) and the run length ``T``:
    constant      lr
    cosine        lr (1 + cos(pi t/T)) / 2
    linear        lr (1 - t/T)
    inverse_time  lr / (1 + t / (T/100))
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import optax

from .config import ConfigError

__all__ = ["check_optimizer", "make_optimizer", "schedule_factor"]

# Engines other than ``sgd`` keep weights in reduced coordinates, where only optimizers that
# commute with rotations of R^d are exact; elementwise ones (Adam, RMSProp, ...) are not.
EXACT_IN_REDUCED = ("sgd",)


def _optax_names():
    return sorted(
        n
        for n in dir(optax)
        if not n.startswith("_")
        and callable(getattr(optax, n))
        and "learning_rate" in getattr(inspect.signature(getattr(optax, n)), "parameters", {})
    )


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def check_optimizer(name, kwargs, engine: str) -> None:
    """Raise :class:`ConfigError` unless ``optax.<name>(learning_rate, **kwargs)`` is valid."""
    if not isinstance(kwargs, dict):
        raise ConfigError("train.optimizer_kwargs", f"got {kwargs!r}; accepted: a table of keyword arguments")
    fn = getattr(optax, name, None)
    sig = _signature(fn) if callable(fn) else None
    if sig is None or "learning_rate" not in sig.parameters:
        raise ConfigError("train.optimizer", f"got {name!r}; accepted: an optax optimizer such as 'sgd', 'adam', 'adamw', 'lion'")
    unknown = [k for k in kwargs if k not in sig.parameters or k == "learning_rate"]
    if unknown:
        ok = [p for p in sig.parameters if p != "learning_rate"]
        raise ConfigError("train.optimizer_kwargs", f"optax.{name} has no argument {unknown[0]!r}; accepted: {', '.join(ok)}")
    if engine != "sgd" and (name not in EXACT_IN_REDUCED or kwargs):
        raise ConfigError(
            "train.optimizer",
            f"{name!r} with {kwargs or 'no options'} is not exact in engine {engine!r}; accepted there: plain 'sgd' "
            "(elementwise optimizers such as Adam are not rotation-invariant)",
        )


def schedule_factor(schedule: str, t, T):
    """Multiplier of the base learning rate at step ``t`` of ``T`` (traced-friendly)."""
    t = jnp.asarray(t, jnp.float32)
    T = jnp.maximum(jnp.asarray(T, jnp.float32), 1.0)
    if schedule == "constant":
        return jnp.ones_like(t)
    if schedule == "cosine":
        return 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t / T, 1.0)))
    if schedule == "linear":
        return jnp.maximum(1.0 - t / T, 0.0)
    if schedule == "inverse_time":
        return 1.0 / (1.0 + t / jnp.maximum(T / 100.0, 1.0))
    raise ValueError(schedule)


def make_optimizer(name: str, kwargs: dict, lr, schedule: str, T) -> optax.GradientTransformation:
    """``optax.<name>`` whose learning rate is ``lr * schedule_factor(schedule, count, T)``."""
    fn = getattr(optax, name)

    def lr_fn(count):
        return lr * schedule_factor(schedule, count, T).astype(jnp.result_type(lr))

    return fn(learning_rate=lr_fn, **kwargs)
