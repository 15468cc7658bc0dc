"""The collector's load policy (``loadgen.metrics.collector``) is in place while the platform
sends and while the fleet serves, and CPython's own is back once each has ended (issue 17)."""

from __future__ import annotations

import gc
from typing import Any

import trio
import trio.testing
from platform_fakes import FakeAnswer

from loadgen.device.config import FleetConfig
from loadgen.device.runner import run_fleet
from loadgen.http.client import Origin
from loadgen.metrics.collector import YOUNG
from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, SouthAPI, Stage, run_platform


async def test_the_platform_sends_under_the_load_policy_and_restores_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = gc.get_threshold()
    seen: list[tuple[tuple[int, int, int], int]] = []

    async def device(origin: Origin, target: bytes, body: bytes, **_: Any) -> FakeAnswer:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return FakeAnswer(200, b"")

    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1.0, rate=5.0),)), south=SouthAPI(linger=0.0)
    )
    await run_platform(config, Metrics(), transport=device)
    assert len(seen) == 5
    assert all(threshold[:2] == YOUNG and frozen > 0 for threshold, frozen in seen)
    assert all(threshold[2] > before[2] for threshold, _ in seen)  # no automatic full one
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_the_fleet_serves_under_the_load_policy_and_restores_it() -> None:
    before = gc.get_threshold()
    async with trio.open_nursery() as nursery:
        info = await nursery.start(run_fleet, FleetConfig(count=2, http_port=0), Metrics())
        assert gc.get_threshold()[:2] == YOUNG
        assert gc.get_freeze_count() > 0
        info.handle.shutdown()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
