"""Analysis of scaling-sgd results: emergence times, power-law fits, theory, figures.

Works on any run directory in the SPEC section 4 format, whatever engine wrote it.
"""

from .emergence import emergence_times

__all__ = ["emergence_times"]
