"""Progress of a long run: steps done, rate and time left, from the host.

A meter is an object the caller passes to the driver (as diffrax passes a progress meter
to ``diffeqsolve``); the driver calls it between compiled chunks of work, so the compiled
program knows nothing about it.  The clock starts after compilation ("compiling..." is
shown first), so the rate and the time left describe the run itself.

* :class:`Progress` shows steps, samples/s (not for the flow, which draws no samples),
  replicas diverged and the time left, from the fraction of the work done (steps, or the
  flow solver's clock ``tau``); it picks the form by where it writes: a ``tqdm`` bar in a notebook or a
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


def _clock(seconds: float) -> str:
    """``seconds`` as ``12.3 s``, ``4:05`` or ``1:02:03``."""
    if not seconds == seconds or seconds == float("inf"):  # nan or inf
        return "?"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}" if m >= 60 else f"{m}:{sec:02d}"


class NoProgress:
    """A meter that shows nothing (the interface every meter implements)."""

    def compiling(self) -> None:
        """Compilation starts."""

    def start(self, total: int, samples_per_step: float | None, replicas: int = 1, start: int = 0) -> None:
        """The run starts (after compilation): ``total`` steps of ``samples_per_step``
        (``None``: an engine that draws no samples, e.g. the flow) over ``replicas``, from
        step ``start`` (a run resumed from a checkpoint)."""

    def update(self, done: int, fraction: float | None = None, diverged: int = 0) -> None:
        """``done`` steps are done; ``fraction`` of the work (default ``done / total``; the
        flow's is its solver's clock ``tau / tau_end``); ``diverged`` replicas so far."""

    def close(self) -> None:
        """The run ended (finished or interrupted)."""


class Progress(NoProgress):
    """Steps done, samples/s, replicas diverged and time left.

    The time left is ``(1 - f) / (df/dt)`` with ``f`` the fraction of the work done and
    ``df/dt`` its rate over the more recent half of the elapsed time: a flow's cost per
    unit of ``tau`` changes as the run goes on (benchmarks/NOTES.md, "The `flow` engine at
    P = m = 256 and beyond"), so a rate since the start would mislead.

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
        self.replicas = 1
        self.last_print = 0.0  # set at start: the first line comes after `every` seconds of running
        self.done = self.start_step = 0
        self.diverged = 0
        self._history = []  # (elapsed, fraction) of the updates, from el / 2 on

    def compiling(self) -> None:
        self.t_compile = time.perf_counter()
        print(f"{self.label}compiling...", file=self.stream, flush=True)

    def start(self, total: int, samples_per_step: float | None, replicas: int = 1, start: int = 0) -> None:
        self.total = int(total)
        self.sps = None if samples_per_step is None else float(samples_per_step)
        self.replicas = int(replicas)
        self.done = self.start_step = int(start)
        self.t0 = self.last_print = time.perf_counter()
        # a resumed run's first fraction is not known until its first update
        self._history = [] if start else [(0.0, 0.0)]
        if self.t_compile is not None:
            print(f"{self.label}compiled in {self.t0 - self.t_compile:.1f} s", file=self.stream, flush=True)
        if self.bar:
            try:  # tqdm's notebook widget needs ipywidgets; without it, the text bar (no warning)
                import ipywidgets  # noqa: F401
                from tqdm.auto import tqdm
            except ImportError:
                from tqdm import tqdm

            # tqdm's own estimate assumes a constant rate in steps; ours is in the postfix
            self._tqdm = tqdm(
                total=self.total,
                initial=self.start_step,
                desc=self.label.strip() or "steps",
                unit="step",
                unit_scale=True,
                file=self.stream,
                leave=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    def _left(self, el: float, f: float) -> float:
        """Seconds left at the rate of the work fraction over the recent half of ``el``."""
        self._history.append((el, f))
        while len(self._history) > 2 and self._history[1][0] <= el / 2:
            self._history.pop(0)
        t_a, f_a = self._history[0]
        return (el - t_a) * (1.0 - f) / (f - f_a) if f > f_a and el > t_a else float("nan")

    def _fields(self, el: float, left: float) -> list[str]:
        out = []
        if self.sps is not None and el > 0:
            out.append(f"{(self.done - self.start_step) * self.sps / el:,.0f} samples/s")
        if self.diverged:
            out.append(f"{self.diverged}/{self.replicas} diverged")
        out.append(f"left {_clock(left)}")
        return out

    def update(self, done: int, fraction: float | None = None, diverged: int = 0) -> None:
        if self.t0 is None:
            return
        now = time.perf_counter()
        el = now - self.t0
        f = float(fraction) if fraction is not None else int(done) / max(self.total, 1)
        f = min(max(f, 0.0), 1.0)
        left = self._left(el, f)
        self.diverged = int(diverged)
        if self._tqdm is not None:
            self._tqdm.update(int(done) - self.done)
            self.done = int(done)
            self._tqdm.set_postfix_str(", " + ", ".join(self._fields(el, left)), refresh=False)
            return
        self.done = int(done)
        final = self.done >= self.total
        if not final and now - self.last_print < self.every:
            return
        self.last_print = now
        print(
            f"{self.label}step {self.done:,}/{self.total:,} ({100.0 * f:5.1f}% done)  "
            + "  ".join([*self._fields(el, left)[:-1], f"elapsed {_clock(el)}", self._fields(el, left)[-1]]),
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
