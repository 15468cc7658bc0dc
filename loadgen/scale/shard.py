"""One shard of a campaign: ``--shard i/N`` (k6-operator's execution segments, simplified).

Shard *i* of *N* owns devices ``[i*D//N, (i+1)*D//N)`` and ``rate / N`` of every stage, so the
shards together offer exactly the campaign's load with no coordinator talking to them while they
run. Ports that are fixed in the scenario are offset by the shard index so shards on one machine
do not collide (port 0, "any free port", stays 0). Integer division spreads the remainder: the
device ranges tile ``[0, D)`` exactly.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final

from loadgen.campaign.scenario import Scenario
from loadgen.errors import ConfigError

__all__ = ["Shard", "apply_shard"]

_SHARD_RE: Final = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(
                f"expected a shard i/N with 0 <= i < N and N >= 1, got {self.index}/{self.count}",
                key="--shard",
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SHARD_RE.match(text)
        if not match:
            raise ConfigError(f"expected i/N (e.g. 0/4), got {text!r}", key="--shard")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def whole(cls) -> Shard:
        return cls(0, 1)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    def devices(self, total: int) -> range:
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    def rate(self, rate: float) -> float:
        return rate / self.count

    def port(self, port: int | None) -> int | None:
        if port is None or port == 0:
            return port
        return port + self.index


def apply_shard(scenario: Scenario, shard: Shard) -> Scenario:
    """Shard i/N of a scenario: its device range, rate/N, offset fixed ports, its own seed."""
    if shard.is_whole:
        return scenario
    devices = scenario.devices
    platform = scenario.platform
    if devices is not None:
        owned = shard.devices(devices.count)
        devices = dataclasses.replace(
            devices,
            first_index=devices.first_index + owned.start,
            count=len(owned),
            http_port=shard.port(devices.http_port),
            https_port=shard.port(devices.https_port),
            seed=None if devices.seed is None else devices.seed + shard.index,
        )
    if platform is not None:
        stages = tuple(
            dataclasses.replace(stage, rate=shard.rate(stage.rate))
            for stage in platform.arrival.stages
        )
        arrival = dataclasses.replace(
            platform.arrival,
            stages=stages,
            # spread like the devices, so the shards' concurrencies add up to the campaign's
            concurrency=max(1, len(shard.devices(platform.arrival.concurrency))),
        )
        targets = platform.targets
        if targets.devices:
            owned = shard.devices(len(targets.devices))
            targets = dataclasses.replace(
                targets, devices=targets.devices[owned.start : owned.stop]
            )
        elif scenario.campaign.sides not in ("both", "north"):
            # With the fleet in the campaign the targets are the shard's own fleet (set once it
            # listens), so the placeholder range is not split (its default count of 1 would
            # leave shard 0 with no device at all).
            owned = shard.devices(targets.count)
            targets = dataclasses.replace(
                targets, first_index=targets.first_index + owned.start, count=len(owned)
            )
        south = dataclasses.replace(platform.south, port=shard.port(platform.south.port) or 0)
        platform = dataclasses.replace(
            platform,
            arrival=arrival,
            targets=targets,
            south=south,
            seed=None if platform.seed is None else platform.seed + shard.index,
        )
    north = scenario.north
    if north is not None:  # the application side: rate/N of jobs, to the shard's own devices
        north = dataclasses.replace(
            north,
            arrival=dataclasses.replace(
                north.arrival,
                stages=tuple(
                    dataclasses.replace(stage, rate=shard.rate(stage.rate))
                    for stage in north.arrival.stages
                ),
            ),
            callback_port=shard.port(north.callback_port) or 0,
            seed=None if north.seed is None else north.seed + shard.index,
        )
    return scenario.model_copy(update={"devices": devices, "platform": platform, "north": north})
