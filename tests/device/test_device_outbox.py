"""The outbox (one timer task, at most ``max_connections`` delivery workers) under the mock
clock: exact virtual times, a stalled event loop that wakes the timer task late, retries held
in the heap, the worker cap, queued operations admitted as slots free up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio.testing
from device_helpers import FAKE_PLATFORM, fleet_config, request

from loadgen.device.config import Delay, Delays, Faults, Profile, Responder
from loadgen.device.engine import Engine
from loadgen.device.fleet import Device, build_devices
from loadgen.metrics import Metrics
from loadgen.protocol import update_parameters

WALL0 = 1_700_000_000_000


def wall_on_the_mock_clock() -> int:
    return WALL0 + round(trio.current_time() * 1000)


@dataclass
class Sent:
    at: float
    device_id: str
    body: dict[str, Any]
    attempt: int


@dataclass
class Recorder:
    """Takes ``service`` s per delivery; at delivery number ``stall_at`` it blocks the whole
    event loop for ``stall`` s (the mock clock jumps while no task runs, as in a long GC pause):
    every sleeper, the timer task included, then wakes late. ``fail_first`` attempts of each
    message get a retry in ``retry_in`` s."""

    clock: trio.testing.MockClock | None = None
    service: float = 0.0
    stall_at: int = -1
    stall: float = 0.0
    fail_first: int = 0
    retry_in: float = 0.5
    sent: list[Sent] = field(default_factory=list)
    busy: int = 0
    most_busy: int = 0
    calls: int = 0

    async def deliver(self, kind: str, device_id: str, body: bytes, attempt: int) -> float | None:
        if self.calls == self.stall_at:
            assert self.clock is not None
            self.clock.jump(self.stall)
        self.calls += 1
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await trio.sleep(self.service)
        finally:
            self.busy -= 1
        response = orjson.loads(body)["operation"]["response"]
        self.sent.append(Sent(trio.current_time(), device_id, response, attempt))
        if attempt < self.fail_first:
            return self.retry_in
        return None

    def of(self, op_id: str) -> list[Sent]:
        return [s for s in self.sent if s.body["id"] == op_id]


@dataclass
class Rig:
    engine: Engine
    devices: list[Device]
    metrics: Metrics


@asynccontextmanager
async def rig(config: Any, platform: Recorder) -> AsyncIterator[Rig]:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        engine = Engine(config, metrics, platform, nursery)
        engine.outbox.wall_ms = wall_on_the_mock_clock
        yield Rig(engine, list(build_devices(config).values()), metrics)


PARTIALS = Profile(
    flow="async-multi",
    delays=Delays(ack=Delay.fixed(0.1), step=Delay.fixed(1.0), final=Delay.fixed(2.0)),
)


async def test_a_stalled_loop_delays_the_timer_task_but_every_message_keeps_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first delivery stalls the loop 5 s: the timer task wakes late for everything due
    meanwhile. Every message still goes out, in order, each stamped with its own due time."""
    platform = Recorder(clock=autojump_clock, stall_at=0, stall=5.0)
    starts = {"a": 0.0, "b": 0.3, "c": 0.6}
    async with rig(fleet_config(PARTIALS), platform) as r:
        for index, (op_id, start) in enumerate(starts.items()):
            await trio.sleep_until(start)
            req = request("UPDATE", id=op_id, parameters=update_parameters(1))
            await r.engine.handle(r.devices[index], req)
    for op_id, start in starts.items():
        mine = platform.of(op_id)
        # acknowledged at start + 0.1; steps of 1 s; the final 2 s after the last step
        due = [start + 0.1 + t for t in (1.0, 2.0, 3.0, 4.0, 5.0, 7.0)]
        assert [s.body["timestamp"] for s in mine] == [WALL0 + round(t * 1000) for t in due]
        assert [len(s.body["steps"]) for s in mine] == [1, 1, 1, 1, 1, 0]
        assert [s.body["steps"][0]["timestamp"] for s in mine[:-1]] == [
            WALL0 + round(t * 1000) for t in due[:-1]
        ]
        assert "resultCode" in mine[-1].body
        assert all(s.at >= t for s, t in zip(mine, due, strict=True))
    late = [s for s in platform.sent if s.at > s.body["timestamp"] / 1000 - WALL0 / 1000 + 1e-9]
    assert late  # the stall did make messages late (the test would be vacuous otherwise)
    assert r.metrics.counters["device.ops.completed"] == 3
    assert r.engine.in_flight == 0


async def test_exact_times_when_nothing_is_late(autojump_clock: trio.testing.MockClock) -> None:
    platform = Recorder(service=0.25)  # a delivery takes less than a step: nothing waits
    async with rig(fleet_config(PARTIALS), platform) as r:
        req = request("UPDATE", id="u", parameters=update_parameters(0))
        await r.engine.handle(r.devices[0], req)
        assert trio.current_time() == 0.1
    assert [s.at for s in platform.sent] == [1.35, 2.35, 3.35, 4.35, 6.35]


async def test_retries_wait_in_the_heap_and_hold_the_next_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    platform = Recorder(fail_first=2, retry_in=0.4)
    profile = Profile(
        flow="async-multi", steps=("ONE", "TWO"), delays=Delays(step=Delay.fixed(1.0))
    )
    async with rig(fleet_config(profile), platform) as r:
        await r.engine.handle(r.devices[0], request("EQUIPMENT_DIAGNOSTIC", id="d"))
        await trio.sleep(1.5)
        assert r.engine.in_flight == 1
        assert len(r.engine.machine.timers) == 1  # the retry of ONE's partial, not a task
    sent = [
        (round(s.at, 6), s.attempt, [x["name"] for x in s.body["steps"]]) for s in platform.sent
    ]
    # ONE at 1.0, retried at 1.4 and 1.8; TWO was due at 2.0 (anchored), then the final at once
    assert sent == [
        (1.0, 0, ["ONE"]), (1.4, 1, ["ONE"]), (1.8, 2, ["ONE"]),
        (2.0, 0, ["TWO"]), (2.4, 1, ["TWO"]), (2.8, 2, ["TWO"]),
        (2.8, 0, []), (3.2, 1, []), (3.6, 2, []),
    ]  # fmt: skip


async def test_deliveries_never_exceed_the_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    platform = Recorder(service=0.1)
    responder = Responder(platform_url=FAKE_PLATFORM.platform_url, max_connections=8)
    profile = Profile(flow="async", delays=Delays(final=Delay.fixed(1.0)))
    async with rig(fleet_config(profile, count=200, responder=responder), platform) as r:
        for device in r.devices:  # 200 finals due at the same instant
            await r.engine.handle(device, request("REFRESH_INFO"))
        await trio.sleep(1.05)
        assert r.engine.outbox.workers == 8
    assert platform.most_busy == 8
    assert len(platform.sent) == 200
    assert round(max(s.at for s in platform.sent), 6) == 3.5  # 1 s, then 200 / 8 rounds of 0.1 s


async def test_a_busy_device_lines_up_the_record_and_admits_it_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    platform = Recorder()
    slow = Profile(flow="async", delays=Delays(final=Delay.fixed(2.0)), queue_limit=1)
    async with rig(fleet_config(slow), platform) as r:
        device = r.devices[0]
        for op_id in ("first", "second", "third"):
            await r.engine.handle(device, request("REFRESH_INFO", id=op_id))
        assert r.engine.in_flight == 3  # one running, one queued, one refused (its final out)
        assert device.waiting is not None
        assert len(device.waiting) == 1
    assert [(s.body["id"], s.at, s.body["resultCode"]) for s in platform.sent] == [
        ("third", 0.0, "ERROR_PROCESSING"),
        ("first", 2.0, "SUCCESSFUL"),
        ("second", 4.0, "SUCCESSFUL"),
    ]
    counters = r.metrics.counters
    assert (counters["device.busy.queued"], counters["device.busy.rejected"]) == (2, 1)
    assert device.idle
    assert r.engine.in_flight == 0


async def test_a_sync_request_hands_its_slot_to_a_queued_async_operation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    platform = Recorder()
    config = fleet_config(
        Profile(delays=Delays(sync=Delay.fixed(1.0))),
        profiles={"UPDATE": Profile(flow="async")},
    )
    async with rig(config, platform) as r:
        device = r.devices[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.engine.handle, device, request("REFRESH_INFO"))
            await trio.sleep(0.5)
            await r.engine.handle(device, request("UPDATE", id="u"))  # acked, lined up
            assert platform.sent == []
    [final] = platform.sent
    assert (final.body["id"], final.at) == ("u", 1.0)
    assert device.idle


async def test_idle_workers_leave_and_come_back(autojump_clock: trio.testing.MockClock) -> None:
    platform = Recorder()
    profile = Profile(flow="async", delays=Delays(final=Delay.fixed(1.0)))
    async with rig(fleet_config(profile), platform) as r:
        await r.engine.handle(r.devices[0], request("REFRESH_INFO", id="x"))
        await trio.sleep(2)
        assert (r.engine.outbox.workers, r.engine.in_flight) == (0, 0)  # nothing left running
        await r.engine.handle(r.devices[1], request("REFRESH_INFO", id="y"))
    assert [(s.body["id"], s.at) for s in platform.sent] == [("x", 1.0), ("y", 3.0)]


@dataclass
class Observer:
    seen: list[tuple[str, str, float]] = field(default_factory=list)

    def received(self, device_id: str, op_id: str, now: float) -> None:
        self.seen.append(("received", op_id, now))

    def answered(self, device_id: str, op_id: str, now: float) -> None:
        self.seen.append(("answered", op_id, now))


async def test_the_observer_hears_each_request_and_each_final_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The north side's correlation (issue 10): an async final is answered when the step
    machine writes it, at its due time; a refusal answers at once; ``no_final`` never does."""
    observer = Observer()
    config = fleet_config(PARTIALS, profiles={"REBOOT_EQUIPMENT": Profile(flow="async")})
    async with trio.open_nursery() as nursery:
        engine = Engine(config, Metrics(), Recorder(), nursery, observer)
        devices = list(build_devices(config).values())
        await engine.handle(devices[0], request("UPDATE", id="u", parameters=update_parameters(0)))
        await engine.handle(devices[1], request("REBOOT_EQUIPMENT", id="r"))
        await engine.handle(devices[1], request("REBOOT_EQUIPMENT", id="again"))
    assert [(kind, op_id, round(at, 6)) for kind, op_id, at in observer.seen] == [
        ("received", "u", 0.0),  # before its 0.1 s acknowledgement
        ("received", "r", 0.1),
        ("received", "again", 0.1),
        ("answered", "again", 0.1),  # ALREADY_IN_PROGRESS: at once
        ("answered", "r", 0.1),  # no delays: its final when the timer task runs
        ("answered", "u", 0.1 + 4 * 1.0 + 2.0),  # four steps of 1 s, then the final delay
    ]
    silent = Observer()
    start = trio.current_time()
    quiet = fleet_config(Profile(flow="async"), faults=Faults(no_final=1.0))
    async with trio.open_nursery() as nursery:
        engine = Engine(quiet, Metrics(), Recorder(), nursery, silent)
        [first, *_] = build_devices(quiet).values()
        await engine.handle(first, request("REFRESH_INFO", id="q"))
    assert silent.seen == [("received", "q", start)]
