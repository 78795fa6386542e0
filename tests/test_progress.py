"""The progress meter: clock after compilation, the time left from steps or from the
fraction of the work, plain lines in a log file."""

import io

from scaling_sgd._src import progress as pg


def test_time_left_from_steps_or_from_the_fraction_of_the_work(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(pg.time, "perf_counter", lambda: clock["t"])
    out = io.StringIO()
    p = pg.Progress(stream=out, every=0.0, bar=False)
    p.compiling()
    clock["t"] = 130.0  # 30 s of compilation: not counted in the rate
    p.start(1000, 2.0)
    clock["t"] = 140.0
    p.update(250)  # 10 s for a quarter of the steps: 30 s left, 50 samples/s
    line = out.getvalue().strip().splitlines()[-1]
    assert "compiled in 30.0 s" in out.getvalue()
    assert "step 250/1,000" in line and "50 samples/s" in line and "left   30.0s" in line
    clock["t"] = 150.0
    p.update(500, fraction=0.8)  # the flow: 80% of the log points after 20 s -> 5 s left
    assert "left    5.0s" in out.getvalue().strip().splitlines()[-1]
