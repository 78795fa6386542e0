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
    p.update(500, fraction=0.4)  # the flow: 40% of the log points after 20 s -> 30 s left
    assert "left   30.0s" in out.getvalue().strip().splitlines()[-1]
    clock["t"] = 190.0
    p.update(600, fraction=0.6)  # 20% more took the last 40 s: at that rate 80 s left, not 40
    assert "left   80.0s" in out.getvalue().strip().splitlines()[-1]
    clock["t"] = 250.0
    p.update(700, fraction=0.8)  # from el / 2 = 60 s on: 0.2 in 60 s, so 0.2 left is 60 s
    assert "left   60.0s" in out.getvalue().strip().splitlines()[-1]
