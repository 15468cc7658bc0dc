"""The fleet's seed: drawn when the config has none, reported in ``FleetInfo.seed``, and the one
the engine's random choices (delays, results, faults) come from."""

from __future__ import annotations

import random

import trio

from loadgen.device.config import FleetConfig
from loadgen.device.runner import FleetInfo, run_fleet
from loadgen.metrics.registry import Metrics


async def started(config: FleetConfig) -> FleetInfo:
    async with trio.open_nursery() as nursery:
        info: FleetInfo = await nursery.start(run_fleet, config, Metrics())
        nursery.cancel_scope.cancel()
    return info


def engine_state(info: FleetInfo) -> object:
    assert info.handle.engine is not None
    return info.handle.engine.rng.getstate()


async def test_no_seed_draws_one_that_the_engine_uses_and_reports() -> None:
    first = await started(FleetConfig(count=3, http_port=0))
    second = await started(FleetConfig(count=3, http_port=0))
    assert isinstance(first.seed, int)
    assert first.seed != second.seed
    assert first.handle.config.seed == first.seed
    assert engine_state(first) == random.Random(first.seed).getstate()
    assert engine_state(second) == random.Random(second.seed).getstate()


async def test_a_given_seed_is_used_as_it_is() -> None:
    info = await started(FleetConfig(count=3, http_port=0, seed=7))
    assert info.seed == 7
    assert engine_state(info) == random.Random(7).getstate()
