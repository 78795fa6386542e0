"""The engines and their registry.

An engine is a small object behind the :class:`.base.Engine` interface that owns its
knowledge (settings table, config rules, memory, extra results); the one driver
(:func:`.driver.simulate`) runs any of them.  The registry maps ``train.engine`` to the
engine class; it holds no engine's name or settings of its own:

* :class:`.sgd.SGD`: online SGD in full dimension ``d``;
* :class:`.reduced.Reduced`: the same SGD, exact in law, at a cost free of ``d``;
* :class:`.flow.Flow`: population gradient flow, the ``lr -> 0`` limit.

A new engine is one file with a subclass of :class:`.base.Engine`, registered with
:func:`register_engine` (docs/architecture.md).
"""

from __future__ import annotations

from .base import Engine, Grid, Replicas, Static, Target
from .flow import Flow
from .flow_solvers import SOLVERS as FLOW_SOLVERS
from .reduced import Reduced
from .sgd import SGD

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "FLOW_SOLVERS",
    "Engine",
    "Grid",
    "Replicas",
    "Static",
    "Target",
    "engine_from_config",
    "get_engine",
    "register_engine",
]

#: ``train.engine`` -> engine class (filled by :func:`register_engine`)
ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Make ``cls`` selectable as ``train.engine = cls.name`` (its :attr:`~.base.Engine.table`,
    if any, becomes a config table).  Usable as a class decorator; returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Engine)) or not cls.name:
        raise TypeError(f"register_engine: {cls!r} is not an Engine subclass with a name")
    ENGINES[cls.name] = cls
    return cls


for _cls in (SGD, Reduced, Flow):
    register_engine(_cls)
#: ``train.engine`` when the config does not say
DEFAULT_ENGINE = SGD.name


def get_engine(name: str, **settings) -> Engine:
    """The engine ``name`` (one of :data:`ENGINES`) with ``settings``."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; accepted: {', '.join(ENGINES)}")
    return ENGINES[name](**settings)


def engine_from_config(cfg: dict) -> Engine:
    """The engine a resolved config asks for (``train.engine``, built from its own table)."""
    return ENGINES[cfg["train"]["engine"]].from_config(cfg)
