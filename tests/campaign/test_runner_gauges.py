"""The runner's gauges per interval: the offered rate is the schedule's average over the interval,
``(N(t1) - N(t0)) / (t1 - t0)``, like the sent and completed rates beside it (the rate at the
interval's end would make a ramp look like a shortfall), and the phase says load or drain."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from loadgen.campaign.runner import _Run
from loadgen.campaign.scenario import load_scenario
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import Stage
from loadgen.platform.schedule import Schedule
from loadgen.report.results import timeseries_row

SMOKE = Path(__file__).parents[2] / "scenarios" / "smoke.toml"


@dataclass
class _Stats:
    elapsed: float
    phase: str
    in_flight: int = 0
    queued: int = 0


@dataclass
class _Platform:
    """What the runner reads of a running platform: its schedule and its statistics."""

    schedule: Schedule
    t0: float = 0.0
    phase: str = "load"
    stats: list[_Stats] = field(default_factory=list)

    def statistics(self) -> _Stats:
        return _Stats(trio.current_time() - self.t0, self.phase)


async def test_offered_is_the_average_over_each_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run(load_scenario(SMOKE).scenario, Metrics())
    # a ramp 0 -> 100 ops/s over 10 s: N(t) = 5 t^2
    platform = _Platform(Schedule((Stage(duration=10.0, rate=100.0, ramp=True),)))
    platform.t0 = trio.current_time()
    run._last_gauge = platform.t0
    run.platform = platform  # type: ignore[assignment]
    offered = []
    for _ in range(3):
        await trio.sleep(1.0)
        offered.append(run.gauges()["offered_rate"])
    # N(1) - N(0) = 5, N(2) - N(1) = 15, N(3) - N(2) = 25; at the interval's end the rate would
    # read 10, 20, 30
    assert offered == [5.0, 15.0, 25.0]
    platform.phase = "drain"
    run.load_stopped_at = 3.0  # a Ctrl-C at 3 s: nothing more was asked for after it
    await trio.sleep(1.0)
    gauges = run.gauges()
    assert gauges["offered_rate"] == 0.0
    assert gauges["phase"] == "drain"


@pytest.mark.parametrize(("phase", "shown"), [("load", "load"), ("drain", "drain")])
async def test_the_phase_reaches_the_time_series(phase: str, shown: str) -> None:
    from loadgen.metrics.intervals import Interval

    row = timeseries_row(Interval(0, 0.0, 1.0, {}, {}, {}, {"phase": phase}))
    assert row["phase"] == shown
