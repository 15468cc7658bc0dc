"""Shared helpers of the device-fleet tests (imported as a module: test basenames are unique).

``FakePlatform`` stands in for the south API in engine tests: it records every POST with the
virtual time it arrived, so flows and delays are checked exactly under ``autojump_clock``.
``make_engine`` builds an ``Engine`` over a fresh fleet in a nursery the test owns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from loadgen.device.config import FleetConfig, Profile, Responder
from loadgen.device.engine import Engine
from loadgen.device.fleet import Device, build_devices
from loadgen.metrics import Metrics
from loadgen.protocol import OperationRequest, default_parameters

FAKE_PLATFORM = Responder(platform_url="http://platform.invalid:8080")


@dataclass
class Post:
    at: float
    device_id: str
    body: bytes
    kind: str = "response"

    @property
    def response(self) -> dict[str, Any]:
        return orjson.loads(self.body)["operation"]["response"]  # type: ignore[no-any-return]


@dataclass
class FakePlatform:
    posts: list[Post] = field(default_factory=list)

    async def deliver(self, kind: str, device_id: str, body: bytes, attempt: int) -> float | None:
        self.posts.append(
            Post(trio.current_time(), device_id, body, "response" if kind == "callback" else kind)
        )
        await trio.lowlevel.checkpoint()
        return None

    def responses(self, op_id: str | None = None) -> list[dict[str, Any]]:
        out = [p.response for p in self.posts if p.kind == "response" and _valid(p.body)]
        return [r for r in out if op_id is None or r["id"] == op_id]


def _valid(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


@dataclass
class Rig:
    engine: Engine
    platform: FakePlatform
    devices: dict[str, Device]
    metrics: Metrics

    def device(self, index: int = 0) -> Device:
        return list(self.devices.values())[index]

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.metrics.counters)


def fleet_config(profile: Profile | None = None, **kw: Any) -> FleetConfig:
    kw.setdefault("count", 4)
    kw.setdefault("http_port", 0)
    kw.setdefault("responder", FAKE_PLATFORM)
    if profile is not None:
        kw["default"] = profile
    return FleetConfig(**kw)


@asynccontextmanager
async def engine_rig(config: FleetConfig) -> AsyncIterator[Rig]:
    metrics = Metrics()
    platform = FakePlatform()
    async with trio.open_nursery() as nursery:
        engine = Engine(config, metrics, platform, nursery)
        yield Rig(engine, platform, build_devices(config), metrics)


_counter = iter(range(1, 1 << 30))


def request(name: str = "REBOOT_EQUIPMENT", **kw: Any) -> OperationRequest:
    kw.setdefault("id", f"op-{next(_counter):06d}")
    kw.setdefault("timestamp", 1_700_000_000_000)
    kw.setdefault("parameters", default_parameters(name, timestamp=1_700_000_000_000))
    return OperationRequest(name=name, **kw)
