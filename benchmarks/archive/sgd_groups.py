"""A/B of the `sgd` replica groups at large d, in one process.

    PYTHONPATH=. python benchmarks/archive/sgd_groups.py 16777216 4294967296 4194304

Each argument is a value of ``scaling_sgd._src.engines.sgd.GROUP_BYTES`` (16 MB is the
default: 4 groups of 8 replicas at d = 16384, R = 32; 4 GB: one group, no grouping;
4 MB: 16 groups).  For each: the compile caches are cleared, the bench's
d = 16384, m = P = 16, B = 1, R = 32 case is timed (median of 5) and set against the
Gaussian-draw bound measured right after it.  Prints samples/s and the ratio.
"""

import sys

import jax

from scaling_sgd._src import bench
from scaling_sgd._src.engines import sgd as sgd_mod


def main(argv: list[str]) -> None:
    for gb in [int(x) for x in argv] or [sgd_mod.GROUP_BYTES]:
        sgd_mod.GROUP_BYTES = gb
        jax.clear_caches()
        r = bench.time_engine(bench._config(16384, 16, 16, 1, 32, 512), 5)
        g = bench.gaussian_rate(repeats=5)
        ratio = r["samples_per_s"] / (g["normals_per_s"] / 16384)
        print(f"GROUP_BYTES={gb}: {r['samples_per_s']:.4g} samples/s, {ratio:.3f} of the Gaussian bound", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
