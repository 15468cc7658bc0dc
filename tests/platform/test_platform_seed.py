"""The platform's seed: drawn when the config has none, reported, and replaying it replays the
run's random choices (Poisson arrival times, operation names, devices)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import trio
import trio.testing
from platform_fakes import FakeAnswer, device_of, request_of, response_body, run_held

from loadgen.http.client import Origin
from loadgen.metrics.registry import Metrics
from loadgen.platform import (
    Arrival,
    MixEntry,
    PlatformConfig,
    PlatformResult,
    Stage,
    Targets,
)

CONFIG = PlatformConfig(
    targets=Targets(count=20),
    arrival=Arrival(model="poisson", stages=(Stage(duration=2, rate=50),)),
    mix=(MixEntry(name="REBOOT_EQUIPMENT", weight=1), MixEntry(name="REFRESH_INFO", weight=1)),
)


@dataclass
class RecordingDevice:
    """Answers at once and notes (time since the first request, device, operation name)."""

    seen: list[tuple[float, str, str]] = field(default_factory=list)

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        request = request_of(body)
        self.seen.append((trio.current_time(), device_of(target), request["name"]))
        return FakeAnswer(201, response_body(request["id"], request["name"], "SUCCESSFUL"))


async def run(config: PlatformConfig) -> tuple[PlatformResult, int, list[tuple[float, str, str]]]:
    device = RecordingDevice()
    async with run_held(config, Metrics(), device) as held:
        t0 = trio.current_time()
        held.info.begin_load()
    seen = [(round(t - t0, 9), device_id, name) for t, device_id, name in device.seen]
    return held.result, held.info.seed, seen


async def test_no_seed_draws_one_reports_it_and_replaying_it_replays_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, info_seed, seen = await run(CONFIG)
    assert isinstance(first.seed, int)
    assert info_seed == first.seed
    assert first.run_info()["seed"] == first.seed
    assert len(seen) > 50
    assert len({device_id for _, device_id, _ in seen}) > 10
    assert {name for _, _, name in seen} == {"REBOOT_EQUIPMENT", "REFRESH_INFO"}

    replay, replay_info_seed, replay_seen = await run(dataclasses.replace(CONFIG, seed=first.seed))
    assert replay.seed == replay_info_seed == first.seed
    assert replay_seen == seen


async def test_two_runs_without_a_seed_differ(autojump_clock: trio.testing.MockClock) -> None:
    first, _, seen = await run(CONFIG)
    second, _, other = await run(CONFIG)
    assert first.seed != second.seed
    assert [t for t, _, _ in seen] != [t for t, _, _ in other]  # other Poisson arrivals


async def test_a_given_seed_is_used_as_it_is(autojump_clock: trio.testing.MockClock) -> None:
    config = dataclasses.replace(CONFIG, seed=1234)
    result, info_seed, seen = await run(config)
    again, _, seen_again = await run(config)
    assert result.seed == info_seed == again.seed == 1234
    assert seen == seen_again
