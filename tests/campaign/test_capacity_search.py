import pytest

from loadgen.campaign.capacity import SearchConfig, StepResult, knee_rate, search
from loadgen.errors import ConfigError


def fake_target(capacity: float, *, generator_ceiling: float = float("inf")):
    """A target that passes below ``capacity``; latency grows as it approaches it."""
    tried: list[float] = []

    async def run_step(rate: float) -> StepResult:
        tried.append(rate)
        if rate > generator_ceiling:
            return StepResult(offered_rate=rate, achieved_rate=rate, verdict="generator_limit")
        utilisation = rate / capacity
        p99 = 10.0 / max(1e-9, 1 - min(utilisation, 0.999))
        verdict = "pass" if rate <= capacity else "fail"
        return StepResult(
            offered_rate=rate,
            achieved_rate=min(rate, capacity),
            verdict=verdict,
            p99_ms={"complete": p99, "ack": 1.0 + (50.0 if rate > capacity else 0.0)},
        )

    return run_step, tried


@pytest.mark.parametrize("capacity", [150.0, 1234.0, 5000.0, 77_777.0])
async def test_finds_capacity_within_resolution(capacity):
    run_step, tried = fake_target(capacity)
    result = await search(run_step, SearchConfig(start_rate=100, resolution=0.02))
    assert result.max_sustainable_rate is not None
    assert result.max_sustainable_rate <= capacity
    assert result.max_sustainable_rate >= capacity / 1.02 * 0.999
    assert result.breaking_rate > capacity
    assert not result.generator_limited
    assert len(tried) == len(result.steps) <= 30


async def test_answer_is_a_measured_rate_never_interpolated():
    run_step, tried = fake_target(1000.0)
    result = await search(run_step, SearchConfig(start_rate=100))
    assert result.max_sustainable_rate in tried
    assert result.breaking_rate in tried


async def test_generator_limit_is_never_reported_as_capacity():
    run_step, _ = fake_target(10_000.0, generator_ceiling=900.0)
    result = await search(run_step, SearchConfig(start_rate=100))
    assert result.generator_limited
    assert result.breaking_rate is None
    assert "generator" in result.verdict_text()
    assert "not the target's capacity" in result.verdict_text()


async def test_exhausted_when_max_rate_reached():
    run_step, _ = fake_target(10_000.0)
    result = await search(run_step, SearchConfig(start_rate=100, max_rate=800))
    assert result.exhausted
    assert result.max_sustainable_rate == 800
    assert "raise max_rate" in result.verdict_text()


async def test_fails_at_first_step():
    run_step, _ = fake_target(50.0)
    result = await search(run_step, SearchConfig(start_rate=100))
    assert result.max_sustainable_rate is None
    assert "lower start_rate" in result.verdict_text()


async def test_knee_and_first_degraded_phase():
    run_step, _ = fake_target(1000.0)
    result = await search(run_step, SearchConfig(start_rate=100, resolution=0.01, knee_factor=2.0))
    # p99 = 10 / (1 - u): 11.1 ms at 100 ops/s, 12.5 at 200, 16.7 at 400, 50 at 800. At 800 it
    # is past 2 x 11.1 ms and tripled while the rate doubled: the bend.
    assert result.knee_rate == 800
    assert "The p99 latency bends (knee) at 800 ops/s." in result.verdict_text()
    assert result.first_degraded_phase == "complete"


def steps_of(curve: dict[float, float], verdict: str = "pass") -> list[StepResult]:
    return [
        StepResult(offered_rate=rate, achieved_rate=rate, verdict=verdict,  # type: ignore[arg-type]
                   p99_ms={"complete": p99})
        for rate, p99 in curve.items()
    ]  # fmt: skip


def test_a_flat_curve_has_no_knee():
    """Issue 15, item 6: p99 that stays flat (noise of a few per cent) names no knee; the old
    rule called the highest passing rate the knee whenever p99 never doubled."""
    flat = steps_of({100: 10.0, 200: 10.4, 400: 9.8, 800: 10.9, 1600: 10.2})
    assert knee_rate(flat, 2.0) is None
    assert knee_rate(flat[:1], 2.0) is None  # one step: nothing can bend


def test_a_slope_in_proportion_to_the_rate_is_not_a_knee():
    """p99 grows with the rate but never faster (a fixed backlog per operation): past 2 x the
    base, but no bend."""
    slope = steps_of({100: 10.0, 200: 20.0, 400: 40.0, 800: 80.0})
    assert knee_rate(slope, 2.0) is None


def test_a_bent_curve_names_its_first_bent_step():
    bent = steps_of({100: 10.0, 200: 10.5, 400: 12.0, 600: 30.0, 800: 200.0})
    assert knee_rate(bent, 2.0) == 600  # 30 > 2 x 10, and x2.5 while the rate went x1.5
    # Steps in any order (bisection adds them out of order): sorted by rate.
    assert knee_rate(list(reversed(bent)), 2.0) == 600
    # A fast rise that stays under the factor is not yet a knee: the next step is.
    assert knee_rate(steps_of({100: 10.0, 200: 18.0, 300: 40.0}), 2.0) == 300
    # Failing steps count (the bend is a fact about latency, not about the SLO).
    assert knee_rate(steps_of({100: 10.0, 200: 80.0}, verdict="fail"), 2.0) == 200


def test_generator_limited_steps_say_nothing_about_the_knee():
    steps = steps_of({100: 10.0, 200: 10.0})
    steps += steps_of({400: 500.0}, verdict="generator_limit")
    assert knee_rate(steps, 2.0) is None


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"start_rate": 0}, "capacity.start_rate"),
        ({"growth": 1.0}, "capacity.growth"),
        ({"resolution": 0}, "capacity.resolution"),
        ({"max_rate": 1, "start_rate": 5}, "capacity.max_rate"),
    ],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SearchConfig(**kwargs)
