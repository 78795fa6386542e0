"""The engines and their registry.

An engine is a small object behind the :class:`.base.Engine` interface; the one driver
(:func:`.driver.simulate`) runs any of them.

* ``sgd`` (:class:`.sgd.SGD`): online SGD in full dimension ``d``;
* ``reduced`` (:class:`.reduced.Reduced`): the same SGD, exact in law, at a cost free of ``d``;
* ``flow`` (:class:`.flow.Flow`): population gradient flow, the ``lr -> 0`` limit.
"""

from __future__ import annotations

from .base import Engine, Grid, Replicas, Static, Target
from .flow import Flow
from .flow_solvers import SOLVERS as FLOW_SOLVERS
from .flow_solvers import make_solver
from .reduced import Reduced
from .sgd import SGD

__all__ = ["ENGINES", "FLOW_SOLVERS", "Engine", "Grid", "Replicas", "Static", "Target", "engine_from_config", "get_engine"]

ENGINES = {"sgd": SGD, "reduced": Reduced, "flow": Flow}


def get_engine(name: str, **settings) -> Engine:
    """The engine ``name`` (one of :data:`ENGINES`) with ``settings``."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; accepted: {', '.join(ENGINES)}")
    return ENGINES[name](**settings)


def engine_from_config(cfg: dict) -> Engine:
    """The engine a resolved config asks for (``train.engine``, and ``[flow]`` for flow)."""
    name = cfg["train"]["engine"]
    if name == "flow":
        fl = cfg["flow"]
        return get_engine("flow", solver=make_solver(fl["solver"], fl["rtol"], fl["atol"]))
    return get_engine(name)
