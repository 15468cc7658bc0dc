"""The in-flight lifecycle as a table of scripts driven with plain floats (no clock, no trio).

Each case opens one operation intended at 0.0, plays a script of events at given times, and
checks the end state, the counters and the exact values recorded per phase (intended, service).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from loadgen.metrics.registry import Metrics
from loadgen.platform.config import Timeouts
from loadgen.platform.inflight import (
    ENDED,
    TERMINAL,
    TRANSITIONS,
    Event,
    InflightTable,
    Operation,
    State,
)

STEP = {"name": "S", "timestamp": 1, "result": "SUCCESSFUL"}
RETRYING = Timeouts(retries=2, retries_delay=1.0, retry_result_list=("ERROR_PROCESSING",))
ONE_RETRY = Timeouts(retries=1, retries_delay=1.0, retry_result_list=("ERROR_PROCESSING",))

Script = Sequence[tuple[Any, ...]]
DEFAULTS = Timeouts()


def play(
    script: Script, timeouts: Timeouts = DEFAULTS
) -> tuple[InflightTable, Operation, Metrics, list[Operation]]:
    metrics = Metrics()
    ended: list[Operation] = []
    table = InflightTable(metrics, on_end=ended.append)
    op = Operation("op-1", device=0, name="REBOOT_EQUIPMENT", t_intended=0.0, timeouts=timeouts)
    table.open(op)
    for action, at, *args in script:
        if action == "send":
            table.written(op, at)
        elif action == "ack":
            table.ack(op, at)
        elif action == "sync":
            table.final(op, at, args[0], [STEP], sync=True)
        elif action == "final":
            assert table.message(op.id, at, args[0], [STEP]) == (args[1] if len(args) > 1 else "ok")
        elif action == "partial":
            assert table.message(op.id, at, None, [STEP]) == (args[0] if args else "ok")
        elif action == "error":
            table.error(op, at, args[0])
        elif action == "expire":
            for again in table.expire(at):
                assert again is op
        elif action == "drain":
            table.drain()
        else:  # pragma: no cover
            raise AssertionError(action)
    return table, op, metrics, ended


def check_recorded(metrics: Metrics, phase: str, values: list[tuple[float, float]]) -> None:
    """``phase`` holds exactly ``values`` (intended, service), to the histogram's precision."""
    recorder = metrics.phase(phase)
    for column, hist in enumerate((recorder.intended.merged(), recorder.service.merged())):
        got = [
            item.value_iterated_to
            for item in hist.get_recorded_iterator()
            for _ in range(item.count_added_in_this_iter_step)
        ]
        expected = sorted(hist.get_highest_equivalent_value(round(v[column] * 1e6)) for v in values)
        assert got == expected, (phase, column)


CASES = [
    pytest.param(
        [("send", 0.001), ("sync", 0.011, "SUCCESSFUL")],
        Timeouts(),
        State.COMPLETED,
        {
            "ops.sent": 1,
            "ops.acked": 1,
            "ops.completed": 1,
            "ops.succeeded": 1,
            "result.SUCCESSFUL": 1,
        },
        {"ack": [(0.011, 0.010)], "complete": [(0.011, 0.010)], "first_response": []},
        id="sync-success",
    ),
    pytest.param(
        [("send", 0.002), ("sync", 0.005, "ERROR_PROCESSING")],
        Timeouts(),
        State.COMPLETED,
        {
            "ops.sent": 1,
            "ops.acked": 1,
            "ops.completed": 1,
            "ops.failed": 1,
            "result.ERROR_PROCESSING": 1,
        },
        {"complete": [(0.005, 0.003)]},
        id="sync-failure-code",
    ),
    pytest.param(
        [
            ("send", 0.001),
            ("ack", 0.004),
            ("partial", 0.1),
            ("partial", 0.2),
            ("final", 0.3, "SUCCESSFUL"),
        ],
        Timeouts(),
        State.COMPLETED,
        {"ops.sent": 1, "ops.acked": 1, "ops.partials": 2, "ops.completed": 1, "ops.succeeded": 1},
        {
            "ack": [(0.004, 0.003)],
            "first_response": [(0.1, 0.099)],
            "step": [(0.1, 0.099), (0.2, 0.199)],
            "complete": [(0.3, 0.299)],
        },
        id="async-partials-then-final",
    ),
    pytest.param(
        [("send", 0.001), ("partial", 0.002), ("ack", 0.003), ("final", 0.004, "SUCCESSFUL")],
        Timeouts(),
        State.COMPLETED,
        {"ops.acked": 1, "ops.partials": 1, "ops.completed": 1},
        {"ack": [(0.003, 0.002)], "first_response": [(0.002, 0.001)], "complete": [(0.004, 0.003)]},
        id="partial-before-the-201",
    ),
    pytest.param(
        [("send", 0.001), ("final", 0.002, "SUCCESSFUL"), ("ack", 0.003)],
        Timeouts(),
        State.COMPLETED,
        {"ops.acked": 1, "ops.completed": 1, "ops.succeeded": 1},
        {"ack": [(0.003, 0.002)], "complete": [(0.002, 0.001)]},
        id="final-before-the-201",
    ),
    pytest.param(
        [("send", 0.5), ("expire", 9.999), ("expire", 10.2)],
        Timeouts(),
        State.TIMED_OUT,
        {"ops.sent": 1, "ops.timed_out": 1, "result.ERROR_TIMEOUT": 1},
        {"ack": [(10.0, 9.5)], "complete": [(10.0, 9.5)]},
        id="ack-timeout-recorded-at-its-deadline",
    ),
    pytest.param(
        [("send", 0.001), ("ack", 0.002), ("partial", 5.0), ("expire", 89.0), ("expire", 95.0)],
        Timeouts(),
        State.TIMED_OUT,
        {"ops.acked": 1, "ops.partials": 1, "ops.timed_out": 1, "result.ERROR_TIMEOUT": 1},
        {"ack": [(0.002, 0.001)], "complete": [(90.0, 89.999)]},
        id="final-timeout-recorded-at-its-deadline",
    ),
    pytest.param(
        [("expire", 3.0)],
        Timeouts(ack_timeout=2.0),
        State.TIMED_OUT,
        # issued, never written (queued behind a busy pool until its deadline): not sent
        {"ops.issued": 1, "ops.sent": 0, "ops.timed_out": 1, "ops.timed_out_queued": 1},
        {"ack": [(2.0, 2.0)], "complete": [(2.0, 2.0)]},
        id="never-written-times-out-too",
    ),
    pytest.param(
        [("send", 0.001), ("error", 0.002, "transport.connect")],
        Timeouts(),
        State.ERROR,
        {"ops.sent": 1, "ops.errors": 1, "transport.connect": 1},
        {"ack": [], "complete": []},
        id="transport-error",
    ),
    pytest.param(
        [
            ("send", 0.001),
            ("partial", 0.002),
            ("error", 0.003, "transport.closed"),
            ("final", 0.004, "SUCCESSFUL"),
        ],
        Timeouts(),
        State.COMPLETED,
        {"ops.completed": 1, "transport.closed": 1},
        {"complete": [(0.004, 0.003)]},
        id="broken-exchange-after-a-partial-keeps-going",
    ),
    pytest.param(
        [
            ("send", 0.001),
            ("sync", 0.002, "SUCCESSFUL"),
            ("final", 0.003, "SUCCESSFUL", "duplicate"),
            ("partial", 0.004, "late"),
        ],
        Timeouts(),
        State.COMPLETED,
        {"ops.completed": 1, "south.duplicate": 1, "south.late": 1},
        {"complete": [(0.002, 0.001)]},
        id="duplicate-and-late-after-completion",
    ),
    pytest.param(
        [
            ("send", 0.001),
            ("expire", 10.0),
            ("final", 11.0, "SUCCESSFUL", "late"),
            ("error", 12.0, "transport.read_timeout"),
        ],
        Timeouts(),
        State.TIMED_OUT,
        {"ops.timed_out": 1, "south.late": 1, "ops.abandoned_exchanges": 1},
        {"complete": [(10.0, 9.999)]},
        id="late-after-timeout",
    ),
    pytest.param(
        [
            ("send", 0.001),
            ("sync", 0.1, "ERROR_PROCESSING"),
            ("expire", 1.0),
            ("expire", 1.1),
            ("send", 1.1),
            ("sync", 1.2, "SUCCESSFUL"),
        ],
        RETRYING,
        State.COMPLETED,
        {"ops.retries": 1, "ops.completed": 1, "ops.succeeded": 1, "result.SUCCESSFUL": 1},
        {"ack": [(0.1, 0.099)], "complete": [(1.2, 0.1)]},
        id="retry-then-success",
    ),
    pytest.param(
        [
            ("send", 0.0),
            ("sync", 0.1, "ERROR_PROCESSING"),
            ("expire", 1.1),
            ("send", 1.1),
            ("sync", 1.3, "ERROR_PROCESSING"),
        ],
        ONE_RETRY,
        State.COMPLETED,
        {"ops.retries": 1, "ops.completed": 1, "ops.failed": 1, "result.ERROR_PROCESSING": 1},
        {"complete": [(1.3, 0.2)]},
        id="retries-exhausted",
    ),
    pytest.param(
        [("send", 0.0), ("sync", 0.1, "ERROR_PROCESSING"), ("expire", 1.1), ("expire", 11.1)],
        RETRYING,
        State.TIMED_OUT,
        {"ops.retries": 1, "ops.timed_out": 1},
        {"complete": [(11.1, 10.0)]},
        id="retry-not-acknowledged-times-out-from-its-own-send",
    ),
    pytest.param(
        [("send", 0.001), ("ack", 0.01), ("drain", 30.0)],
        Timeouts(),
        State.TIMED_OUT,
        {"ops.timed_out": 1, "result.ERROR_TIMEOUT": 1, "ops.cut_by_grace": 1},
        {"complete": [(90.0, 89.999)]},
        id="drain-records-the-deadline-not-the-cut-off",
    ),
    # ``timeout`` bounds the operation whatever phase it is stuck in (PROTOCOL.md §7): an HTTP
    # answer that never comes ends it at the first of the two deadlines.
    pytest.param(
        [("send", 0.001), ("expire", 1.999), ("expire", 2.0), ("expire", 10.0)],
        Timeouts(ack_timeout=10.0, timeout=2.0),
        State.TIMED_OUT,
        {"ops.sent": 1, "ops.timed_out": 1, "result.ERROR_TIMEOUT": 1, "ops.acked": 0},
        {"ack": [(2.0, 1.999)], "complete": [(2.0, 1.999)]},
        id="no-answer-times-out-at-timeout-before-the-ack-deadline",
    ),
    pytest.param(
        [("send", 0.001), ("drain", 1.0)],
        Timeouts(ack_timeout=10.0, timeout=2.0),
        State.TIMED_OUT,
        {"ops.timed_out": 1, "ops.cut_by_grace": 1},
        {"complete": [(2.0, 1.999)]},
        id="cut-by-grace-records-the-first-deadline",
    ),
    pytest.param(
        [("send", 0.001), ("expire", 1.0), ("expire", 5.0)],
        Timeouts(ack_timeout=1.0, timeout=5.0),
        State.TIMED_OUT,
        {"ops.timed_out": 1, "result.ERROR_TIMEOUT": 1},
        {"ack": [(1.0, 0.999)], "complete": [(1.0, 0.999)]},
        id="ack-deadline-first-when-it-is-shorter",
    ),
    pytest.param(
        [("send", 0.001), ("error", 2.0, "transport.read_timeout"), ("expire", 2.0)],
        Timeouts(ack_timeout=10.0, timeout=2.0),
        State.TIMED_OUT,
        {"ops.timed_out": 1, "ops.abandoned_exchanges": 1, "ops.errors": 0},
        {"complete": [(2.0, 1.999)]},
        id="failure-reported-at-the-deadline-before-the-timer-is-a-time-out",
    ),
    pytest.param(
        [("send", 0.001), ("expire", 2.0), ("error", 2.0, "transport.read_timeout")],
        Timeouts(ack_timeout=10.0, timeout=2.0),
        State.TIMED_OUT,
        {"ops.timed_out": 1, "ops.abandoned_exchanges": 1, "ops.errors": 0},
        {"complete": [(2.0, 1.999)]},
        id="failure-reported-after-the-timer-same-counts",
    ),
    pytest.param(
        [("send", 0.001), ("error", 1.5, "transport.connect")],
        Timeouts(ack_timeout=10.0, timeout=2.0),
        State.ERROR,
        {"ops.errors": 1, "transport.connect": 1, "ops.timed_out": 0},
        {"complete": []},
        id="failure-before-the-deadline-stays-an-error",
    ),
    pytest.param(
        [
            ("send", 0.0),
            ("sync", 0.1, "ERROR_PROCESSING"),
            ("expire", 1.1),
            ("expire", 3.0),
            ("expire", 3.1),
        ],
        Timeouts(
            ack_timeout=10.0,
            timeout=2.0,
            retries=1,
            retries_delay=1.0,
            retry_result_list=("ERROR_PROCESSING",),
        ),
        State.TIMED_OUT,
        {"ops.retries": 1, "ops.timed_out": 1},
        {"complete": [(3.1, 2.0)]},
        id="a-retry-is-bounded-by-timeout-too",
    ),
]


@pytest.mark.parametrize(("script", "timeouts", "state", "counters", "phases"), CASES)
def test_lifecycle_table(
    script: Script,
    timeouts: Timeouts,
    state: State,
    counters: dict[str, int],
    phases: dict[str, list[tuple[float, float]]],
) -> None:
    table, op, metrics, ended = play(script, timeouts)
    assert op.state is state
    assert ended == [op]  # ends exactly once
    assert not table.live
    for name, value in counters.items():
        assert metrics.counters[name] == value, name
    for phase, values in phases.items():
        check_recorded(metrics, phase, values)
    c = metrics.counters
    assert c["ops.issued"] == 1 == c["ops.completed"] + c["ops.timed_out"] + c["ops.errors"]
    assert c["ops.sent"] == c["ops.issued"] - c["ops.timed_out_queued"]
    assert table.queued == 0


def test_steps_accumulate_over_messages() -> None:
    _, op, _, _ = play(
        [
            ("send", 0.0),
            ("ack", 0.1),
            ("partial", 0.2),
            ("partial", 0.3),
            ("final", 0.4, "SUCCESSFUL"),
        ]
    )
    assert op.steps == [STEP, STEP, STEP]


def test_orphan() -> None:
    metrics = Metrics()
    table = InflightTable(metrics)
    assert table.message("never-sent", 1.0, "SUCCESSFUL", []) == "orphan"
    assert metrics.counters["south.orphan"] == 1


def test_illegal_transition_raises() -> None:
    table, op, _, _ = play([("send", 0.0), ("ack", 0.1)])
    with pytest.raises(RuntimeError, match="illegal ack"):
        table.ack(op, 0.2)


def test_the_state_table_is_closed() -> None:
    for (state, _event), target in TRANSITIONS.items():
        assert state not in TERMINAL
        assert isinstance(target, State)
    assert {s for s, _ in ENDED} <= TERMINAL
    reachable = {State.SENT} | set(TRANSITIONS.values())
    assert reachable == set(State)
    assert Event.DEADLINE in {e for _, e in TRANSITIONS}


def test_deadlines_are_one_heap_and_stale_entries_are_dropped() -> None:
    metrics = Metrics()
    table = InflightTable(metrics)
    ops = []
    for i in range(10_000):
        op = Operation(f"op-{i}", device=0, name="X", t_intended=i * 0.001, timeouts=Timeouts())
        table.open(op)
        ops.append(op)
        table.written(op, i * 0.001)
        if i % 2 == 0:
            table.final(op, i * 0.001 + 0.001, "SUCCESSFUL", [], sync=True)
    assert table.next_deadline == pytest.approx(0.001 + 10.0)  # op-0 answered: op-1 is next
    assert table.statistics().timers <= 2 * len(table) + 4096
    assert table.expire(10.0025) == []
    assert metrics.counters["ops.timed_out"] == 1  # op-1 only
    table.drain()
    c = metrics.counters
    assert c["ops.issued"] == c["ops.sent"] == 10_000 == c["ops.completed"] + c["ops.timed_out"]
    assert table.next_deadline == float("inf")


@pytest.mark.parametrize(
    ("ack_timeout", "timeout", "first"), [(5.0, 10.0, 5.0), (10.0, 5.0, 5.0), (3.0, 3.0, 3.0)]
)
def test_open_returns_the_deadline_it_armed(
    ack_timeout: float, timeout: float, first: float
) -> None:
    """The sender writes with the deadline ``open`` returns: the operation's first deadline
    (the ack's, or the final one when that comes first), the one its timer fires at."""
    table = InflightTable(Metrics())
    op = Operation(
        "a", device=0, name="X", t_intended=2.0,
        timeouts=Timeouts(ack_timeout=ack_timeout, timeout=timeout),
    )  # fmt: skip
    assert table.open(op) == op.deadline == 2.0 + first == table.next_deadline


def test_an_earlier_deadline_is_announced() -> None:
    announced: list[float] = []
    table = InflightTable(Metrics(), on_earlier=announced.append)
    table.open(Operation("a", device=0, name="X", t_intended=0.0, timeouts=Timeouts()))
    table.open(Operation("b", device=0, name="X", t_intended=0.0, timeouts=Timeouts(ack_timeout=1)))
    table.open(Operation("c", device=0, name="X", t_intended=5.0, timeouts=Timeouts()))
    assert announced == [10.0, 1.0]


def test_a_sent_operation_is_due_at_its_first_deadline() -> None:
    """What the sender hands the transport: the deadline of the ``SENT`` state."""
    for ack, final, first in ((10.0, 2.0, 2.0), (1.0, 5.0, 1.0), (3.0, 3.0, 3.0)):
        table = InflightTable(Metrics())
        op = Operation(
            "a",
            device=0,
            name="X",
            t_intended=0.5,
            timeouts=Timeouts(ack_timeout=ack, timeout=final),
        )
        table.open(op)
        assert op.deadline == table.next_deadline == 0.5 + first


def test_a_message_for_an_operation_not_written_yet_changes_nothing() -> None:
    """Rule 2: only an answer can end a written operation, and nothing answers one never
    written. A final asking for a retry before the first write (a device answering an id it
    never received) used to start a retry: the operation was then never counted as sent, and
    the queued gauge counted it twice."""
    table, op, metrics, ended = play(
        [
            ("final", 0.1, "ERROR_PROCESSING", "unsent"),
            ("partial", 0.2, "unsent"),
            ("send", 0.3),
            ("sync", 0.4, "SUCCESSFUL"),
        ],
        RETRYING,
    )
    counters = metrics.counters
    assert counters["south.unsent"] == 2
    assert counters["ops.sent"] == counters["ops.issued"] == counters["ops.completed"] == 1
    assert counters["ops.retries"] == 0
    assert table.queued == 0
    assert ended == [op]


def test_a_message_for_the_attempt_before_a_queued_resend_is_late() -> None:
    table, op, metrics, ended = play(
        [
            ("send", 0.0),
            ("final", 0.1, "ERROR_PROCESSING"),  # a retry, re-sent at 1.1
            ("expire", 1.1),  # queued again, not written yet
            ("final", 1.2, "SUCCESSFUL", "late"),  # a duplicate of the first attempt's final
            ("send", 1.3),
            ("sync", 1.4, "SUCCESSFUL"),
        ],
        RETRYING,
    )
    counters = metrics.counters
    assert counters["south.late"] == 1
    assert counters["ops.sent"] == counters["ops.completed"] == 1
    assert counters["ops.retries"] == 1
    assert table.queued == 0
    assert ended == [op]
