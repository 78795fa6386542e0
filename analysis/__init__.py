"""``scaling_sgd.analysis``: emergence times, power-law fits, theory and figures.

Installed under the package's own name (the ``analysis/`` folder of the repository is
mapped to ``scaling_sgd.analysis``).  Works on any run directory, whatever engine wrote
it (docs/model.md, "Results").

* one run: :func:`analyze` (a :class:`scaling_sgd.Result` or a run directory in, a
  :class:`RunAnalysis` with ``plot_*`` figures out; ``by="beta"`` and the like: a
  :class:`GroupedAnalysis`, one per value, for a run or a sweep folder),
  :func:`analyze_run` (files beside the results), :func:`analyze_metrics` (arrays in);
* a sweep: :func:`analyze_sweep`;
* emergence: :func:`emergence_times`, :func:`spread`, :func:`sharpness`,
  :func:`emergence_score`, :func:`log_median`, :func:`log_quantiles`, and the loss fit
  window :func:`loss_fit_window` (docs/model.md, "The loss fit window");
* fits: :func:`fit_power_law`, :func:`fit_from_draws`, :class:`PowerLawFit`; censored
  times (:mod:`.censored`): :func:`km_median`, :func:`censored_power_law`;
  the compute frontier: :func:`lower_envelope`;
* sub-namespaces: :mod:`.theory` (the paper's predictions, checked against the flow
  engine, and ``theory.race``, the race model: a finite-size prediction of a run's own
  emergence steps, :mod:`.race`) and :mod:`.plots` (figures; importing it changes
  nothing in matplotlib).
"""

from . import plots, theory
from .aggregate import analyze_sweep
from .censored import censored_power_law, km_median
from .core import RunAnalysis, analyze_metrics
from .emergence import (
    emergence_score,
    emergence_times,
    log_median,
    log_quantiles,
    loss_fit_window,
    run_emergence_times,
    sharpness,
    spread,
)
from .fit import PowerLawFit, fit_from_draws, fit_power_law
from .frontier import lower_envelope
from .grouped import GroupedAnalysis, analyze
from .report import analyze_run

__all__ = [
    "GroupedAnalysis",
    "PowerLawFit",
    "RunAnalysis",
    "analyze",
    "analyze_metrics",
    "analyze_run",
    "analyze_sweep",
    "censored_power_law",
    "emergence_score",
    "emergence_times",
    "run_emergence_times",
    "fit_from_draws",
    "fit_power_law",
    "km_median",
    "log_median",
    "log_quantiles",
    "loss_fit_window",
    "lower_envelope",
    "plots",
    "sharpness",
    "spread",
    "theory",
]
