"""``scaling_sgd.engines``: the engines, their solvers, the registry and the driver.

    from scaling_sgd.engines import SGD, Reduced, Flow, RKC, ROS2, simulate, register_engine

An engine is a small object behind :class:`Engine` (``init``, ``advance``, ``position``,
``observe``) that owns its knowledge: its config table and defaults, its config rules,
its memory estimate and the results it adds.  :func:`simulate` runs any of them on a
:class:`Static` description and :class:`Replicas` (docs/model.md §2); a new engine is one
file and a call to :func:`register_engine` (docs/architecture.md).
"""

from ._src.engines import DEFAULT_ENGINE, ENGINES, FLOW_SOLVERS, engine_from_config, get_engine, register_engine
from ._src.engines.base import REPLICA_SETTINGS, Engine, Grid, Replicas, Static, Target, log_grid
from ._src.engines.driver import simulate
from ._src.engines.flow import Flow
from ._src.engines.flow_solvers import RKC, ROS2, Diffrax, FlowSolver, make_solver
from ._src.engines.reduced import Reduced
from ._src.engines.sgd import SGD

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "FLOW_SOLVERS",
    "REPLICA_SETTINGS",
    "RKC",
    "Diffrax",
    "Engine",
    "Flow",
    "FlowSolver",
    "Grid",
    "ROS2",
    "Reduced",
    "Replicas",
    "SGD",
    "Static",
    "Target",
    "engine_from_config",
    "get_engine",
    "log_grid",
    "make_solver",
    "register_engine",
    "simulate",
]
