"""The exception types of bad input, unusable outputs and damaged results.

They have their own module so that every layer (config validation, optimizers, engines,
results I/O, the preflight, the command line) can raise them without importing each
other.  Each is one line naming what is wrong and what is accepted; the command line
prints it as ``scaling-sgd: error: <line>`` with exit status 2.
"""

from __future__ import annotations

__all__ = ["InputError", "ConfigError", "OutputError", "ResourceError", "ResultsError", "ConfigWarning"]


class InputError(ValueError):
    """Something the user gave cannot be used.  ``str(err)`` is one line starting with ``key``.

    Attributes:
        key: what is wrong: a config key ``table.key``, a command-line option such as
            ``--set`` or ``--out``, a resource (``memory``, ``disk``), or a results folder.
    """

    def __init__(self, key: str, message: str):
        self.key = key = _cut(str(key), 300)
        super().__init__(f"{key}: {_cut(str(message), MAX_MESSAGE)}")


# The longest error line (a value of 200 KB is cut in the middle: the line keeps its end,
# which says what is accepted).
MAX_MESSAGE = 1000


def _cut(text: str, n: int) -> str:
    text = " ".join(text.splitlines())
    if len(text) <= n:
        return text
    return f"{text[: n // 2]} ... {text[-(n // 2) :]}"


class ConfigError(InputError):
    """A bad config value (or a bad ``--set``/``--shard`` argument)."""


class OutputError(InputError):
    """The output folder cannot take the results: not writable, a file, full, or holding
    another config's results (refused so that nothing is lost)."""


class ResourceError(InputError):
    """The run would not fit: its memory or disk estimate exceeds what is available."""


class ResultsError(InputError):
    """A results folder is incomplete, unreadable or inconsistent (truncated, corrupted,
    swapped files); ``key`` is the folder."""


class ConfigWarning(UserWarning):
    """A config that runs but has a setting without effect (e.g. ``train.batch_size`` in
    engine ``flow``).  The message is one line naming the key."""
