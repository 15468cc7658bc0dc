"""``PlatformInfo.change_rate``: a stage appended while the load runs, on a mock clock.

The intended times stay anchored at ``t0`` and exact (``Schedule.with_stage_from``), the
coordinated-omission correction holds across the change, a sender that is behind when the change
arrives still owes the operations intended before it at their old times, and a change that
cannot apply (closed model, no load running, a bad rate) raises and changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.lowlevel
import trio.testing
from platform_fakes import FakeAnswer, FreezingDevice, StallingDevice, run_held

from loadgen.http.client import Origin
from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, PlatformInfo, Stage
from loadgen.platform.inflight import Operation
from loadgen.platform.runner import PlatformResult
from loadgen.platform.sender import Transport


async def run_with(
    config: PlatformConfig,
    transport: Transport,
    during: Callable[[PlatformInfo], Awaitable[None]],
) -> tuple[PlatformInfo, PlatformResult, list[Operation], Metrics]:
    metrics = Metrics()
    ended: list[Operation] = []
    async with run_held(config, metrics, transport) as held:
        info = held.info
        info.table.on_end = ended.append
        info.begin_load()
        while info.t0 is None:
            await trio.lowlevel.checkpoint()
        await during(info)
    return info, held.result, sorted(ended, key=lambda op: op.t_intended), metrics


def config_of(*stages: Stage, **kwargs: object) -> PlatformConfig:
    return PlatformConfig(arrival=Arrival(stages=stages), **kwargs)  # type: ignore[arg-type]


async def test_the_rate_changes_at_the_moment_asked_and_times_stay_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    changed: list[float] = []

    async def change(info: PlatformInfo) -> None:
        await trio.sleep(2.005)  # between two intended times (2.00 and 2.01)
        changed.append(info.change_rate(300))

    config = config_of(Stage(duration=4, rate=100))
    info, result, ops, _ = await run_with(config, FreezingDevice(service=0.001), change)
    t0 = info.t0
    assert t0 is not None
    assert changed == [pytest.approx(2.005)]
    at = changed[0]
    # 0.00 .. 2.00 at 100/s (201 operations), then from N(2.005) = 200.5 at 300/s.
    expected = [t0 + i / 100 for i in range(201)]
    n_at = 100 * at
    total = n_at + 300 * (4 - at)  # N(4 s) = 799.0 (give or take an ulp of the change time)
    expected += [t0 + at + (n - n_at) / 300 for n in range(201, 1000) if n < total]
    assert len(expected) in (201 + 598, 201 + 599)
    assert [op.t_intended for op in ops] == expected
    assert result.counters["ops.sent"] == result.counters["ops.completed"] == len(expected)
    # Sent exactly when intended (the mock clock): no late send, the rate change included.
    assert all(op.t_sent is not None and abs(op.t_sent - op.t_intended) < 1e-9 for op in ops)
    # The offered rate over the load window comes from the schedule with the stage appended.
    assert result.offered_rate == pytest.approx(len(expected) / 4, abs=0.2)
    assert info.schedule is not None
    assert info.schedule.rate_at(3.0) == 300


async def test_coordinated_omission_is_corrected_across_a_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The device freezes over [2 s, 4 s); the rate doubles at 3 s. Every operation intended in
    the freeze waits until 4 s: its latency is 4 s - intended + 1 ms, at both rates."""
    t0s = [trio.current_time()]  # nothing sleeps before the load starts: t0 is now

    async def change(info: PlatformInfo) -> None:
        assert info.t0 == t0s[0]
        await trio.sleep_until(info.t0 + 3.0)
        info.change_rate(200)

    device = FreezingDevice(service=0.001, freeze_from=2.0, freeze_until=4.0, t0=lambda: t0s[0])
    config = config_of(Stage(duration=6, rate=100), max_connections=100_000)
    _, _, ops, metrics = await run_with(config, device, change)
    t0 = t0s[0]
    assert len(ops) == 300 + 600
    for op in ops:
        assert op.t_ack is not None
        intended = op.t_intended - t0
        waited = 4.0 - intended if 2.0 <= intended < 4.0 else 0.0
        assert op.t_ack - op.t_intended == pytest.approx(waited + 0.001, abs=1e-9)
    complete = metrics.phase("complete").intended.merged()
    assert complete.get_total_count() == 900
    assert complete.get_max_value() == complete.get_highest_equivalent_value(2_001_000)
    # 100 intended in [2, 3) and 200 in [3, 4) waited the freeze out.
    slow = sum(1 for op in ops if op.t_ack is not None and op.t_ack - op.t_intended > 0.002)
    assert slow == 300


async def test_a_sender_behind_schedule_still_owes_the_operations_before_the_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Taking request 200 (at 2.00 s) blocks the loop for 0.5 s, and the change to 300/s is made
    right then (2.5 s), while the sender is behind: operations 201..249 keep their old times
    (2.01 .. 2.49 s, sent late), 250 onwards follow the new stage from N(2.5) = 250."""
    infos: list[PlatformInfo] = []
    seen: list[float] = []

    class ChangingDevice(StallingDevice):
        async def __call__(
            self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
        ) -> FakeAnswer:
            if self.seen == self.stall_at:
                self.clock.jump(self.stall)
                self.stall_at = -1
                # right after the stall, before the issuing task runs again
                seen.append(infos[0].change_rate(300))
            return await super().__call__(origin, target, body, deadline=deadline)

    device = ChangingDevice(clock=autojump_clock, stall_at=200, stall=0.5, service=0.001)

    async def change(info: PlatformInfo) -> None:
        infos.append(info)

    config = config_of(Stage(duration=4, rate=100))
    info, result, ops, _ = await run_with(config, device, change)
    t0 = info.t0
    assert t0 is not None
    at = seen[0]
    assert 2.5 <= at < 2.5001
    times = [op.t_intended - t0 for op in ops]
    n_at = 100 * at
    expected = [i / 100 for i in range(250 if at > 2.5 else 251)]
    first_new = len(expected)
    total = n_at + 300 * (4 - at)
    expected += [at + (n - n_at) / 300 for n in range(first_new, 2000) if n < total]
    assert times == pytest.approx(expected, abs=1e-12)
    late = [op for op in ops if op.t_sent is not None and op.t_sent - op.t_intended > 0.002]
    assert [round((op.t_intended - t0) * 100) for op in late] == list(range(201, 250))
    assert result.counters["ops.late_sends"] == len(late)


@pytest.mark.parametrize(
    ("rate", "message"), [(-1.0, "expected a rate >= 0"), (float("nan"), "expected a rate >= 0")]
)
async def test_a_bad_rate_changes_nothing(
    autojump_clock: trio.testing.MockClock, rate: float, message: str
) -> None:
    async def change(info: PlatformInfo) -> None:
        await trio.sleep(1.0)
        before = info.schedule
        with pytest.raises(ValueError, match=message):
            info.change_rate(rate)
        assert info.schedule is before

    _, _, ops, _ = await run_with(config_of(Stage(duration=2, rate=10)), FreezingDevice(), change)
    assert len(ops) == 20


async def test_no_change_without_an_open_load(autojump_clock: trio.testing.MockClock) -> None:
    async def closed(info: PlatformInfo) -> None:
        await trio.sleep(0.5)
        with pytest.raises(ValueError, match="closed model"):
            info.change_rate(5)

    config = PlatformConfig(
        arrival=Arrival(model="closed", stages=(Stage(duration=1, rate=0),), concurrency=2)
    )
    await run_with(config, FreezingDevice(), closed)

    async def after_the_load(info: PlatformInfo) -> None:
        await trio.sleep(1.0005)  # the load has ended; the drain runs
        with pytest.raises(ValueError, match="no load is running"):
            info.change_rate(5)

    device = FreezingDevice(service=0.5)
    await run_with(config_of(Stage(duration=1, rate=10)), device, after_the_load)
