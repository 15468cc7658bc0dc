import pytest

from loadgen.campaign.capacity import SearchConfig, StepResult, search
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
    # p99 = 10 / (1 - u) doubles its 100 ops/s value (~11.1 ms) once u > ~0.44
    assert result.knee_rate is not None
    assert 400 <= result.knee_rate <= 560
    assert result.first_degraded_phase == "complete"


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
