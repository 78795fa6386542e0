"""scaling-sgd: emergence and scaling laws in online SGD on multi-index models.

The public namespace (the implementation lives in ``scaling_sgd._src``):

* configs: :func:`resolve_config`, :func:`load_config`, :func:`apply_set`,
  :func:`config_hash`, :class:`ConfigError`; :func:`build_spec` turns a resolved config
  into the :class:`RunSpec` a run is made from;
* running: :func:`run` (a config, any engine) -> :class:`Result`; :func:`load_run` (a run
  directory) -> :class:`Result`; :func:`load_sweep` (a sweep directory) -> named arrays;
  :func:`stable_lr` (a config) -> the largest learning rate at which no replica diverges
  (:func:`scan_lr`: with every rate tried);
* the model: :func:`activation`, :class:`Activation`, :func:`hn`, :class:`Model`,
  :func:`population_loss`, :func:`gram_observables`, :func:`power_law_coefficients`;
* sub-namespaces: :mod:`scaling_sgd.engines` (the engines, their solvers and the driver)
  and :mod:`scaling_sgd.analysis` (emergence times, fits, theory, figures).

The mathematics is in docs/model.md.  The names are imported on first use: importing
the package does not import JAX.
"""

import importlib

__version__ = "0.1.0"

# name -> the module that defines it.  The names are imported on first use (PEP 562), so
# that ``import scaling_sgd`` (and the command line's ``--help``) does not import JAX.
_WHERE = {
    "Labeled": "._src.api",
    "Result": "._src.api",
    "load_run": "._src.api",
    "load_sweep": "._src.api",
    "run": "._src.api",
    "apply_set": "._src.config",
    "config_hash": "._src.config",
    "load_config": "._src.config:load",
    "resolve_config": "._src.config:resolve",
    "ConfigError": "._src.errors",
    "Activation": "._src.hermite",
    "activation": "._src.hermite",
    "hermite_coefficients": "._src.hermite",
    "hn": "._src.hermite",
    "Model": "._src.model",
    "gram_observables": "._src.model",
    "population_loss": "._src.model",
    "power_law_coefficients": "._src.model",
    "read_run": "._src.results",
    "write_run": "._src.results",
    "RunSpec": "._src.spec",
    "build_spec": "._src.spec",
    "stable_lr": "._src.lr_scan",
    "scan_lr": "._src.lr_scan",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'scaling_sgd' has no attribute {name!r}")
    module, _, attr = _WHERE[name].partition(":")
    value = getattr(importlib.import_module(module, __name__), attr or name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
