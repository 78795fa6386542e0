"""The progress meter: clock after compilation, the time left from the fraction of the
work (steps, or the flow solver's clock), replicas diverged, plain lines in a log file."""

import io

from scaling_sgd._src import progress as pg


def _meter(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(pg.time, "perf_counter", lambda: clock["t"])
    out = io.StringIO()
    return clock, out, pg.Progress(stream=out, every=0.0, bar=False)


def _last(out):
    return out.getvalue().strip().splitlines()[-1]


def test_time_left_from_steps_with_rate_and_replicas_diverged(monkeypatch):
    clock, out, p = _meter(monkeypatch)
    p.compiling()
    clock["t"] = 130.0  # 30 s of compilation: not counted in the rate
    p.start(1000, 2.0, replicas=4)
    clock["t"] = 140.0
    p.update(250)  # 10 s for a quarter of the steps: 30 s left, 50 samples/s
    assert "compiled in 30.0 s" in out.getvalue()
    line = _last(out)
    assert "step 250/1,000" in line and "50 samples/s" in line and "left 30.0 s" in line and "diverged" not in line
    clock["t"] = 160.0
    p.update(500, diverged=3)  # from el / 2 = 15 s on: 0.25 in 20 s -> 0.5 left is 40 s
    line = _last(out)
    assert "3/4 diverged" in line and "left 40.0 s" in line and "33 samples/s" in line


def test_flow_time_left_from_its_clock_and_no_sample_rate(monkeypatch):
    clock, out, p = _meter(monkeypatch)
    p.start(10**6, None, replicas=2)  # the flow draws no samples
    clock["t"] = 120.0
    p.update(1000, fraction=0.4)  # tau at 40% after 20 s -> 30 s left, whatever the steps say
    line = _last(out)
    assert "samples/s" not in line and "left 30.0 s" in line and "( 40.0% done)" in line
    clock["t"] = 160.0
    p.update(2000, fraction=0.6)  # 20% more took the last 40 s: at that rate 80 s left, not 40
    assert "left 1:20" in _last(out)
    clock["t"] = 220.0
    p.update(10**5, fraction=0.8)  # from el / 2 = 60 s on: 0.2 in 60 s, so 0.2 left is 60 s
    assert "left 1:00" in _last(out)


def test_clock_format():
    assert [pg._clock(s) for s in (1.64, 59.94, 272.0, 3723.0, float("nan"))] == ["1.6 s", "59.9 s", "4:32", "1:02:03", "?"]
