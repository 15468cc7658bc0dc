"""``loadgen.seeds.resolve_seed``: a given seed is kept, a missing one is drawn afresh."""

from __future__ import annotations

import pytest

from loadgen.device.config import FleetConfig
from loadgen.errors import ConfigError
from loadgen.platform.config import PlatformConfig
from loadgen.seeds import SEED_BITS, resolve_seed


@pytest.mark.parametrize("seed", [0, 1, 7, 2**40, -3])
def test_a_given_seed_is_kept(seed: int) -> None:
    assert resolve_seed(seed) == seed


def test_no_seed_draws_a_fresh_one_each_time() -> None:
    drawn = [resolve_seed(None) for _ in range(8)]
    assert all(type(seed) is int and 0 <= seed < 2**SEED_BITS for seed in drawn)
    assert len(set(drawn)) > 1  # eight equal 32-bit draws would be no accident


@pytest.mark.parametrize("config", [PlatformConfig, FleetConfig])
def test_configs_default_to_drawing_a_seed(config: type) -> None:
    assert config().seed is None
    assert config(seed=5).seed == 5


@pytest.mark.parametrize("config", [PlatformConfig, FleetConfig])
@pytest.mark.parametrize("bad", [True, 1.5, "7"])
def test_a_seed_that_is_not_an_integer_is_refused(config: type, bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        config(seed=bad)
    assert str(info.value) == f"seed: expected an integer or none, got {bad!r}"
