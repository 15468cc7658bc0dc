"""Ended ids are remembered for their window (timeout + linger from their end), then forgotten
(inflight rule 6): a late or duplicate message inside the window is counted as such, one after it
is an orphan, and what is remembered depends on the rate and the window, not the run's length."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing
from test_platform_linger import run_with

from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, SouthAPI, Stage, Timeouts
from loadgen.platform.inflight import EndedIds, InflightTable, Operation, State

FIVE = Timeouts(ack_timeout=2.0, timeout=5.0)
NAME = "REBOOT_EQUIPMENT"


def completed(table: InflightTable, op_id: str, at: float, timeouts: Timeouts = FIVE) -> None:
    op = Operation(op_id, 0, NAME, at, timeouts)
    table.open(op)
    table.final(op, at, "SUCCESSFUL", [], sync=True)


def test_an_id_is_recognised_until_its_expiry_and_forgotten_within_one_generation() -> None:
    ended = EndedIds(State, width=1.0)
    ended.add("a", State.COMPLETED, expires=15.5, now=10.0)
    assert ended.get("a", 15.5) is State.COMPLETED  # the last instant of its window
    assert ended.get("a", 16.0) is State.COMPLETED  # its generation ends at 16
    assert ended.get("a", 16.001) is None
    assert len(ended) == 0
    assert ended.generations == 0


def test_what_is_kept_is_never_walked_by_the_garbage_collector() -> None:
    """The generations hold strings only: the collector does not track them (the ids of the
    last window are tens of thousands at a few thousand operations per second)."""
    ended = EndedIds(State, width=1.0)
    for i in range(1000):
        ended.add(f"op-{i}", State.COMPLETED if i % 2 else State.TIMED_OUT, 10.0 + i / 100, 0.0)
    gc.collect()
    assert ended.get("op-7", 1.0) is State.COMPLETED
    assert ended.get("op-8", 1.0) is State.TIMED_OUT
    assert not any(gc.is_tracked(generation) for generation in ended._generations.values())


def test_a_duplicate_inside_the_window_and_an_orphan_after_it() -> None:
    metrics = Metrics()
    table = InflightTable(metrics, linger=3.0)
    completed(table, "op-1", 0.1)  # ends at 0.1: window 5 + 3 s, to 8.1
    assert table.message("op-1", 8.1, "SUCCESSFUL", []) == "duplicate"
    assert table.message("op-1", 8.1, None, []) == "late"
    assert table.message("op-1", 9.1 + 1e-6, "SUCCESSFUL", []) == "orphan"  # 8.1 + a generation
    assert metrics.counters["south.duplicate"] == 1
    assert metrics.counters["south.late"] == 1
    assert metrics.counters["south.orphan"] == 1


def test_the_window_of_a_time_out_counts_from_its_deadline_however_late_the_timer_woke() -> None:
    """A timer task that wakes 2 s late ends the operation at its deadline (2.0 s): its window
    closes at 2 + 5 + 3 = 10 s, not at 12 s as it would counting from the wake-up."""
    metrics = Metrics()
    table = InflightTable(metrics, linger=3.0)
    op = Operation("op-1", 0, NAME, 0.0, FIVE)
    table.open(op)
    assert table.expire(4.0) == []  # the ack deadline was 2.0
    assert op.state is State.TIMED_OUT
    assert table.message("op-1", 10.0, "SUCCESSFUL", []) == "late"
    assert table.message("op-1", 10.5, "SUCCESSFUL", []) == "orphan"


def test_each_operation_has_its_own_window() -> None:
    table = InflightTable(Metrics(), linger=1.0)
    completed(table, "short", 0.0, Timeouts(ack_timeout=1.0, timeout=1.0))  # to 2.0
    completed(table, "long", 0.0, Timeouts(ack_timeout=1.0, timeout=20.0))  # to 21.0
    assert table.message("short", 3.5, "SUCCESSFUL", []) == "orphan"
    assert table.message("long", 3.5, "SUCCESSFUL", []) == "duplicate"
    assert table.message("long", 21.0, "SUCCESSFUL", []) == "duplicate"
    assert table.message("long", 22.5, "SUCCESSFUL", []) == "orphan"


def test_what_is_remembered_stays_bounded_over_a_long_run_at_a_constant_rate() -> None:
    """100 operations/s for 20 minutes of plain-float time, each answered 10 ms after its send:
    the ids remembered are those of the last window (8 s) and at most a generation more, at the
    fifth minute as at the twentieth; the table once kept up to a million."""
    rate, window, width = 100, 5.0 + 3.0, 1.0
    table = InflightTable(Metrics(), linger=3.0, generation=width)
    sizes: dict[int, int] = {}
    for i in range(rate * 1200):
        t = i / rate
        completed(table, f"op-{i}", t + 0.01)
        if i % (rate * 60) == rate * 60 - 1:
            sizes[i // (rate * 60)] = len(table.ended)
    assert len(sizes) == 20
    for size in sizes.values():
        assert rate * window <= size <= rate * (window + width) + 1
    assert table.ended.generations <= window / width + 2
    assert table.message("op-0", 1200.0, "SUCCESSFUL", []) == "orphan"
    assert table.message(f"op-{rate * 1200 - 1}", 1200.0, "SUCCESSFUL", []) == "duplicate"


@pytest.mark.parametrize(("late_after", "outcome"), [(1.4, "duplicate"), (2.6, "orphan")])
async def test_through_the_south_api_a_message_after_the_window_is_an_orphan(
    autojump_clock: trio.testing.MockClock, late_after: float, outcome: str
) -> None:
    """Mock clock, the platform's own runner: timeout 1 s and linger 0.5 s, so each id is kept
    1.5 s after its final (and forgotten within a generation, 1 s, more). Each device POSTs a
    duplicate ``late_after`` s after its final; those that come before the run ends (10 s of
    load, 0.5 s of linger: 91, or 79) are counted; before rule 6 all were duplicates."""
    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=10.0, rate=10.0),)),
        timeouts=Timeouts(ack_timeout=1.0, timeout=1.0),
        south=SouthAPI(linger=0.5),
    )
    result, device, _ = await run_with(config, late_after=late_after)
    counters = result.counters
    heard = counters.get("south.duplicate", 0) + counters.get("south.orphan", 0)
    assert heard == len(device.log) == {"duplicate": 91, "orphan": 79}[outcome]
    assert counters.get(f"south.{outcome}") == heard
    assert counters["ops.completed"] == counters["ops.sent"] == 100
