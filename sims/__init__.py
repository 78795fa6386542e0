"""Experiments that reproduce the predictions of Ren, Nichani, Wu & Lee (2025).

Each experiment is a config ``sims/NN_name.toml`` (ordinary scaling-sgd tables with a
``[sweep]`` in the package's sweep dialect, plus an ``[experiment]`` table with the fit
settings and ``[gpu]`` / ``[quick]`` override tables) and a module
``sims/experiments/NN_name.py`` that runs its sweep, fits the predicted quantities,
checks them against theory, draws its figure and writes notes from its numbers.  What
they share: :mod:`sims.load` (experiment files, their sweeps, the runs read back),
:mod:`sims.checks` (the validation rows and what each can test) and :mod:`sims.output`
(results json, figures, printed rows); their statistics are :mod:`scaling_sgd.analysis`'s.

    python -m sims.reproduce NAME|all [--gpu | --quick] [--force]
    python -m sims.make_validation          # sims/results/*.json -> sims/VALIDATION.md
"""
