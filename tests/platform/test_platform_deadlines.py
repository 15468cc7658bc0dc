"""``timeout`` bounds every operation, whatever phase it is stuck in (PROTOCOL.md §7).

A device that never answers the HTTP request (frozen, or asynchronous and holding its
acknowledgement) must not keep an operation alive until ``ack_timeout``: each one ends at its
first deadline, ``min(ack deadline, final deadline)``, recorded as exactly that, and the drain
waits for those deadlines up to the grace period, saying how many the grace cut.

Everything runs under ``autojump_clock`` with in-memory devices, so times are exact (to the
histogram's 3 significant digits for recorded values).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hdrh.histogram import HdrHistogram
from platform_fakes import AsyncDevice, SilentDevice, run_held

from loadgen.metrics.registry import Metrics
from loadgen.platform import (
    Arrival,
    PlatformConfig,
    PlatformResult,
    SouthAPI,
    Stage,
    Timeouts,
)
from loadgen.platform.inflight import Operation
from loadgen.platform.sender import Transport
from loadgen.report.summary import build_summary, histograms_of

RATE = 10.0  # operations at 0.0, 0.1, ..., 0.9 s
N = 10


def config(timeouts: Timeouts, *, grace: float | None = None) -> PlatformConfig:
    return PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1.0, rate=RATE),)),
        timeouts=timeouts,
        drain_grace=grace,
        south=SouthAPI(linger=0.0),  # the clock below ends with the drain
    )


def only(histogram: HdrHistogram, seconds: float, count: int) -> None:
    """Every value of ``histogram`` is ``seconds`` (to its precision), ``count`` of them."""
    us = round(seconds * 1e6)
    assert histogram.get_total_count() == count
    assert histogram.get_count_at_value(us) == count
    assert histogram.get_max_value() == histogram.get_highest_equivalent_value(us)


def accounted(result: PlatformResult) -> None:
    c = result.counters
    assert c["ops.sent"] == N
    assert c["ops.sent"] == c.get("ops.completed", 0) + c["ops.timed_out"] + c.get("ops.errors", 0)
    assert c["ops.timed_out"] == c["result.ERROR_TIMEOUT"] == N


async def run(
    cfg: PlatformConfig, transport: Transport | None = None, *, async_device: bool = False
) -> tuple[Metrics, PlatformResult, list[Operation], float]:
    """One run; returns the metrics, the result, the operations as they ended and the run's t0."""
    metrics = Metrics()
    ended: list[Operation] = []
    async with trio.open_nursery() as nursery:
        if async_device:  # ``held`` (below) is bound before the device is first called
            transport = AsyncDevice(
                core=lambda: held.info.core, nursery=nursery, behaviour=lambda i: "no-ack"
            )
        assert transport is not None
        async with run_held(cfg, metrics, transport) as held:
            held.info.table.on_end = ended.append
            held.info.begin_load()
        nursery.cancel_scope.cancel()  # a device holding its answers forever
    t0 = held.info.t0
    assert t0 is not None
    return metrics, held.result, ended, t0


@pytest.mark.parametrize("async_device", [False, True], ids=["sync", "async-ack-held"])
async def test_no_answer_ends_at_timeout_not_at_the_ack_deadline(
    autojump_clock: trio.testing.MockClock, async_device: bool
) -> None:
    """The issue's repro, in miniature: ``timeout`` 2 s, ``ack_timeout`` 10 s, no answer."""
    device = SilentDevice()
    metrics, result, ended, t0 = await run(
        config(Timeouts(ack_timeout=10.0, timeout=2.0)),
        None if async_device else device,
        async_device=async_device,
    )
    accounted(result)
    only(metrics.phase("complete").intended.merged(), 2.0, N)
    only(metrics.phase("ack").intended.merged(), 2.0, N)  # never acknowledged: at the deadline
    assert result.counters.get("ops.acked", 0) == 0
    assert result.counters.get("ops.errors", 0) == 0
    # Each ended exactly at its intended time + 2 s: the last at 0.9 + 2 = 2.9, all within the
    # default grace (min(timeout, 30 s) = 2 s after the load's end at 1 s): nothing cut.
    assert trio.current_time() - t0 == pytest.approx(2.9)
    assert result.cut_off == 0
    assert result.run_info()["cut_by_grace"] == 0
    assert "ops.cut_by_grace" not in result.counters
    assert [op.state.value for op in ended] == ["timed_out"] * N
    if not async_device:  # the transport was told when to give up (and close the connection)
        assert device.deadlines == {op.id: op.t_intended + 2.0 for op in ended}


async def test_a_shorter_ack_timeout_still_ends_at_the_ack_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    device = SilentDevice()
    metrics, result, ended, t0 = await run(config(Timeouts(ack_timeout=1.0, timeout=5.0)), device)
    accounted(result)
    only(metrics.phase("complete").intended.merged(), 1.0, N)
    assert trio.current_time() - t0 == pytest.approx(1.9)
    assert result.cut_off == 0
    assert device.deadlines == {op.id: op.t_intended + 1.0 for op in ended}


async def test_a_transport_that_gives_up_at_the_deadline_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pool closes the connection at the deadline and raises ``ReadTimeout``, at the same
    instant as the table's timer: whichever runs first, the operation timed out at 2.000 s and
    the exchange's failure is an abandoned exchange, not an error."""
    device = SilentDevice(close_at_deadline=True)
    metrics, result, _, _ = await run(config(Timeouts(ack_timeout=10.0, timeout=2.0)), device)
    accounted(result)
    only(metrics.phase("complete").intended.merged(), 2.0, N)
    c = result.counters
    assert c.get("ops.errors", 0) == 0
    assert c["ops.abandoned_exchanges"] == N
    assert "transport.read_timeout" not in c
    assert len(device.deadlines) == N


async def test_the_grace_period_cuts_and_says_how_many(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Grace 1.45 s after the load's end (1 s): the operations due by 2.45 s time out during the
    drain (intended 0.0 .. 0.4), the other five are cut, recorded at their deadline all the same."""
    metrics, result, ended, t0 = await run(
        config(Timeouts(ack_timeout=10.0, timeout=2.0), grace=1.45), SilentDevice()
    )
    accounted(result)
    assert trio.current_time() - t0 == pytest.approx(2.45)
    only(metrics.phase("complete").intended.merged(), 2.0, N)
    assert result.cut_off == 5
    assert result.counters["ops.cut_by_grace"] == 5
    run_info = result.run_info()
    assert run_info["cut_by_grace"] == 5
    summary = build_summary(histograms_of(metrics), metrics.counters, run_info)
    assert summary["operations"]["cut_by_grace"] == 5
    assert summary["operations"]["timed_out"] == N
    # The five cut are the last five intended, each recorded at its own deadline.
    cut = sorted(op.t_intended - t0 for op in ended[-5:])
    assert cut == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
