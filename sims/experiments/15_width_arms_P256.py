"""15. Width arms at P = 256 with m = 2P: experiment 9's analysis (``09_loss_exponent_P256``:
the same estimator, fit window rule, bootstrap and scope rules) on its beta = 0.75 and 1
arms with twice the neurons.  The race model on the same seeds is in
``python -m sims.race_rows``."""

from __future__ import annotations

from sims.experiments import get
from sims.load import Experiment
from sims.output import Outcome


def run(exp: Experiment, force: bool = False) -> Outcome:
    return get(exp.get("analysis", "09_loss_exponent_P256"))(exp, force)
