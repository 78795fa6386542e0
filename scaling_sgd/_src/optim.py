"""Optimizers and learning-rate schedules.

Plain SGD (``w <- w - lr_t g``) is the default and is applied directly.  Any optax
gradient transformation named in the config (``"adam"``, ``"sgd"`` with momentum, ...)
may replace it in the ``sgd`` engine; it is built *inside* the traced program from the
traced learning rate, so changing ``lr`` never recompiles.

The learning rate at step ``t`` of ``T`` is ``lr * schedules.factor(schedule, t, T)``
(:mod:`.schedules`).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import types
import typing

from .errors import ConfigError
from .lazy import lazy
from .schedules import factor as schedule_factor

jnp = lazy("jax.numpy")
optax = lazy("optax")

__all__ = ["EXACT_IN_REDUCED", "check_optimizer", "make_optimizer", "require_plain_sgd"]

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


def check_optimizer(name, kwargs) -> None:
    """Raise :class:`ConfigError` unless ``optax.<name>(learning_rate, **kwargs)`` is valid."""
    if not isinstance(kwargs, dict):
        raise ConfigError("train.optimizer_kwargs", f"got {kwargs!r}; accepted: a table of keyword arguments")
    if name == "sgd" and not kwargs:  # plain SGD, applied directly (Static.plain_sgd): no optax to ask
        return
    fn = getattr(optax, name, None)
    sig = _signature(fn) if callable(fn) else None
    if sig is None or "learning_rate" not in sig.parameters:
        raise ConfigError("train.optimizer", f"got {name!r}; accepted: an optax optimizer such as 'sgd', 'adam', 'adamw', 'lion'")
    unknown = [k for k in kwargs if k not in sig.parameters or k == "learning_rate"]
    if unknown:
        ok = [p for p in sig.parameters if p != "learning_rate"]
        raise ConfigError("train.optimizer_kwargs", f"optax.{name} has no argument {unknown[0]!r}; accepted: {', '.join(ok)}")
    for k, v in kwargs.items():
        if isinstance(v, (list, dict)):  # part of the compiled program's static key: scalars only
            raise ConfigError(
                "train.optimizer_kwargs", f"optax.{name} argument {k} = {v!r}; accepted: true/false, a number or a string"
            )
        want = _accepted_kind(sig.parameters[k])
        if not _is_kind(v, want):
            raise ConfigError("train.optimizer_kwargs", f"optax.{name} argument {k} = {v!r}; accepted: {_KIND_TEXT[want]}")
    _dry_run(name, tuple(sorted(kwargs.items())))


# What a keyword of an optax optimizer takes, from its annotation (or its default):
# "bool" (true/false), "number" (a finite int or float, not a boolean), "number?" (or
# absent), "any" (left to the dry run, e.g. a dtype name).
_KIND_TEXT = {"bool": "true or false", "number": "a finite number", "number?": "a finite number", "any": "a value"}


def _accepted_kind(param: inspect.Parameter) -> str:
    ann = param.annotation
    if ann is bool or (ann is inspect.Parameter.empty and isinstance(param.default, bool)):
        return "bool"
    args = set(typing.get_args(ann)) if typing.get_origin(ann) in (typing.Union, types.UnionType) else {ann}
    if float in args or int in args:
        return "number?" if type(None) in args else "number"
    if ann is inspect.Parameter.empty and isinstance(param.default, (int, float)):
        return "number"
    return "any"


def _is_kind(v, kind: str) -> bool:
    if kind == "bool":
        return isinstance(v, bool)
    if kind in ("number", "number?"):
        try:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        except OverflowError:  # an int too large for a float
            return False
    return True


@functools.lru_cache(maxsize=64)
def _dry_run(name: str, items: tuple) -> None:
    """Build the optimizer as the engine does (:func:`make_optimizer`: a learning-rate
    schedule, ``update(grads, state, params)``) and take one step on a tiny array, so that
    an optimizer or a value optax rejects (one that takes no schedule, a line search that
    needs the loss, a dtype name it does not know) is one config line now rather than a
    traceback after compilation.  ``items``: the keyword arguments, sorted (cached)."""
    kwargs = dict(items)
    try:
        opt = make_optimizer(name, kwargs, jnp.float32(1e-3), "constant", 10)
        w = jnp.ones((2, 2), jnp.float32)
        state = opt.init(w)
        opt.update(w, state, w)
    except Exception as e:  # noqa: BLE001 - any failure of optax here is a config error
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        if not kwargs:
            raise ConfigError(
                "train.optimizer",
                f"optax.{name} cannot run here ({msg}); accepted: an optimizer such as 'sgd', 'adam', 'adamw', 'lion'",
            ) from None
        raise ConfigError(
            "train.optimizer_kwargs", f"optax.{name}(**{kwargs}) fails ({msg}); accepted: values optax.{name} takes"
        ) from None


def require_plain_sgd(cfg: dict, engine: str) -> None:
    """Engines that keep weights in rotated coordinates are exact only for optimizers that
    commute with rotations of ``R^d`` (:data:`EXACT_IN_REDUCED`): raise otherwise."""
    name, kwargs = cfg["train"]["optimizer"], cfg["train"]["optimizer_kwargs"]
    if name not in EXACT_IN_REDUCED or kwargs:
        raise ConfigError(
            "train.optimizer",
            f"{name!r} with {kwargs or 'no options'} is not exact in engine {engine!r}; accepted there: plain 'sgd' "
            "(elementwise optimizers such as Adam are not rotation-invariant)",
        )


def make_optimizer(name: str, kwargs: dict, lr, schedule: str, T, n0: float = 0.0) -> optax.GradientTransformation:
    """``optax.<name>`` whose learning rate is ``lr * schedule_factor(schedule, count, T, n0)``."""
    fn = getattr(optax, name)

    def lr_fn(count):
        return lr * schedule_factor(schedule, count, T, n0).astype(jnp.result_type(lr))

    return fn(learning_rate=lr_fn, **kwargs)
