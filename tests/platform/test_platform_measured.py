"""The measured window: warm-up operations run but land in their own Metrics (plain floats).

Each lifecycle script is played twice in one ``MeasuredTable``: once for an operation intended
before ``measure_from`` (ending after it) and once for one intended after. Each side must then
hold exactly what a plain ``InflightTable`` records for that script alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from loadgen.metrics.registry import Metrics
from loadgen.platform.config import Timeouts
from loadgen.platform.inflight import InflightTable, Operation
from loadgen.platform.measured import MeasuredTable
from loadgen.report.summary import histograms_of

STEP = {"name": "S", "timestamp": 1, "result": "SUCCESSFUL"}
TIMEOUTS = Timeouts(ack_timeout=1.0, timeout=2.0)
MEASURE_FROM = 10.0

Script = Callable[[InflightTable, Operation, float], None]


def sync_ok(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t + 0.01)
    table.final(op, t + 0.6, "SUCCESSFUL", [STEP], sync=True)


def sync_busy(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t)
    table.final(op, t + 0.6, "ERROR_PROCESSING", [], sync=True)


def async_multi(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t)
    table.ack(op, t + 0.1)
    assert table.message(op.id, t + 0.4, None, [STEP]) == "ok"
    assert table.message(op.id, t + 0.7, "SUCCESSFUL", [STEP]) == "ok"
    assert table.message(op.id, t + 0.8, "SUCCESSFUL", [STEP]) == "duplicate"


def ack_timeout(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t)
    table.expire(t + 1.5)


def final_timeout(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t)
    table.ack(op, t + 0.1)
    table.expire(t + 2.5)


def transport_error(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t)
    table.error(op, t + 0.7, "transport.reset")


def cut_off(table: InflightTable, op: Operation, t: float) -> None:
    table.written(op, t)
    table.ack(op, t + 0.1)
    table.drain()


def failed_at_its_deadline(table: InflightTable, op: Operation, t: float) -> None:
    """The pool closed the exchange at the deadline and said so before the timer task ran:
    timed out at the deadline, and the rest of that ``error`` call stays on the same side."""
    table.written(op, t)
    table.error(op, t + 1.05, "transport.read_timeout")


SCRIPTS = [
    sync_ok,
    sync_busy,
    async_multi,
    ack_timeout,
    final_timeout,
    transport_error,
    cut_off,
    failed_at_its_deadline,
]


def alone(script: Script, t: float) -> Metrics:
    metrics = Metrics()
    table = InflightTable(metrics)
    op = Operation("alone", device=0, name="REFRESH_INFO", t_intended=t, timeouts=TIMEOUTS)
    table.open(op)
    script(table, op, t)
    return metrics


def recorded(metrics: Metrics) -> dict[str, tuple[int, int, int]]:
    """Per recorder: (count, min µs, max µs), the recorders that hold something."""
    return {
        name: (int(h.get_total_count()), int(h.get_min_value()), int(h.get_max_value()))
        for name, h in histograms_of(metrics).items()
        if h.get_total_count()
    }


def test_open_returns_the_deadline_it_armed_on_either_side() -> None:
    table = MeasuredTable(Metrics(), warmup=Metrics(), measure_from=MEASURE_FROM)
    early = Operation("w", device=0, name="REFRESH_INFO", t_intended=9.5, timeouts=TIMEOUTS)
    late = Operation("h", device=1, name="REFRESH_INFO", t_intended=12.0, timeouts=TIMEOUTS)
    assert table.open(early) == early.deadline
    assert table.open(late) == late.deadline
    assert early.deadline < late.deadline


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_each_side_records_only_its_operations(script: Script) -> None:
    metrics, warmup = Metrics(), Metrics()
    table = MeasuredTable(metrics, warmup=warmup, measure_from=MEASURE_FROM)
    # intended 0.5 s before the hold starts, ending (or timing out) inside it
    early = Operation("w", device=0, name="REFRESH_INFO", t_intended=9.5, timeouts=TIMEOUTS)
    table.open(early)
    script(table, early, 9.5)
    late = Operation("h", device=1, name="REFRESH_INFO", t_intended=12.0, timeouts=TIMEOUTS)
    table.open(late)
    script(table, late, 12.0)

    assert not table.live
    # A message for an id that has ended carries no intended time: it counts in the run's.
    south = Counter({k: v for k, v in alone(script, 9.5).counters.items() if k.startswith("south")})
    assert warmup.counters + south == alone(script, 9.5).counters
    assert metrics.counters == alone(script, 12.0).counters + south
    assert recorded(warmup) == recorded(alone(script, 9.5))
    assert recorded(metrics) == recorded(alone(script, 12.0))
    for side in (metrics, warmup):
        ops = side.counters
        assert ops["ops.sent"] == 1
        assert ops["ops.completed"] + ops["ops.timed_out"] + ops["ops.errors"] == 1


def test_the_boundary_belongs_to_the_hold() -> None:
    metrics, warmup = Metrics(), Metrics()
    table = MeasuredTable(metrics, warmup=warmup, measure_from=MEASURE_FROM)
    for t in (MEASURE_FROM - 1e-9, MEASURE_FROM):
        op = Operation(f"op-{t}", device=0, name="X", t_intended=t, timeouts=TIMEOUTS)
        table.open(op)
        sync_ok(table, op, t)
    assert warmup.counters["ops.completed"] == metrics.counters["ops.completed"] == 1
    assert "measured_sent=1 warmup_sent=1" in repr(table)


def test_without_a_window_everything_is_measured() -> None:
    metrics = Metrics()
    table = MeasuredTable(metrics)
    op = Operation("a", device=0, name="X", t_intended=-1e9, timeouts=TIMEOUTS)
    table.open(op)
    sync_ok(table, op, -1e9)
    assert metrics.counters["ops.completed"] == 1
    assert not table.warmup.counters
