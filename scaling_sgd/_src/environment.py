"""The environment of this process (versions, backend, device), recorded in every result."""

from __future__ import annotations

import platform

import numpy as np

__all__ = ["environment"]


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
