"""The environment of this process (versions, backend, device), recorded in every result."""

from __future__ import annotations

import platform

import numpy as np

__all__ = ["environment", "peak_rss_bytes"]


def peak_rss_bytes() -> int:
    """This process's own peak resident memory: Linux's ``VmHWM``, else ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec``, so a process started from a large parent (a test
    session) would report the parent's size; ``VmHWM`` is reset by ``exec``."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def environment() -> dict:
    """Versions and device of this process (recorded in every result)."""
    import jax
    import jaxlib
    import optax

    from .engines.sgd import INPUT_STREAM

    try:
        from importlib.metadata import version

        ver = version("scaling-sgd")
    except Exception:  # pragma: no cover - running from a source tree
        ver = "unknown"
    dev = jax.devices()[0]
    return {
        "scaling_sgd": ver,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "x64": bool(jax.config.jax_enable_x64),
        "prng": str(jax.config.jax_default_prng_impl),
        "sgd_input_stream": INPUT_STREAM,
    }
