"""14. The loss exponent at P = m = 1024, beta = 0.75: experiment 9's analysis
(``09_loss_exponent_P256``: the same estimator, fit window rule, bootstrap and scope rules)
on experiment 9's beta = 0.75 arm at the paper's P.  The race model on the same seeds is
in ``python -m sims.race_rows``."""

from __future__ import annotations

from sims.experiments import get
from sims.load import Experiment
from sims.output import Outcome


def run(exp: Experiment, force: bool = False) -> Outcome:
    return get(exp.get("analysis", "09_loss_exponent_P256"))(exp, force)
