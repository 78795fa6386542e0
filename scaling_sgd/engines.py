"""``scaling_sgd.engines``: the engines, their solvers, and the driver that runs them.

    from scaling_sgd.engines import SGD, Reduced, Flow, ROS2, simulate

An engine is a small object behind :class:`Engine` (``init``, ``advance``, ``position``,
``observe`` and its config rules); :func:`simulate` runs any of them on a
:class:`Static` description and :class:`Replicas` (docs/model.md §2).
"""

from ._src.engines import ENGINES, FLOW_SOLVERS, engine_from_config, get_engine
from ._src.engines.base import Engine, Grid, Replicas, Static, Target, log_grid
from ._src.engines.driver import simulate
from ._src.engines.flow import Flow
from ._src.engines.flow_solvers import ROS2, Diffrax, FlowSolver, make_solver
from ._src.engines.reduced import Reduced
from ._src.engines.sgd import SGD

__all__ = [
    "ENGINES",
    "FLOW_SOLVERS",
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
    "simulate",
]
