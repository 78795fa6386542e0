#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): one GPU, at most 8 minutes, one JSON.
#   bash benchmarks/gpu_check.sh [--out FILE]                 on a machine with one GPU
#   bash benchmarks/gpu_check.sh --cpu-dry-run [--out FILE]   the same code at tiny sizes, on the CPU
# Nothing is downloaded: it runs the checkout with the JAX already installed there
# (`pip install -e ".[cuda12]"` beforehand where JAX's CUDA wheels are not installed yet).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [[ " $* " != *" --cpu-dry-run "* ]]; then
    export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the memory figures are the program's own
fi
exec timeout 480 python3 benchmarks/gpu_check.py "$@"
