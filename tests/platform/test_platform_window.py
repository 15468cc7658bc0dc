"""Rates of an interrupted run cover the load window that ran, not the plan (issue 15 item 5).

A ramp from 0 to 200 ops/s over 10 s asks for 1,000 operations at an average of 100/s. Stopped at
2.5 s (a Ctrl-C), the run was asked for N(2.5) = 10 * 2.5^2 = 62.5 operations over 2.5 s: its
offered rate is 25/s, its achieved rate is what completed over those 2.5 s. Comparing its
achieved rate with the whole plan's 100/s would call a healthy run a 75 % shortfall.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from platform_fakes import FreezingDevice

from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, PlatformInfo, SouthAPI, Stage, run_platform
from loadgen.platform.runner import PlatformResult


def _config() -> PlatformConfig:
    ramp = Stage(duration=10.0, rate=200.0, ramp=True)
    return PlatformConfig(arrival=Arrival(stages=(ramp,)), south=SouthAPI(linger=0.0), seed=1)


async def test_a_stopped_run_is_measured_over_the_window_that_ran(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[PlatformResult] = []

    async def platform(task_status: trio.TaskStatus[PlatformInfo]) -> None:
        results.append(
            await run_platform(
                _config(), Metrics(), transport=FreezingDevice(), task_status=task_status
            )
        )

    async with trio.open_nursery() as nursery:
        info: PlatformInfo = await nursery.start(platform)
        await trio.sleep(2.5)
        info.stop_load()
    [result] = results
    assert result.load_duration_s == pytest.approx(2.5)
    assert result.offered_rate == pytest.approx(62.5 / 2.5)
    completed = result.counters["ops.completed"]
    assert completed == result.counters["ops.sent"] == 63  # i / rate at t0 + sqrt(i / 10)
    assert result.achieved_rate == pytest.approx(completed / 2.5)


async def test_a_whole_run_is_measured_over_the_plan(
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await run_platform(_config(), Metrics(), transport=FreezingDevice())
    assert result.load_duration_s == pytest.approx(10.0)
    assert result.offered_rate == pytest.approx(100.0)
    assert result.counters["ops.sent"] == 1000
