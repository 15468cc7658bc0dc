"""Pacing: from rate stages to the intended send time of every operation (pure, exact).

Theory of operation
-------------------
An open-model load generator must not let the target pace it. So the *intended* send time of
operation ``i`` is fixed before the run starts, from the stages alone, and the sender's only job
is to be there on time (wrk2's ``usec_to_next_send``):

- The stages define a rate ``r(t)`` that is piecewise constant or linear (a ramp goes from the
  previous stage's end rate to its own). Its integral ``N(t) = ∫₀ᵗ r`` is the number of
  operations the schedule asks for by time ``t``: piecewise linear or quadratic, so both ``N``
  and its inverse have closed forms.
- Open model: operation ``i`` (``i = 0, 1, 2, ...``) is intended at ``N⁻¹(i)``. With one
  constant stage this is exactly ``i / rate``; nothing is accumulated from one operation to the
  next, so float error never drifts and a late wake-up never shifts the operations after it.
- Poisson model: the same inverse applied to the arrival times of a *unit-rate* Poisson process
  (cumulative sums of seeded Exp(1) draws). This is the time-rescaling theorem: the result is a
  Poisson process of intensity ``r(t)``, ramps included, reproducible from the seed.
- The inverse of the quadratic piece is written ``τ = 2m / (r₀ + √(r₀² + 2am))`` rather than the
  school formula, which cancels catastrophically when the slope ``a`` is tiny or negative.

How the sender uses it (``loadgen.platform.sender``): it sleeps *until* the next intended time
(``trio.sleep_until``, never ``sleep(interval)``), then sends every operation that is due, each
with its own intended time. ``trio.sleep_until`` wakes 0.5-1.2 ms late here, because the epoll
timeout is rounded up to whole milliseconds; that lateness is not hidden: latency is measured from
the intended time, and ``now - intended`` of every send is recorded as ``lateness``. A generator
that falls behind keeps sending (late) and says so; it never skips an intended time.

Everything here is plain arithmetic on floats: no clock is read, so tests compare exact tables.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config pulls in the HTTP layer (and trio); this module stays pure
    from loadgen.platform.config import ArrivalModel, Stage


__all__ = ["Schedule", "Segment"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One stage on the schedule's time axis: ``[start, end)``, rates at both ends, and
    ``N(start)`` / ``N(end)``, the cumulative operation counts at its edges."""

    start: float
    end: float
    rate0: float
    rate1: float
    count0: float
    count1: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def rate_at(self, tau: float) -> float:
        return self.rate0 + (self.rate1 - self.rate0) * tau / self.duration

    def count_at(self, tau: float) -> float:
        """Operations the segment asks for in its first ``tau`` seconds."""
        return self.rate0 * tau + (self.rate1 - self.rate0) * tau * tau / (2 * self.duration)

    def time_of(self, m: float) -> float:
        """Seconds into the segment when its ``m``-th operation is due (inverse of count_at)."""
        if m <= 0:
            return 0.0
        r0, r1 = self.rate0, self.rate1
        if r0 == r1:
            return m / r0
        slope = (r1 - r0) / self.duration
        disc = max(0.0, r0 * r0 + 2 * slope * m)
        return 2 * m / (r0 + math.sqrt(disc))


class Schedule:
    """The stages laid end to end: ``N(t)``, its inverse and the intended send times."""

    __slots__ = ("duration", "segments", "total")

    def __init__(self, stages: Sequence[Stage]) -> None:
        if not stages:
            raise ValueError("a schedule needs at least one stage")
        segments: list[Segment] = []
        start = 0.0
        count = 0.0
        previous_rate = 0.0
        for stage in stages:
            rate0 = previous_rate if stage.ramp else stage.rate
            seg = Segment(start, start + stage.duration, rate0, stage.rate, count, 0.0)
            count1 = count + seg.count_at(stage.duration)
            seg = Segment(seg.start, seg.end, rate0, stage.rate, count, count1)
            segments.append(seg)
            start, count, previous_rate = seg.end, count1, stage.rate
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.duration = start
        self.total = count  # N(duration): operations the schedule asks for (expected, for Poisson)

    def __repr__(self) -> str:
        return f"<Schedule {len(self.segments)} stages {self.duration:g} s {self.total:g} ops>"

    @property
    def offered_rate(self) -> float:
        """Mean operations per second the schedule asks for."""
        return self.total / self.duration

    def segment_at(self, t: float) -> int:
        """Index of the stage running at ``t`` (the last one at or after the end)."""
        for i, seg in enumerate(self.segments):
            if t < seg.end:
                return i
        return len(self.segments) - 1

    def rate_at(self, t: float) -> float:
        seg = self.segments[self.segment_at(t)]
        return seg.rate_at(min(max(t - seg.start, 0.0), seg.duration))

    def count_until(self, t: float) -> float:
        """``N(t)``: operations intended in ``[0, t)`` (expected value for Poisson)."""
        if t <= 0:
            return 0.0
        if t >= self.duration:
            return self.total
        seg = self.segments[self.segment_at(t)]
        return seg.count0 + seg.count_at(t - seg.start)

    def time_of(self, n: float) -> float:
        """``N⁻¹(n)``: when the cumulative count reaches ``n`` (``n < total``)."""
        for seg in self.segments:
            if n < seg.count1:
                return seg.start + seg.time_of(n - seg.count0)
        return self.duration

    def _inverse(self, counts: Iterator[float]) -> Iterator[float]:
        """Map an increasing sequence of counts to times, walking the segments once."""
        segments = self.segments
        j = 0
        seg = segments[0]
        for n in counts:
            while n >= seg.count1:
                j += 1
                if j == len(segments):
                    return
                seg = segments[j]
            m = n - seg.count0
            if seg.rate0 == seg.rate1:
                yield seg.start + m / seg.rate0
            else:
                yield seg.start + seg.time_of(m)

    def open_times(self) -> Iterator[float]:
        """Operation ``i`` at ``N⁻¹(i)``: ``i / rate`` for one constant stage."""
        return self._inverse(_naturals())

    def poisson_times(self, seed: int) -> Iterator[float]:
        """A seeded Poisson process of intensity ``r(t)`` (time-rescaled unit process)."""
        return self._inverse(_unit_poisson(random.Random(seed)))

    def times(self, model: ArrivalModel, seed: int) -> Iterator[float]:
        """Intended send times in seconds from the start, for the ``open``/``poisson`` models."""
        if model == "open":
            return self.open_times()
        if model == "poisson":
            return self.poisson_times(seed)
        raise ValueError(f"the {model!r} model has no intended times (it is paced by completions)")


def _naturals() -> Iterator[float]:
    i = 0
    while True:
        yield float(i)
        i += 1


def _unit_poisson(rng: random.Random) -> Iterator[float]:
    expovariate = rng.expovariate
    total = 0.0
    while True:
        total += expovariate(1.0)
        yield total
