"""Routing, authentication and error answers of the fleet's HTTP handler (no sockets) and the
configuration records' validation (the lean request decoder is tested in tests/protocol)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from device_helpers import engine_rig, fleet_config

from loadgen.device.config import (
    Delay,
    Faults,
    FleetConfig,
    Profile,
    Responder,
    Sleepy,
    address_range,
)
from loadgen.device.handler import DeviceHandler
from loadgen.errors import ConfigError, key_prefix
from loadgen.http.parser import Request

BASE = "/south/v80/devices"
BODY = orjson.dumps(
    {"operation": {"request": {"id": "op-1", "timestamp": 1, "name": "REBOOT_EQUIPMENT"}}}
)


def req(target: str, body: bytes = BODY, method: bytes = b"POST", **headers: str) -> Request:
    block = b"\r\n".join(
        [b"Host: x", *(f"{k.replace('_', '-')}: {v}".encode() for k, v in headers.items())]
    )
    return Request(method, target.encode(), block, body)


CASES: list[tuple[str, Request, int, bytes]] = [
    ("singular", req(f"{BASE}/dev-000001/operation/request"), 201, b'"op-1"'),
    ("plural", req(f"{BASE}/dev-000001/operation/requests"), 201, b'"op-1"'),
    ("quoted id", req(f"{BASE}/dev%2D000001/operation/request"), 201, b'"op-1"'),
    ("unknown device", req(f"{BASE}/dev-999999/operation/request"), 404, b"no such device"),
    ("unknown path", req(f"{BASE}/dev-000001/operation/other"), 404, b"no such resource"),
    ("platform path", req(f"{BASE}/dev-000001/operation/response"), 404, b"no such resource"),
    ("root", req("/"), 404, b"no such resource"),
    ("GET", req(f"{BASE}/dev-000001/operation/request", method=b"GET"), 405, b"use POST"),
    ("not JSON", req(f"{BASE}/dev-000001/operation/request", b"{"), 400, b"body: expected"),
    (
        "missing name",
        req(
            f"{BASE}/dev-000001/operation/request",
            b'{"operation":{"request":{"id":"a","timestamp":1}}}',
        ),
        400,
        b"operation.request.name: expected a non-empty string, got nothing",
    ),
    (
        "missing id",
        req(f"{BASE}/dev-000001/operation/request", b'{"operation":{"request":{"name":"X"}}}'),
        400,
        b"operation.request.id",
    ),
]


@pytest.mark.parametrize(("what", "incoming", "status", "text"), CASES, ids=[c[0] for c in CASES])
async def test_routing_and_errors(what: str, incoming: Request, status: int, text: bytes) -> None:
    async with engine_rig(fleet_config()) as rig:
        handler = DeviceHandler(rig.devices, rig.engine, base_path=BASE, api_key=None)
        reply = await handler(incoming)
    assert reply.status == status
    assert text in reply.body
    if status >= 400:
        assert rig.counters[f"device.http.{status}"] == 1
    if status == 405:
        assert (b"Allow", b"POST") in reply.headers


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        (f"{BASE}/dev-000001/operation/request", {}, 401),
        (f"{BASE}/dev-000001/operation/request", {"X_ApiKey": "wrong"}, 401),
        (f"{BASE}/dev-000001/operation/request", {"X_ApiKey": "s3cret"}, 201),
        (f"{BASE}/dev-000001/operation/request?X-ApiKey=s3cret", {}, 201),
        (f"{BASE}/dev-000001/operation/request?x-apikey=nope", {}, 401),
        (f"{BASE}/dev-999999/operation/request", {}, 401),  # no probing without the key
        (f"{BASE}/dev-999999/operation/request", {"X_ApiKey": "s3cret"}, 404),
    ],
)
async def test_api_key(target: str, headers: dict[str, str], status: int) -> None:
    async with engine_rig(fleet_config()) as rig:
        handler = DeviceHandler(rig.devices, rig.engine, base_path=BASE, api_key="s3cret")
        assert (await handler(req(target, **headers))).status == status


async def test_configurable_base_path() -> None:
    async with engine_rig(fleet_config(base_path="/dev/api")) as rig:
        handler = DeviceHandler(rig.devices, rig.engine, base_path="/dev/api", api_key=None)
        assert (await handler(req("/dev/api/dev-000002/operation/request"))).status == 201
        assert (await handler(req(f"{BASE}/dev-000002/operation/request"))).status == 404


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: Delay(kind="gamma"), "kind"),  # type: ignore[arg-type]
        (lambda: Delay.lognormal(0.0, 1.0), "median"),
        (lambda: Delay.lognormal(2.0, 1.0), "p99"),
        (lambda: Delay.uniform(2.0, 1.0), "high"),
        (lambda: Delay.fixed(-1), "value"),
        (lambda: Profile(flow="fast"), "flow"),  # type: ignore[arg-type]
        (lambda: Profile(flow="async", steps_mode="partials"), "steps_mode"),
        (lambda: Profile(results={"OK": 1.0}), "results"),  # type: ignore[dict-item]
        (lambda: Profile(results={"ERROR_TIMEOUT": 1.0}), "results"),  # type: ignore[dict-item]
        (lambda: Profile(sync_status=500), "sync_status"),
        (lambda: Profile(sync_status=204), "sync_status"),
        (lambda: Profile(concurrency=0), "concurrency"),
        (lambda: Faults(hang=1.5), "hang"),
        (lambda: Faults(hang=0.6, close=0.6), "faults"),
        (lambda: Responder(platform_url="ftp://x"), "platform_url"),
        (lambda: Responder(retries=-1), "retries"),
        (lambda: Sleepy(share=2.0), "share"),
        (lambda: FleetConfig(id_pattern="dev"), "id_pattern"),
        (lambda: FleetConfig(http_port=None), "http_port"),
        (lambda: FleetConfig(http_port=70000), "http_port"),
        (lambda: FleetConfig(base_path="south/"), "base_path"),
        (lambda: FleetConfig(default=Profile(flow="async")), "responder.platform_url"),
        (lambda: FleetConfig(addresses=("nope",)), "addresses"),
        (lambda: address_range("10.0.0.1", 2), "addresses"),
    ],
)
def test_config_errors_name_the_key(build: Any, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.key == key


def test_key_prefix_places_nested_errors() -> None:
    with pytest.raises(ConfigError) as caught, key_prefix("device.profile.delays.ack"):
        Delay.lognormal(0.5, 0.1)
    assert caught.value.key == "device.profile.delays.ack.p99"
    assert str(caught.value).startswith("device.profile.delays.ack.p99: expected p99 >=")


def test_config_normalises() -> None:
    profile = Profile(flow="async-multi", results={"SUCCESSFUL": 3, "ERROR_PROCESSING": 1})  # type: ignore[dict-item]
    assert profile.steps_mode == "partials"
    assert dict(profile.results) == {"SUCCESSFUL": 0.75, "ERROR_PROCESSING": 0.25}
    assert Delay.parse("0.2") == Delay.fixed(0.2)
    assert Delay.parse("lognormal:0.05,0.5") == Delay.lognormal(0.05, 0.5)
    assert Delay.parse("exp:1") == Delay.exponential(1.0)
    assert address_range("127.1.0.254", 3) == ("127.1.0.254", "127.1.0.255", "127.1.1.0")
    config = FleetConfig(count=3, id_pattern="meter-{}", first_index=10)
    assert [config.device_id(i) for i in range(3)] == ["meter-10", "meter-11", "meter-12"]
