"""Pacing tables: exact intended send times from stages (open model) and the seeded Poisson
process's mean, including ramps."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from loadgen.platform.config import Stage
from loadgen.platform.schedule import Arrivals, Schedule

# (stages, expected open-model times). Ramps: N(τ) = r0·τ + (r1 - r0)·τ²/(2D).
OPEN_CASES = [
    pytest.param([Stage(duration=1, rate=4)], [0.0, 0.25, 0.5, 0.75], id="constant"),
    pytest.param(
        [Stage(duration=1, rate=2), Stage(duration=1, rate=4)],
        [0.0, 0.5, 1.0, 1.25, 1.5, 1.75],
        id="two-constant-stages",
    ),
    pytest.param(
        [Stage(duration=2, rate=2), Stage(duration=2, rate=6, ramp=True)],
        # stage 2: 2τ + τ² = m  ->  τ = √(1+m) - 1
        [0.0, 0.5, 1.0, 1.5] + [2 + math.sqrt(1 + m) - 1 for m in range(8)],
        id="ramp-up",
    ),
    pytest.param(
        [Stage(duration=2, rate=4, ramp=True)],
        # from 0: τ² = m  ->  τ = √m
        [math.sqrt(m) for m in range(4)],
        id="ramp-from-zero",
    ),
    pytest.param(
        [Stage(duration=1, rate=4), Stage(duration=2, rate=0, ramp=True)],
        # stage 2: 4τ - τ² = m  ->  τ = 2 - √(4 - m)
        [0.0, 0.25, 0.5, 0.75] + [1 + 2 - math.sqrt(4 - m) for m in range(4)],
        id="ramp-down-to-zero",
    ),
    pytest.param(
        [Stage(duration=1, rate=2), Stage(duration=1, rate=0), Stage(duration=1, rate=2)],
        [0.0, 0.5, 2.0, 2.5],
        id="pause",
    ),
    pytest.param(
        [Stage(duration=1.5, rate=1), Stage(duration=1, rate=2)],
        # N(1.5) = 1.5: operation 2 is due half an operation into stage 2, at 1.5 + 0.5/2
        [0.0, 1.0, 1.75, 2.25],
        id="fractional-carry-over",
    ),
]


@pytest.mark.parametrize(("stages", "expected"), OPEN_CASES)
def test_open_times_table(stages: list[Stage], expected: list[float]) -> None:
    got = list(Schedule(stages).open_times())
    assert got == pytest.approx(expected, abs=1e-12)


def test_constant_rate_times_are_exactly_i_over_rate() -> None:
    times = list(Schedule([Stage(duration=10, rate=1000)]).open_times())
    assert len(times) == 10_000
    assert all(t == i / 1000 for i, t in enumerate(times))  # exact, no accumulated drift


def test_totals_rates_and_inverse() -> None:
    schedule = Schedule([Stage(duration=10, rate=100), Stage(duration=10, rate=300, ramp=True)])
    assert schedule.duration == 20
    assert schedule.total == 1000 + 2000
    assert schedule.offered_rate == 150
    assert schedule.rate_at(5) == 100
    assert schedule.rate_at(15) == 200
    assert schedule.count_until(10) == 1000
    assert schedule.count_until(15) == 1000 + 100 * 5 + 200 * 25 / 20
    for n in (0, 1, 999.5, 1000, 1500, 2999):
        assert schedule.count_until(schedule.time_of(n)) == pytest.approx(n)
    assert schedule.segment_at(9.99) == 0
    assert schedule.segment_at(10) == 1
    assert schedule.segment_at(99) == 1


def test_times_are_increasing_and_within_the_run() -> None:
    schedule = Schedule(
        [
            Stage(duration=3, rate=50, ramp=True),
            Stage(duration=2, rate=7),
            Stage(duration=4, rate=0.5, ramp=True),
        ]
    )
    times = list(schedule.open_times())
    assert len(times) == math.ceil(schedule.total)
    assert all(a < b for a, b in itertools.pairwise(times))
    assert times[0] >= 0
    assert times[-1] < schedule.duration


def test_poisson_is_seeded_and_has_the_right_mean() -> None:
    schedule = Schedule([Stage(duration=200, rate=50)])
    first = list(schedule.poisson_times(seed=7))
    again = list(schedule.poisson_times(seed=7))
    other = list(schedule.poisson_times(seed=8))
    assert first == again
    assert first != other
    # 10,000 expected: the count is Poisson(10,000), so within 4 sigma (400).
    assert abs(len(first) - 10_000) < 400
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.03)
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.pstdev(gaps) == pytest.approx(1 / 50, rel=0.05)


def test_poisson_follows_a_ramp() -> None:
    schedule = Schedule([Stage(duration=100, rate=200, ramp=True)])  # 0 -> 200/s
    times = list(schedule.poisson_times(seed=1))
    first_half = sum(1 for t in times if t < 50)
    # N(50) = 2500 of 10,000: a quarter of the operations in the first half.
    assert first_half == pytest.approx(2500, abs=250)
    assert len(times) == pytest.approx(10_000, abs=400)


def test_times_by_model() -> None:
    schedule = Schedule([Stage(duration=1, rate=2)])
    assert list(schedule.times("open", 0)) == [0.0, 0.5]
    assert list(schedule.times("poisson", 3)) == list(schedule.poisson_times(3))
    with pytest.raises(ValueError, match="closed"):
        schedule.times("closed", 0)


# --- a rate change: a stage appended at t -------------------------------------------------------


def test_a_stage_from_t_keeps_n_before_t_bit_for_bit_and_goes_on_at_the_new_rate() -> None:
    old = Schedule([Stage(duration=4, rate=100, ramp=True), Stage(duration=6, rate=30)])
    new = old.with_stage_from(2.5, 300)
    assert new.duration == old.duration == 10
    for t in (0.0, 0.1, 1.0, 2.0, 2.4999):
        assert new.count_until(t) == old.count_until(t)  # exact: the cut ramp keeps its line
    assert new.count_until(2.5) == old.count_until(2.5)
    assert new.count_until(3.5) == old.count_until(2.5) + 300.0
    assert new.total == old.count_until(2.5) + 300 * 7.5
    assert new.rate_at(2.0) == old.rate_at(2.0)
    assert new.rate_at(2.5) == new.rate_at(9.9) == 300
    # The intended times before 2.5 are exactly the old ones; after it, t + (n - N(t)) / rate.
    old_times = [t for t in old.open_times() if t < 2.5]
    new_times = list(new.open_times())
    assert new_times[: len(old_times)] == old_times
    n_t = old.count_until(2.5)  # 0..2.5 s of a 0 -> 100/s ramp over 4 s: 78.125
    after = new_times[len(old_times) :]
    assert after[:3] == [2.5 + (n - n_t) / 300 for n in (79.0, 80.0, 81.0)]
    assert len(new_times) == math.ceil(new.total)


def test_stages_from_t_twice_and_to_zero() -> None:
    once = Schedule([Stage(duration=10, rate=10)]).with_stage_from(2.0, 0)
    assert list(once.open_times()) == [i / 10 for i in range(20)]  # nothing after 2 s
    twice = once.with_stage_from(5.0, 4)
    assert [t for t in twice.open_times() if t >= 2.0] == [5.0 + i / 4 for i in range(20)]
    assert twice.total == 20 + 4 * 5


@pytest.mark.parametrize(("t", "rate"), [(-1.0, 5.0), (10.0, 5.0), (1.0, -1.0), (1.0, math.nan)])
def test_a_stage_from_t_refuses_a_time_outside_the_load_or_a_bad_rate(
    t: float, rate: float
) -> None:
    with pytest.raises(ValueError, match="expected"):
        Schedule([Stage(duration=10, rate=10)]).with_stage_from(t, rate)


@pytest.mark.parametrize("model", ["open", "poisson"])
def test_arrivals_mapped_through_a_new_schedule_from_the_count_not_issued(model: str) -> None:
    """The sender draws a count, is told of a change before it issues it, and maps the same
    count (``back()``) through the new schedule: the sequence of counts is the one a run
    without the change draws, so a Poisson run stays the seeded process."""
    old = Schedule([Stage(duration=10, rate=50)])
    new = old.with_stage_from(4.0, 200)
    arrivals = Arrivals(model, seed=3)  # type: ignore[arg-type]
    first = old.times_of(arrivals)
    before = list(itertools.takewhile(lambda t: t < 4.0, first))  # draws one count past 4 s
    arrivals.back()
    after = list(new.times_of(arrivals))
    assert before + after == list(new.times(model, 3))  # type: ignore[arg-type]
    assert after[0] >= 4.0


def test_arrivals_back_before_any_draw_changes_nothing() -> None:
    arrivals = Arrivals("open", seed=0)
    arrivals.back()
    assert [next(arrivals), next(arrivals)] == [0.0, 1.0]
    with pytest.raises(ValueError, match="closed"):
        Arrivals("closed", seed=0)  # type: ignore[arg-type]
