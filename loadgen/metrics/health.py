"""Generator self-monitoring: is the tool itself keeping up?

- ``lateness``: how late each send happened after its intended time (recorded by the sender).
- ``loop_lag``: how late a 10 ms sleep wakes up; a busy or blocked event loop shows here first.
- CPU: process CPU seconds per interval (``cpu_percent`` gauge; 100 = one full core).

A run is *saturated* when lateness p99 or CPU passes its limit: its numbers then describe the
generator, not the target, and the summary says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import trio
from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import values_at
from loadgen.metrics.registry import Metrics

__all__ = ["CpuGauge", "HealthLimits", "monitor_loop_lag", "p99_ms", "saturation_reasons"]

LAG_PERIOD: Final = 0.010


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthLimits:
    lateness_p99_ms: float = 50.0
    loop_lag_p99_ms: float = 50.0
    cpu_percent: float = 95.0


def p99_ms(histogram: HdrHistogram | None) -> float | None:
    """The p99 of a microsecond histogram in milliseconds (None: no data)."""
    if histogram is None or not histogram.get_total_count():
        return None
    [value] = values_at(histogram, [99.0])
    return value / 1000


def saturation_reasons(
    limits: HealthLimits,
    *,
    lateness_p99_ms: float | None,
    loop_lag_p99_ms: float | None,
    cpu_percent: float | None,
) -> list[str]:
    """The one verdict on the generator: each limit passed, in words (empty: not saturated).

    The live run (CPU over its load window) and a rebuilt folder (mean of the CPU column) both
    judge with this, so a summary says the same whichever wrote it."""
    reasons = []
    for label, value, limit in (
        ("send lateness", lateness_p99_ms, limits.lateness_p99_ms),
        ("event-loop lag", loop_lag_p99_ms, limits.loop_lag_p99_ms),
    ):
        if value is not None and value > limit:
            reasons.append(f"{label} p99 {value:.1f} ms > {limit:g} ms")
    if cpu_percent is not None and cpu_percent > limits.cpu_percent:
        reasons.append(f"CPU {cpu_percent:.0f}% of a core > {limits.cpu_percent:g}%")
    return reasons


async def monitor_loop_lag(
    metrics: Metrics,
    period: float = LAG_PERIOD,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record how late a periodic sleep wakes (anchored: lateness never accumulates)."""
    recorder = metrics.single("loop_lag")
    next_wake = trio.current_time() + period
    task_status.started()
    while True:
        await trio.sleep_until(next_wake)
        now = trio.current_time()
        recorder.record(now - next_wake)
        next_wake += period
        if next_wake < now:  # slept through several periods: skip them, the lag is recorded
            next_wake = now + period


class CpuGauge:
    """Process CPU use between successive calls, in percent of one core."""

    __slots__ = ("_cpu", "_wall")

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def __call__(self) -> float:
        cpu, wall = time.process_time(), time.perf_counter()
        used, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        return 100.0 * used / elapsed if elapsed > 0 else 0.0
