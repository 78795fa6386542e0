"""Strict numerics for every test: float64 available, no silent rank promotion."""

import os

# The suite compiles many programs in one process; JAX's on-disk compilation cache is left
# out of it (a run's own cache is a user feature, not what the tests check).
os.environ["SCALING_SGD_COMPILATION_CACHE"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402
from robustness_common import make_base_toml, make_runs  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module.

    XLA's CPU backend maps each compiled kernel into its own memory pages; a process that
    keeps every program of the whole suite alive passes Linux's limit on memory mappings
    (``vm.max_map_count``, 65530 by default) and is aborted inside the compiler.
    """
    yield
    jax.clear_caches()


# -- fixtures shared by test_robustness.py and test_robustness_io.py (one set of runs per module)
@pytest.fixture(scope="module")
def base_toml(tmp_path_factory):
    """The robustness tests' base config file (``robustness_common.BASE``)."""
    return make_base_toml(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(base_toml, tmp_path_factory):
    """Finished runs of the base config: A, B (another lr), H (half diverge), D (all diverge)."""
    return make_runs(base_toml, tmp_path_factory)
