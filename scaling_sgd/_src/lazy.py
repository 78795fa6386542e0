"""Modules imported on first use, so that reading and checking a config needs no JAX.

``jax = lazy("jax")`` binds a stand-in whose first attribute lookup imports the module;
then it forwards every lookup (and keeps what it found).  The engines, the model and the
optimizers import JAX, optax and SciPy this way: the command line answers ``--help`` and
reports a bad config before any of them is loaded, and the first computation loads them.
"""

from __future__ import annotations

import importlib
import types

__all__ = ["lazy"]


class _Lazy(types.ModuleType):
    """A module imported at its first attribute lookup (see :func:`lazy`)."""

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self.__name__), attr)
        setattr(self, attr, value)  # found once, then a plain attribute
        return value


def lazy(name: str) -> types.ModuleType:
    """A stand-in for the module ``name`` (e.g. ``"jax.numpy"``) that imports it on first use."""
    return _Lazy(name)
