"""The open model's pacer: batched wake-ups (``BATCH_WINDOW``) and wake-ups that come late.

The mock clock wakes every sleeper exactly on time, so a pacer that measured from "now" instead
of from each operation's intended time would pass the other timing tests. Here its sleep is
replaced by one that wakes late by a fixed amount (a busy loop, a descheduled process): every
operation that fell due meanwhile must be issued at that wake-up with its own intended time,
and its latency must count from that intended time, the lateness included.
"""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from platform_fakes import FreezingDevice, run_held

import loadgen.platform.sender as sender_module
from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, Stage
from loadgen.platform.alarm import Alarm
from loadgen.platform.inflight import Operation
from loadgen.platform.sender import BATCH_WINDOW, pace

LATE = 0.003  # every wake-up of the late pacer comes this much after the time it asked for


class LateAlarm:
    """An ``Alarm`` whose every sleep ends ``LATE`` after its deadline."""

    def __init__(self) -> None:
        self.wakes: list[float] = []

    async def sleep_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline + LATE)
        self.wakes.append(trio.current_time())

    def close(self) -> None:
        pass


async def test_pace_issues_every_overdue_operation_with_its_own_intended_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    issued: list[tuple[float, float]] = []
    alarm = LateAlarm()
    t0 = trio.current_time()
    times = [i / 1000 for i in range(20)]  # one every millisecond
    await pace(
        times, t0, t0 + 0.05, lambda intended, now: issued.append((intended, now)),
        sleep_until=alarm.sleep_until,
    )  # fmt: skip
    assert [intended for intended, _ in issued] == [t0 + t for t in times]
    for intended, now in issued:
        assert now >= intended
        assert now - intended <= LATE + 1e-9
    # Each late wake-up found the operations due during the 3 ms it overslept and sent them all.
    assert len(alarm.wakes) < len(times) / 2
    assert {now for _, now in issued} <= {t0, *alarm.wakes}


async def test_pace_wakes_at_most_once_per_window(autojump_clock: trio.testing.MockClock) -> None:
    issued: list[tuple[float, float]] = []
    t0 = trio.current_time()
    rate = 20_000.0
    times = [i / rate for i in range(2000)]  # 0.1 s
    await pace(
        times, t0, t0 + 0.1, lambda intended, now: issued.append((intended, now)),
        window=BATCH_WINDOW,
    )  # fmt: skip
    assert [intended for intended, _ in issued] == [t0 + t for t in times]
    wakes = sorted({now for _, now in issued})
    assert all(b - a >= BATCH_WINDOW - 1e-9 for a, b in itertools.pairwise(wakes))
    assert len(wakes) == pytest.approx(0.1 / BATCH_WINDOW, abs=2)
    # Never early, at most one window late; about ten operations per wake-up.
    assert all(0 <= now - intended <= BATCH_WINDOW + 1e-9 for intended, now in issued)


async def test_a_late_pacer_s_latency_counts_from_the_intended_time(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the whole platform: 1000 ops/s for 0.2 s, a device answering in 1 ms, and a
    pacer that wakes 3 ms late every time. Each operation keeps ``t0 + i / rate``, is sent at
    the late wake-up, and its ``complete`` latency is its lateness plus 1 ms (the service time
    stays 1 ms)."""
    alarms: list[LateAlarm] = []

    def late_alarm() -> LateAlarm:
        alarms.append(LateAlarm())
        return alarms[-1]

    monkeypatch.setattr(sender_module, "Alarm", late_alarm)
    rate, duration = 1000.0, 0.2
    config = PlatformConfig(arrival=Arrival(stages=(Stage(duration=duration, rate=rate),)))
    metrics = Metrics()
    t0s: list[float] = []
    device = FreezingDevice(service=0.001, freeze_from=99.0, freeze_until=99.0, t0=lambda: t0s[0])
    ended: list[Operation] = []
    async with run_held(config, metrics, device) as held:
        held.info.table.on_end = ended.append
        t0s.append(trio.current_time())
        held.info.begin_load()
    assert alarms
    assert alarms[0].wakes
    result = held.result
    t0 = held.info.t0
    assert t0 is not None
    n = int(rate * duration)
    assert len(ended) == result.counters["ops.completed"] == n
    ops = sorted(ended, key=lambda op: op.t_intended)
    assert [op.t_intended for op in ops] == [t0 + i / rate for i in range(n)]
    lateness = [op.t_sent - op.t_intended for op in ops if op.t_sent is not None]
    assert len(lateness) == n
    assert all(-1e-9 <= late <= LATE + 1e-9 for late in lateness)
    assert sum(late > 1e-6 for late in lateness) > n / 2  # most were sent late
    complete = metrics.phase("complete")
    for op in ops:
        assert op.t_ack is not None
        assert op.t_ack - op.t_sent == pytest.approx(0.001)  # type: ignore[operator]
    # The recorded latencies are lateness + 1 ms, from the intended time.
    expected = sorted(round((late + 0.001) * 1e6) for late in lateness)
    recorded = complete.intended.merged()
    assert recorded.get_total_count() == n
    assert recorded.get_max_value() == recorded.get_highest_equivalent_value(max(expected))
    assert recorded.get_min_value() == recorded.get_lowest_equivalent_value(min(expected))
    service = complete.service.merged()
    assert service.get_max_value() == service.get_highest_equivalent_value(1000)
    late_hist = metrics.single("lateness").merged()
    assert late_hist.get_max_value() == late_hist.get_highest_equivalent_value(
        round(max(lateness) * 1e6)
    )


@pytest.mark.parametrize("accept", [True, False])
async def test_a_backlog_yields_per_burst_of_accepted_operations_only(
    autojump_clock: trio.testing.MockClock, accept: bool
) -> None:
    """Behind schedule the pacer yields every ``BURST`` operations so the workers can send
    them; refused operations (the queue is full) make no work, so refusing the excess of an
    overload does not hold the pacer back from its schedule."""
    t0 = trio.current_time() - 1.0  # a second behind: 1,000 operations overdue at once
    issued: list[float] = []
    turns = 0

    def issue(intended: float, now: float) -> bool:
        issued.append(intended)
        return accept

    async def other() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        turns = 0
        await pace([i / 1000 for i in range(1000)], t0, t0, issue)
        behind = turns
        nursery.cancel_scope.cancel()
    assert len(issued) == 1000
    if accept:
        assert behind >= 1000 // sender_module.BURST - 1
    else:
        assert behind <= 1  # only the final sleep's checkpoint


async def test_the_alarm_falls_back_to_trio_s_sleep_on_a_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alarm = Alarm()
    assert not alarm.precise
    start = trio.current_time()
    await alarm.sleep_until(start + 0.0123)
    assert trio.current_time() == start + 0.0123
    alarm.close()


@pytest.mark.slow
async def test_the_alarm_never_wakes_early() -> None:
    """Real time (a timerfd on the system clock): 50 sleeps of 0.3 ms, each ends at or after
    its deadline; a deadline already passed is a checkpoint. (How late is not asserted.)"""
    alarm = Alarm()
    try:
        for _ in range(50):
            deadline = trio.current_time() + 0.0003
            await alarm.sleep_until(deadline)
            assert trio.current_time() >= deadline
        await alarm.sleep_until(trio.current_time() - 1.0)
    finally:
        alarm.close()


async def test_while_the_sender_is_full_due_operations_are_refused_in_bulk_and_all_accounted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past the ceiling the pacer counts what is due while ``full`` holds instead of calling
    ``issue`` for each; nothing is lost: issued + refused is the whole schedule, and an
    operation is refused only if it was due when the sender was full."""
    t0 = trio.current_time()
    times = [i / 10_000 for i in range(1000)]  # 10,000 ops/s for 0.1 s
    issued: list[float] = []
    refused: list[int] = []
    state = {"full": False}

    issued_while_full = 0

    def issue(intended: float, now: float) -> bool:
        nonlocal issued_while_full
        issued_while_full += state["full"]
        issued.append(intended)
        if len(issued) % 50 == 0:  # every 50th fills the sender for what is due at once
            state["full"] = True
        return True

    class LateFull(LateAlarm):
        async def sleep_until(self, deadline: float) -> None:
            await super().sleep_until(deadline)
            state["full"] = False  # a wake-up later, the queue has drained

    alarm = LateFull()
    await pace(
        times, t0, t0 + 0.2, issue, sleep_until=alarm.sleep_until,
        full=lambda: state["full"], refused=refused.append,
    )  # fmt: skip
    assert len(issued) + sum(refused) == len(times)
    assert sum(refused) > 0
    assert issued_while_full == 0  # while full, nothing went through ``issue``


async def test_without_full_every_refusal_goes_through_issue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    calls: list[float] = []
    await pace(
        [i / 1000 for i in range(10)], t0, t0 + 0.02,
        lambda intended, now: calls.append(intended) or False,
    )  # fmt: skip
    assert len(calls) == 10


async def test_the_platform_counts_bulk_refusals_by_cause_like_issue() -> None:
    """``Sender._refused`` counts as ``issue`` would: the in-flight cap is a plain refusal,
    a full queue is also ``ops.rejected.queue_full``."""
    from loadgen.platform.sender import Sender

    class Stub:
        pass

    metrics = Metrics()
    sender = Stub()
    sender.counters = metrics.counters  # type: ignore[attr-defined]
    sender.max_in_flight = 2  # type: ignore[attr-defined]
    sender.table = Stub()  # type: ignore[attr-defined]
    sender.table.live = {1: None}  # type: ignore[attr-defined]
    Sender._refused(sender, 5)  # type: ignore[arg-type]
    assert metrics.counters["ops.rejected"] == 5
    assert metrics.counters["ops.rejected.queue_full"] == 5
    sender.table.live = {1: None, 2: None}  # type: ignore[attr-defined]
    Sender._refused(sender, 3)  # type: ignore[arg-type]
    assert metrics.counters["ops.rejected"] == 8
    assert metrics.counters["ops.rejected.queue_full"] == 5
