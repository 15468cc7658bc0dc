"""Bytes per operation in flight, on each side, measured with ``tracemalloc``.

Why tracemalloc rather than RSS: it counts the Python objects an operation keeps alive, exactly
and the same on every run (no allocator slack, no pages the OS has not reclaimed, no other
process on a busy machine), so a test can assert the bound and ``make bench`` can report it
beside the other figures. RSS is what a user sees and is larger by the allocator's overhead;
the issue's "~5.2 KB per operation" was RSS growth, and tracemalloc agreed to within 1 %.

- ``fleet_bytes_per_operation``: ``count`` asynchronous operations acknowledged by the fleet's
  engine (decoded from their request bodies, as the handler does) and waiting, each on its own
  device: for its final (``async``), or for a step (UPDATE, ``async-multi`` partials). The
  platform link is a sink that is never reached.
- ``platform_bytes_per_operation``: ``count`` operations issued by the real platform run
  (mock clock, a transport that acknowledges at once) and waiting for their final: id, request
  body, record, live entry, timers.

Both return ``{"count", "bytes", "bytes_per_op"}``; ``count`` is kept large enough (thousands)
for the containers' growth steps to average out.
"""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass
from typing import Any, Final

import orjson
import trio
import trio.testing

from loadgen.device.config import Delay, Delays, FleetConfig, Profile, Responder
from loadgen.device.engine import Engine
from loadgen.device.fleet import build_devices
from loadgen.errors import first_of
from loadgen.http.client import Origin
from loadgen.metrics import Metrics
from loadgen.platform.config import Arrival, MixEntry, PlatformConfig, Stage, Targets, Timeouts
from loadgen.platform.runner import run_platform
from loadgen.protocol import default_parameters
from loadgen.protocol.lean import decode_request_lean

__all__ = ["fleet_bytes_per_operation", "platform_bytes_per_operation"]

WAIT = 3600.0  # longer than any measurement: nothing moves on while it is measured
TIMESTAMP_MS = 1_700_000_000_000
UPDATE_PARAMETERS: dict[str, Any] = {
    "bundleName": "firmware",
    "bundleVersion": "2.1.0",
    "deploymentElements": [
        {"name": "kernel", "version": "6.1", "path": "/fw/kernel.bin", "order": 1,
         "operation": "INSTALL"},
        {"name": "rootfs", "version": "2.1", "path": "/fw/rootfs.img", "order": 2,
         "operation": "INSTALL"},
    ],
}  # fmt: skip


def _parameters(name: str) -> dict[str, Any]:
    return UPDATE_PARAMETERS if name == "UPDATE" else default_parameters(name, timestamp=1)


class _Unreachable:
    """The fleet's platform link in the measurement: nothing is due while it is measured."""

    async def deliver(self, kind: str, device_id: str, body: bytes, attempt: int) -> float | None:
        raise AssertionError("no message is due during the measurement")


def fleet_bytes_per_operation(
    count: int = 50_000, name: str = "REBOOT_EQUIPMENT", flow: str = "async"
) -> dict[str, Any]:
    """Bytes the fleet keeps per asynchronous operation waiting (see the module docstring)."""
    delays = Delays(step=Delay.fixed(WAIT), final=Delay.fixed(WAIT))
    config = FleetConfig(
        count=count,
        http_port=0,
        seed=1,
        default=Profile(flow=flow, delays=delays),  # type: ignore[arg-type]
        responder=Responder(platform_url="http://platform.invalid:8080"),
    )
    devices = list(build_devices(config).values())
    bodies = [
        orjson.dumps(
            {
                "operation": {
                    "request": {
                        "id": f"072b08d1-0fcb-4a0c-a2d8-{index:012x}",
                        "timestamp": TIMESTAMP_MS,
                        "name": name,
                        "parameters": _parameters(name),
                    }
                }
            }
        )
        for index in range(count)
    ]
    used: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            engine = Engine(config, Metrics(), _Unreachable(), nursery)

            async def acknowledge_all() -> None:
                for device, body in zip(devices, bodies, strict=True):
                    await engine.handle(device, decode_request_lean(body))
                # Let whatever the acknowledgements started run to its first wait.
                await trio.testing.wait_all_tasks_blocked()

            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                await acknowledge_all()
                gc.collect()
                used.append(tracemalloc.get_traced_memory()[0] - before)
            finally:
                tracemalloc.stop()
            assert engine.in_flight == count, engine
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {"count": count, "bytes": used[0], "bytes_per_op": round(used[0] / count, 1)}


@dataclass(frozen=True, slots=True)
class _Ack:
    status: int = 201
    body: bytes = b""


def platform_bytes_per_operation(
    count: int = 50_000, name: str = "REBOOT_EQUIPMENT", *, devices: int = 1000
) -> dict[str, Any]:
    """Bytes the platform keeps per operation acknowledged and waiting for its final.

    The real ``run_platform`` on the mock clock, with a transport that acknowledges every
    request at once: memory is traced from the first acknowledgement to the ``count``-th,
    so the run's fixed structures (histograms, lanes, the schedule) are not counted and every
    operation's are (its id, request body, record, live entry, timers)."""
    rate = 1_000_000.0  # many operations per scheduler pass: the run takes little real time
    config = PlatformConfig(
        targets=Targets(count=devices),
        arrival=Arrival(stages=(Stage(duration=(count + 1) / rate, rate=rate),)),
        mix=(MixEntry(name=name),),
        timeouts=Timeouts(ack_timeout=WAIT, timeout=WAIT),
        seed=1,
    )
    acked = 0
    used: list[int] = []

    async def acknowledge(origin: Origin, target: bytes, body: bytes, *, deadline: float) -> _Ack:
        nonlocal acked
        acked += 1
        if acked == 1:
            gc.collect()
            tracemalloc.start()
        elif acked == count + 1:
            gc.collect()
            used.append(tracemalloc.get_traced_memory()[0])
            tracemalloc.stop()
            raise _Measured
        return _ACK

    async def main() -> None:
        try:
            await run_platform(config, Metrics(), transport=acknowledge)
        except BaseException as exc:  # the run ends through its nursery: an exception group
            if first_of(exc, _Measured) is None:
                raise

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
    return {"count": count, "bytes": used[0], "bytes_per_op": round(used[0] / count, 1)}


class _Measured(Exception):
    """Ends the platform run once the figure is taken (nothing else is of interest)."""


_ACK: Final = _Ack()
