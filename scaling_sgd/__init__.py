"""scaling-sgd: emergence and scaling laws in online SGD on multi-index models.

The public namespace (the implementation lives in ``scaling_sgd._src``):

* configs: :func:`resolve_config`, :func:`load_config`, :func:`apply_set`,
  :func:`config_hash`, :class:`ConfigError`; :func:`build_spec` turns a resolved config
  into the :class:`RunSpec` a run is made from;
* running: :func:`run` (a config, any engine) -> :class:`Result`; :func:`load_run` (a run
  directory) -> :class:`Result`; :func:`load_sweep` (a sweep directory) -> named arrays;
* the model: :func:`activation`, :class:`Activation`, :func:`hn`, :class:`Model`,
  :func:`population_loss`, :func:`gram_observables`, :func:`power_law_coefficients`;
* sub-namespaces: :mod:`scaling_sgd.engines` (the engines, their solvers and the driver)
  and :mod:`scaling_sgd.analysis` (emergence times, fits, theory, figures).

The mathematics is in docs/model.md.
"""

from ._src.api import Labeled, Result, load_run, load_sweep, run
from ._src.config import apply_set, config_hash
from ._src.config import load as load_config
from ._src.config import resolve as resolve_config
from ._src.errors import ConfigError
from ._src.hermite import Activation, activation, hermite_coefficients, hn
from ._src.model import Model, gram_observables, population_loss, power_law_coefficients
from ._src.results import read_run, write_run
from ._src.spec import RunSpec, build_spec

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ConfigError",
    "Labeled",
    "Model",
    "Result",
    "RunSpec",
    "activation",
    "apply_set",
    "build_spec",
    "config_hash",
    "gram_observables",
    "hermite_coefficients",
    "hn",
    "load_config",
    "load_run",
    "load_sweep",
    "population_loss",
    "power_law_coefficients",
    "read_run",
    "resolve_config",
    "run",
    "write_run",
]
