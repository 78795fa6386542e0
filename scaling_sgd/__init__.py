"""scaling-sgd: emergence and scaling laws in online SGD on multi-index models.

Public namespace (the implementation lives in ``scaling_sgd._src``):

* :func:`activation`, :class:`Activation`, :func:`hn` - Hermite activations and kernels.
* :class:`Model`, :func:`population_loss`, :func:`gram_observables` - the model.
* :func:`resolve_config`, :func:`load_config`, :class:`ConfigError` - configs.
* :func:`run` - run a resolved config (any engine); :func:`read_run` - read results.
"""

from ._src.config import ConfigError, apply_set, config_hash
from ._src.config import load as load_config
from ._src.config import resolve as resolve_config
from ._src.hermite import Activation, activation, hermite_coefficients, hn
from ._src.model import Model, gram_observables, population_loss, power_law_coefficients
from ._src.results import read_run, write_run
from ._src.runner import run

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ConfigError",
    "Model",
    "activation",
    "apply_set",
    "config_hash",
    "gram_observables",
    "hermite_coefficients",
    "hn",
    "load_config",
    "population_loss",
    "power_law_coefficients",
    "read_run",
    "resolve_config",
    "run",
    "write_run",
]
