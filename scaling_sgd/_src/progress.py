"""Progress of a long run: steps done, rate and time left, from the host.

A meter is an object the caller passes to the driver (as diffrax passes a progress meter
to ``diffeqsolve``); the driver calls it between compiled chunks of work, so the compiled
program knows nothing about it.  The clock starts after compilation ("compiling..." is
shown first), so the rate and the time left describe the run itself.

* :class:`Progress` picks the form by where it writes: a ``tqdm`` bar in a notebook or a
  terminal, plain lines every ``every`` seconds in a log file (a batch job), where a bar's
  carriage returns would make the log unreadable;
* :class:`NoProgress` shows nothing.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "NoProgress", "in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython ZMQ shell)."""
    ip = sys.modules.get("IPython")
    shell = getattr(ip, "get_ipython", lambda: None)() if ip else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class NoProgress:
    """A meter that shows nothing (the interface every meter implements)."""

    def compiling(self) -> None:
        """Compilation starts."""

    def start(self, total: int, samples_per_step: float, start: int = 0) -> None:
        """The run starts (after compilation): ``total`` steps of ``samples_per_step``, from
        step ``start`` (a run resumed from a checkpoint)."""

    def update(self, done: int, fraction: float | None = None) -> None:
        """``done`` steps are done; ``fraction`` of the work (default ``done / total``)."""

    def close(self) -> None:
        """The run ended (finished or interrupted)."""


class Progress(NoProgress):
    """Steps done, samples/s and time left.

    Args:
        label: a prefix (e.g. the sweep point).
        stream: where to write (stderr by default).
        every: seconds between lines when writing plain lines.
        bar: ``True``/``False`` to force a ``tqdm`` bar or plain lines; ``None`` picks a
            bar in a notebook or a terminal.
    """

    def __init__(self, label: str = "", stream=None, every: float = 15.0, bar: bool | None = None):
        self.label = label
        self.stream = stream or sys.stderr
        self.every = every
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = (in_notebook() or tty) if bar is None else bar
        self._tqdm = None
        self.t0 = None
        self.t_compile = None
        self.total = 0
        self.sps = 1.0
        self.last_print = 0.0  # set at start: the first line comes after `every` seconds of running
        self.done = self.start_step = 0
        self._history = []  # (elapsed, fraction) at the lines printed, from el / 2 on

    def compiling(self) -> None:
        self.t_compile = time.perf_counter()
        print(f"{self.label}compiling...", file=self.stream, flush=True)

    def start(self, total: int, samples_per_step: float, start: int = 0) -> None:
        self.total = int(total)
        self.sps = float(samples_per_step)
        self.done = self.start_step = int(start)
        self.t0 = self.last_print = time.perf_counter()
        if self.t_compile is not None:
            print(f"{self.label}compiled in {self.t0 - self.t_compile:.1f} s", file=self.stream, flush=True)
        if self.bar:
            try:  # tqdm's notebook widget needs ipywidgets; without it, the text bar (no warning)
                import ipywidgets  # noqa: F401
                from tqdm.auto import tqdm
            except ImportError:
                from tqdm import tqdm

            self._tqdm = tqdm(
                total=self.total,
                initial=self.start_step,
                desc=self.label.strip() or "steps",
                unit="step",
                unit_scale=True,
                file=self.stream,
                leave=True,
            )

    def update(self, done: int, fraction: float | None = None) -> None:
        if self.t0 is None:
            return
        done = int(done)
        self.fraction = fraction
        if self._tqdm is not None:
            self._tqdm.update(done - self.done)
            el = time.perf_counter() - self.t0
            if el > 0:
                self._tqdm.set_postfix_str(f"{(done - self.start_step) * self.sps / el:,.0f} samples/s", refresh=False)
            self.done = done
            return
        self.done = done
        now = time.perf_counter()
        final = self.done >= self.total
        if not final and now - self.last_print < self.every:
            return
        self.last_print = now
        el = now - self.t0
        rate = (self.done - self.start_step) / el if el > 0 else float("nan")
        # the time left from the fraction of the work done (for the flow: the fraction of its
        # log points), at the rate of the more recent half of the run: a flow log point
        # costs more as the run goes on (benchmarks/NOTES.md, "The `flow` engine at P = m = 256
        # and beyond"), so the mean rate since the start would promise far too little time left
        f = getattr(self, "fraction", None)
        if f is not None:
            self._history.append((el, f))
            while len(self._history) > 2 and self._history[1][0] <= el / 2:
                self._history.pop(0)
            t_a, f_a = self._history[0] if self._history[0][0] < el else (0.0, 0.0)
            left = (el - t_a) * (1.0 - f) / (f - f_a) if f > f_a else float("nan")
        else:
            left = (self.total - self.done) / rate if rate and rate > 0 else float("nan")
        print(
            f"{self.label}step {self.done:,}/{self.total:,} ({100.0 * self.done / max(self.total, 1):5.1f}%)  "
            f"{rate * self.sps:,.0f} samples/s  elapsed {el:6.1f}s  left {left:6.1f}s",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
