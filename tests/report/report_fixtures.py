"""Helpers of the report tests: a synthetic run written the way a real one is: ``Metrics`` + ``run_intervals`` + ``RunWriter``.

The load is a 10 s ramp from 5 to 50 operations/s then a 10 s hold at 50/s, generated on the trio
clock (tests use ``autojump_clock``, so the 20 s take no real time). Latencies are a fixed
function of the operation number, so every count is known in advance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

from loadgen.metrics.intervals import Interval, run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.report.results import RunWriter

START_EPOCH = 1_700_000_000.0
RAMP_S = 10
HOLD_S = 10
PEAK_RATE = 50
THRESHOLDS = [
    "p99(complete) < 250ms",
    "error_rate < 0.1%",  # fails: 1 in 20 operations fails
    "achieved_rate >= 0.9 * offered_rate",
]


@dataclass
class Recorded:
    """What the synthetic load recorded, to check the files against."""

    directory: Path
    complete: int = 0
    first_response: int = 0
    sent: int = 0
    failed: int = 0
    complete_values_us: list[int] = field(default_factory=list)


def rate_at(second: int) -> int:
    return PEAK_RATE * (second + 1) // RAMP_S if second < RAMP_S else PEAK_RATE


async def write_run(
    directory: Path,
    *,
    seconds: int = RAMP_S + HOLD_S,
    finish: bool = True,
    with_first_response: bool = True,
    run_extra: dict[str, Any] | None = None,
) -> Recorded:
    """Write a results folder; ``finish=False`` stops without the final interval (as a kill)."""
    metrics = Metrics(["ack", "first_response", "complete"])
    recorded = Recorded(directory)
    offered = {"rate": 0}
    run = {
        "campaign": "synthetic",
        "offered_rate": (sum(rate_at(s) for s in range(RAMP_S + HOLD_S))) / (RAMP_S + HOLD_S),
        "load_duration_s": float(RAMP_S + HOLD_S),
        "thresholds": THRESHOLDS,
        **(run_extra or {}),
    }
    writer = RunWriter(directory, START_EPOCH, run)

    def gauges() -> dict[str, object]:
        second = int(trio.current_time() - t0)
        return {
            "stage": "ramp" if second <= RAMP_S else "hold",
            "offered_rate": float(offered["rate"]),
            "in_flight": offered["rate"] // 5,
            "cpu_percent": 20.0 + second,
        }

    async def load() -> None:
        i = 0
        for second in range(seconds):
            rate = offered["rate"] = rate_at(second)
            for k in range(rate):
                await trio.sleep_until(t0 + second + k / rate)
                service_us = 2_000 + (i % 50) * 200
                stall_us = 40_000 if second == 12 else 0  # a hiccup: intended >> service
                intended_us = service_us + stall_us
                metrics.single("lateness").record(stall_us / 1e6)
                metrics.single("loop_lag").record(0.0005)
                metrics.phase("ack").record(intended_us / 4e6, service_us / 4e6)
                if with_first_response:
                    metrics.phase("first_response").record(intended_us / 2e6, service_us / 2e6)
                    recorded.first_response += 1
                metrics.phase("complete").record(intended_us / 1e6, service_us / 1e6)
                recorded.complete += 1
                recorded.complete_values_us.append(intended_us)
                metrics.count("ops.sent")
                metrics.count("ops.completed")
                if i % 20 == 7:
                    metrics.count("ops.failed")
                    metrics.count("result.ERROR_PROCESSING")
                    recorded.failed += 1
                else:
                    metrics.count("ops.succeeded")
                    metrics.count("result.SUCCESSFUL")
                recorded.sent += 1
                i += 1

    def sink(interval: Interval) -> None:
        if finish or not interval.final:  # a killed run never writes its final interval
            writer(interval)

    t0 = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            cancel = trio.CancelScope()

            async def intervals(task_status: trio.TaskStatus[None]) -> None:
                with cancel:
                    await run_intervals(
                        metrics, [sink], t0=t0, period=1.0, gauges=gauges, task_status=task_status
                    )

            await nursery.start(intervals)
            await load()
            await trio.sleep_until(t0 + seconds + 0.5)
            cancel.cancel()  # emits the final, partial interval
    finally:
        writer.close()
    return recorded
