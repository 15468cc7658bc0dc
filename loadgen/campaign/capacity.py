"""Capacity search: the highest offered rate at which the target meets every SLO.

Theory of operation
-------------------
The search drives a *step runner* (``run_step(rate) -> StepResult``: warm up at ``rate``, then
measure a hold at ``rate``) and never looks inside it, so the same algorithm searches a real
system, the loopback pair, or a fake in the tests.

1. **Geometric phase**: from ``start_rate``, multiply by ``growth`` while steps pass, until one
   fails or ``max_rate`` is reached.
2. **Bisection**: between the last passing rate ``lo`` and the first failing one ``hi``, try the
   geometric mean until ``hi / lo - 1 <= resolution``. The answer is ``lo``: the highest rate
   *measured* to pass, never an interpolation.

With ``integral`` the step parameter is a whole number (a device count, ``--dimension
devices``): every value tried is rounded, and bisection also stops when no whole number lies
strictly between ``lo`` and ``hi``.

A step passes when every SLO holds, achieved >= ``min_achieved_ratio`` x offered, and the error
rate is within ``max_error_rate``. A step where the *generator* was saturated (its own lateness or
CPU over the limits) is a third verdict, ``generator_limit``: it stops the search, and the result
says the generator's ceiling was reached, never that the target's capacity was found.

The report names the **knee** only where the p99 of ``complete`` bends (``knee_rule``): going
through the steps by rate (those the generator limited left out), the knee is the first step
whose p99 is more than ``knee_factor`` x the p99 at the lowest rate measured *and* grew faster
than the rate since the step before it (p99 ratio > rate ratio). A flat curve has none, and so
has one that only grows in proportion to the rate (a fixed backlog per operation), however far
it climbs: that is a slope, not a bend. The knee is the rate of that step (the bend lies
between it and the step before). The report also names the **phase that degraded first**
(at the first failing step, the phase whose p99 grew most relative to the lowest rate, if one
grew by more than ``DEGRADED_GROWTH``: a step that failed on errors or throughput alone, latency
flat, names none).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from loadgen.errors import ConfigError

__all__ = ["CapacityResult", "SearchConfig", "StepResult", "knee_rate", "search"]

Verdict = Literal["pass", "fail", "generator_limit"]
#: A phase whose p99 grew less than this (x its value at the lowest rate) has not degraded.
DEGRADED_GROWTH: Final = 1.2


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchConfig:
    start_rate: float = 100.0
    growth: float = 2.0
    max_rate: float = 1_000_000.0
    resolution: float = 0.05  # stop bisecting when hi/lo - 1 <= resolution
    max_steps: int = 30
    knee_factor: float = 2.0
    integral: bool = False  # the parameter is a count: try whole numbers only

    def __post_init__(self) -> None:
        if not self.start_rate > 0:
            raise ConfigError("expected a start rate > 0", key="capacity.start_rate")
        if not self.growth > 1:
            raise ConfigError("expected growth > 1", key="capacity.growth")
        if not 0 < self.resolution < 1:
            raise ConfigError("expected 0 < resolution < 1", key="capacity.resolution")
        if self.max_rate < self.start_rate:
            raise ConfigError("expected max_rate >= start_rate", key="capacity.max_rate")
        if self.integral and self.start_rate < 1:
            raise ConfigError("expected a start >= 1 for a count", key="capacity.start_rate")

    def snap(self, value: float) -> float:
        """``value`` as the search tries it (rounded to a whole number when ``integral``)."""
        return float(max(1, round(value))) if self.integral else value

    def between(self, lo: float, hi: float) -> float | None:
        """The next value to try between ``lo`` (passed) and ``hi`` (failed), or None when the
        interval is narrow enough."""
        if hi / lo - 1 <= self.resolution:
            return None
        mid = self.snap(math.sqrt(lo * hi))
        if self.integral and not lo < mid < hi:
            mid = lo + 1
        return mid if lo < mid < hi else None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    offered_rate: float
    achieved_rate: float
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    p99_ms: dict[str, float | None] = field(default_factory=dict)  # phase -> p99 of the hold
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_rate": self.offered_rate,
            "achieved_rate": self.achieved_rate,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "p99_ms": self.p99_ms,
            "summary": self.summary,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityResult:
    steps: tuple[StepResult, ...]
    max_sustainable_rate: float | None  # highest measured passing rate
    breaking_rate: float | None  # lowest measured failing rate
    knee_rate: float | None
    first_degraded_phase: str | None
    generator_limited: bool
    exhausted: bool  # max_rate or max_steps reached before a failure

    def verdict_text(self) -> str:
        if self.generator_limited:
            limit = next(s.offered_rate for s in self.steps if s.verdict == "generator_limit")
            passed = (
                f"; the target passed every SLO up to {self.max_sustainable_rate:.0f} ops/s"
                if self.max_sustainable_rate
                else ""
            )
            return (
                f"The load generator saturated at {limit:.0f} ops/s before the target failed"
                f"{passed}. This is the generator's limit, not the target's capacity: add shards "
                "or machines and search again."
            )
        if self.max_sustainable_rate is None:
            return (
                f"The target failed the SLO at the lowest rate tried "
                f"({self.steps[0].offered_rate:.0f} ops/s): lower start_rate."
            )
        if self.exhausted:
            return (
                f"The target met every SLO up to {self.max_sustainable_rate:.0f} ops/s, the "
                "highest rate the search was allowed to try: raise max_rate."
            )
        text = (
            f"Maximum sustainable rate: {self.max_sustainable_rate:.0f} ops/s (meets every SLO); "
            f"it breaks at {self.breaking_rate:.0f} ops/s."
        )
        if self.knee_rate is not None:
            text += f" The p99 latency bends (knee) at {self.knee_rate:.0f} ops/s."
        if self.first_degraded_phase:
            text += f" The phase that degraded first: {self.first_degraded_phase}."
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_sustainable_rate": self.max_sustainable_rate,
            "breaking_rate": self.breaking_rate,
            "knee_rate": self.knee_rate,
            "first_degraded_phase": self.first_degraded_phase,
            "generator_limited": self.generator_limited,
            "exhausted": self.exhausted,
            "verdict": self.verdict_text(),
            "steps": [step.as_dict() for step in self.steps],
        }


def knee_rate(steps: Sequence[StepResult], factor: float) -> float | None:
    """The knee of the p99 of ``complete`` over the steps, or None where it does not bend (the
    rule is in the module docstring)."""
    points = sorted(
        (step.offered_rate, p99)
        for step in steps
        if step.verdict != "generator_limit" and (p99 := step.p99_ms.get("complete"))
    )
    if len(points) < 2:
        return None
    base = points[0][1]
    for (rate0, p99_0), (rate1, p99_1) in itertools.pairwise(points):
        if p99_1 > factor * base and p99_1 / p99_0 > rate1 / rate0:
            return rate1
    return None


def _first_degraded(steps: list[StepResult]) -> str | None:
    ordered = sorted(steps, key=lambda s: s.offered_rate)
    failing = [s for s in ordered if s.verdict == "fail"]
    if not failing:
        return None
    baseline = ordered[0].p99_ms
    worst, worst_growth = None, DEGRADED_GROWTH
    for phase, p99 in failing[0].p99_ms.items():
        base = baseline.get(phase)
        if p99 is None or not base:
            continue
        growth = p99 / base
        if growth > worst_growth:
            worst, worst_growth = phase, growth
    return worst


async def search(
    run_step: Callable[[float], Awaitable[StepResult]],
    config: SearchConfig,
    *,
    on_step: Callable[[StepResult], None] = lambda step: None,
) -> CapacityResult:
    steps: list[StepResult] = []

    async def step(rate: float) -> StepResult:
        result = await run_step(rate)
        steps.append(result)
        on_step(result)
        return result

    lo: float | None = None
    hi: float | None = None
    generator_limited = False
    rate = config.snap(config.start_rate)
    while len(steps) < config.max_steps:
        result = await step(rate)
        if result.verdict == "generator_limit":
            generator_limited = True
            break
        if result.verdict == "fail":
            hi = rate
            break
        lo = rate
        if rate >= config.max_rate:
            break
        grown = config.snap(rate * config.growth)
        if grown <= rate:  # a small count times a small growth rounds back to itself
            grown = rate + 1
        rate = min(grown, config.max_rate)
    if not generator_limited and lo is not None and hi is not None:
        while len(steps) < config.max_steps:
            mid = config.between(lo, hi)
            if mid is None:
                break
            result = await step(mid)
            if result.verdict == "generator_limit":
                generator_limited = True
                break
            if result.verdict == "pass":
                lo = mid
            else:
                hi = mid
    return CapacityResult(
        steps=tuple(steps),
        max_sustainable_rate=lo,
        breaking_rate=hi,
        knee_rate=knee_rate(steps, config.knee_factor),
        first_degraded_phase=_first_degraded(steps),
        generator_limited=generator_limited,
        exhausted=hi is None and not generator_limited,
    )
