"""The interval roll-over runs in slices (a checkpoint between histograms and between sinks), so
sends due meanwhile are not held up; every value still lands in exactly one interval, even one
recorded while an interval is being rolled over, and a cancellation never loses one."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from loadgen.metrics.intervals import Interval, run_intervals
from loadgen.metrics.registry import Metrics


async def test_values_recorded_during_a_rollover_are_counted_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics(phases=("complete", "ack", "step"))
    seen: list[Interval] = []
    recorded = 0

    async def busy() -> None:
        """Records at every scheduling point, so some values fall inside a roll-over."""
        nonlocal recorded
        while True:
            for name in ("complete", "ack", "step"):
                metrics.phase(name).record(0.001, 0.001)
                recorded += 1
            metrics.count("ops.sent")
            await trio.lowlevel.checkpoint()
            await trio.sleep(0.0005)

    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(partial(run_intervals, metrics, [seen.append], t0=t0, period=0.1))
        nursery.start_soon(busy)
        await trio.sleep(1.05)
        nursery.cancel_scope.cancel()
    counted = sum(
        interval.histograms[name].get_total_count()
        for interval in seen
        for name in ("complete", "ack", "step")
    )
    assert counted == recorded
    assert seen[-1].final
    assert not any(interval.final for interval in seen[:-1])
    assert [interval.index for interval in seen] == list(range(len(seen)))
    assert sum(interval.counters.get("ops.sent", 0) for interval in seen) == recorded // 3


async def test_a_sink_runs_while_sends_go_on(autojump_clock: trio.testing.MockClock) -> None:
    """Between two sinks the loop runs other tasks: the roll-over is not one long block. The
    first sink wakes a task (as a due send would be); trio runs it at the next checkpoint, which
    comes before the second sink. (Trio may order one batch either way round; over 20 intervals
    a roll-over that never yields would never let it in first: the chance of a false failure is
    2**-20.)"""
    metrics = Metrics(phases=("complete",))
    order: list[str] = []
    due: list[trio.Event] = [trio.Event()]

    def first(interval: Interval) -> None:
        order.append("first sink")
        due[-1].set()

    def second(interval: Interval) -> None:
        order.append("second sink")

    async def send() -> None:
        while True:
            await due[-1].wait()
            due.append(trio.Event())
            order.append("send")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await nursery.start(
            partial(run_intervals, metrics, [first, second], t0=trio.current_time(), period=0.1)
        )
        await trio.sleep(2.05)
        nursery.cancel_scope.cancel()
    triples = [order[i : i + 3] for i, item in enumerate(order) if item == "first sink"]
    assert len(triples) >= 20
    assert ["first sink", "send", "second sink"] in triples
