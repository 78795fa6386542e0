"""Experiments that reproduce the predictions of Ren, Nichani, Wu & Lee (2025).

Each experiment is a config ``sims/NN_name.toml`` (ordinary scaling-sgd tables plus an
``[experiment]`` table with the fit settings, a ``[sweep]`` grid, and ``[gpu]`` /
``[quick]`` override tables) and a function in :mod:`sims.experiments` that runs it,
fits the predicted quantities and draws its figure.

    python -m sims.reproduce NAME|all [--gpu | --quick] [--force]
    python -m sims.make_validation          # sims/results/*.json -> sims/VALIDATION.md
"""
