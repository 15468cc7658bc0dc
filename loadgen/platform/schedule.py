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

A rate change while the load runs (the dashboard's "change the rate now") is a stage appended
at time ``t``: ``with_stage_from(t, rate)`` keeps ``N`` exactly as it was on ``[0, t)`` (the
segment cut at ``t`` keeps its own line, so its arithmetic is bit for bit the old one) and goes
on at the new rate from ``N(t)``. The arrival counts themselves (``Arrivals``: ``0, 1, 2, ...``
or the unit Poisson arrivals) are not redrawn: the sender maps the same count sequence through
the new schedule, starting with the count it had drawn but not issued yet. So every operation
keeps an intended time fixed by the schedule, never by when the change arrived: the ones already
due before ``t`` keep theirs (a sender behind schedule still owes them), the next one is at
``t + (n - N(t)) / rate``.

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


__all__ = ["Arrivals", "Schedule", "Segment"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One stage on the schedule's time axis: ``[start, end)``, and ``N(start)`` / ``N(end)``,
    the cumulative operation counts at its edges. Its rate is the line from ``rate0`` at
    ``start`` to ``rate1`` at ``start + span``: ``span`` is the stage's length, longer than
    ``end - start`` only for a stage a rate change cut short (which keeps its line unchanged)."""

    start: float
    end: float
    rate0: float
    rate1: float
    count0: float
    count1: float
    span: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def rate_at(self, tau: float) -> float:
        return self.rate0 + (self.rate1 - self.rate0) * tau / self.span

    def count_at(self, tau: float) -> float:
        """Operations the segment asks for in its first ``tau`` seconds."""
        return self.rate0 * tau + (self.rate1 - self.rate0) * tau * tau / (2 * self.span)

    def time_of(self, m: float) -> float:
        """Seconds into the segment when its ``m``-th operation is due (inverse of count_at)."""
        if m <= 0:
            return 0.0
        r0, r1 = self.rate0, self.rate1
        if r0 == r1:
            return m / r0
        slope = (r1 - r0) / self.span
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
            end = start + stage.duration
            seg = Segment(start, end, rate0, stage.rate, count, 0.0, end - start)
            count1 = count + seg.count_at(stage.duration)
            seg = Segment(seg.start, seg.end, rate0, stage.rate, count, count1, seg.span)
            segments.append(seg)
            start, count, previous_rate = seg.end, count1, stage.rate
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.duration = start
        self.total = count  # N(duration): operations the schedule asks for (expected, for Poisson)

    @classmethod
    def _of(cls, segments: Sequence[Segment]) -> Schedule:
        schedule = cls.__new__(cls)
        schedule.segments = tuple(segments)
        schedule.duration = segments[-1].end
        schedule.total = segments[-1].count1
        return schedule

    def with_stage_from(self, t: float, rate: float) -> Schedule:
        """This schedule until ``t``, then a constant ``rate`` until its end (a rate change made
        at ``t``): ``N`` is unchanged before ``t``, so is every intended time before it."""
        if not 0 <= t < self.duration:
            raise ValueError(f"expected a time within the load [0, {self.duration:g}), got {t!r}")
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"expected a rate >= 0, got {rate!r}")
        kept: list[Segment] = []
        for seg in self.segments:
            if seg.end <= t:
                kept.append(seg)
                continue
            if seg.start < t:  # cut at t, on its own line
                cut = seg.count0 + seg.count_at(t - seg.start)
                kept.append(Segment(seg.start, t, seg.rate0, seg.rate1, seg.count0, cut, seg.span))
            break
        count = self.count_until(t)
        end = self.duration
        kept.append(Segment(t, end, rate, rate, count, count + rate * (end - t), end - t))
        return Schedule._of(kept)

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

    def times_of(self, arrivals: Iterator[float]) -> Iterator[float]:
        """The intended times of ``arrivals`` (an ``Arrivals``) under this schedule."""
        return self._inverse(arrivals)

    def times(self, model: ArrivalModel, seed: int) -> Iterator[float]:
        """Intended send times in seconds from the start, for the ``open``/``poisson`` models."""
        if model == "open":
            return self.open_times()
        if model == "poisson":
            return self.poisson_times(seed)
        raise ValueError(f"the {model!r} model has no intended times (it is paced by completions)")


class Arrivals:
    """The arrival counts of a model, in order: ``0, 1, 2, ...`` (open) or the arrival times of
    a seeded unit-rate Poisson process (poisson), each drawn once. ``back()`` makes the next
    draw give the last count again: the one whose time the sender had drawn but not issued when
    a rate change replaced the schedule, so that it is mapped through the new one."""

    __slots__ = ("_again", "_counts", "last")

    def __init__(self, model: ArrivalModel, seed: int) -> None:
        if model == "open":
            self._counts = _naturals()
        elif model == "poisson":
            self._counts = _unit_poisson(random.Random(seed))
        else:
            raise ValueError(f"the {model!r} model has no arrival counts (completions pace it)")
        self.last: float | None = None
        self._again = False

    def __repr__(self) -> str:
        return f"<Arrivals last={self.last} again={self._again}>"

    def __iter__(self) -> Arrivals:
        return self

    def __next__(self) -> float:
        if self._again:
            self._again = False
            assert self.last is not None
            return self.last
        self.last = next(self._counts)
        return self.last

    def back(self) -> None:
        """Give the last count again on the next draw (nothing when none was drawn yet)."""
        self._again = self.last is not None


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
