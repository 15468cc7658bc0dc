"""The fleet's timer heap and the async step machine, driven with plain floats (no clock, no
trio): the transition table, due times anchored at the previous due time, messages stamped with
their own due time however late ``expire`` runs, and retries waiting in the heap."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
import pytest

from loadgen.device.behaviour import Behaviour
from loadgen.device.config import Delay, Delays, Faults, Profile
from loadgen.device.fleet import Device
from loadgen.device.steps import (
    TRANSITIONS,
    AsyncOp,
    Event,
    Message,
    Stage,
    StepMachine,
    _move,
)
from loadgen.device.timers import TimerHeap
from loadgen.protocol import OperationRequest, default_parameters, update_parameters

WALL0 = 1_700_000_000_000  # wall-clock ms at trio time 0 in these tests


def wall(now: float) -> int:
    return WALL0 + round(now * 1000)


def update(op_id: str = "u-1", elements: int = 1) -> OperationRequest:
    return OperationRequest(
        id=op_id, timestamp=1, name="UPDATE", parameters=update_parameters(elements)
    )


def reboot(op_id: str = "r-1") -> OperationRequest:
    name = "REBOOT_EQUIPMENT"
    return OperationRequest(
        id=op_id, timestamp=1, name=name, parameters=default_parameters(name, timestamp=1)
    )


def response(message: Message) -> dict[str, Any]:
    return orjson.loads(message.body)["operation"]["response"]  # type: ignore[no-any-return]


class Rig:
    """A machine over one device; ``expire``/``deliver`` record (time, message) pairs."""

    def __init__(self, profile: Profile, faults: Faults | None = None, **kw: Any) -> None:
        self.counters: Counter[str] = Counter()
        self.ended: list[AsyncOp] = []
        self.earlier: list[float] = []
        self.machine = StepMachine(
            random.Random(1),
            self.counters,
            on_end=self.ended.append,
            on_earlier=self.earlier.append,
            **kw,
        )
        self.behaviour = Behaviour(profile, faults or Faults())
        self.device = Device("dev-1")

    def start(self, request: OperationRequest, now: float, fault: str | None = None) -> AsyncOp:
        op = AsyncOp(self.device, request, self.behaviour, fault)
        self.machine.open(op)
        self.machine.begin(op, now, last_id="previous-op")
        return op

    def expire(self, now: float) -> list[Message]:
        return self.machine.expire(now, wall(now))

    def run(self, now: float, *, delivery: float = 0.0) -> list[tuple[float, Message]]:
        """Play the machine to its end: each message delivered ``delivery`` s after it came
        out; the timer "task" wakes at each due time, or at ``now`` when that is later."""
        sent: list[tuple[float, Message]] = []
        pending = self.expire(now)
        while pending or self.machine.timers:
            if not pending:
                now = max(now, self.machine.timers.next_due)
                pending = self.expire(now)
                continue
            message = pending.pop(0)
            sent.append((now, message))
            now += delivery
            following = self.machine.done_with(message, now, wall(now))
            if following is not None:
                pending.insert(0, following)
            pending.extend(self.expire(now))
        return sent


# --- the timer heap ------------------------------------------------------------------------


def test_timer_heap_orders_by_due_then_push_order() -> None:
    heap: TimerHeap[str] = TimerHeap()
    assert heap.next_due == float("inf")
    assert heap.push(2.0, "b") is True  # the first is the earliest
    assert heap.push(1.0, "a") is True
    assert heap.push(2.0, "c") is False  # a tie: after "b"
    assert heap.push(3.0, "d") is False
    assert (len(heap), heap.next_due) == (4, 1.0)
    assert [heap.pop() for _ in range(3)] == [(1.0, "a"), (2.0, "b"), (2.0, "c")]
    assert heap.clear() == ["d"]
    assert len(heap) == 0


# --- the transition table ------------------------------------------------------------------


def test_every_stage_but_done_has_a_way_out_and_done_has_none() -> None:
    sources = {stage for stage, _ in TRANSITIONS}
    assert sources == set(Stage) - {Stage.DONE}
    assert Stage.DONE in TRANSITIONS.values()
    assert all(target is not Stage.NEW for target in TRANSITIONS.values())


@pytest.mark.parametrize(
    ("stage", "event"),
    [(s, e) for s in Stage for e in Event if (s, e) not in TRANSITIONS],
)
def test_a_move_outside_the_table_raises(stage: Stage, event: Event) -> None:
    rig = Rig(Profile(flow="async"))
    op = AsyncOp(rig.device, reboot(), rig.behaviour, None)
    op.stage = stage
    with pytest.raises(RuntimeError, match=f"illegal {event.value}"):
        _move(op, event)
    assert op.stage is stage


# --- flows, exact times ------------------------------------------------------------------

STEP_1S = Delays(step=Delay.fixed(1.0), final=Delay.fixed(2.0))


def test_partials_are_anchored_and_stamped_with_their_due_time() -> None:
    rig = Rig(Profile(flow="async-multi", delays=STEP_1S))
    op = rig.start(update(elements=1), now=0.5)
    assert (op.stage, op.due, rig.earlier) == (Stage.WORKING, 1.5, [1.5])
    assert rig.expire(1.4) == []
    # Each delivery takes 0.3 s: the next step still ends 1 s after the previous one was due.
    sent = rig.run(1.5, delivery=0.3)
    names = [[s["name"] for s in response(m)["steps"]] for _, m in sent]
    assert names == [["BEGINUPDATE"], ["DOWNLOADFILE"], ["BEGININSTALL"], ["ENDINSTALL"],
                     ["ENDUPDATE"], []]  # fmt: skip
    due = [1.5, 2.5, 3.5, 4.5, 5.5, 7.5]
    assert [t for t, _ in sent] == due
    assert [response(m)["timestamp"] for _, m in sent] == [wall(t) for t in due]
    assert [s["timestamp"] for _, m in sent[:-1] for s in response(m)["steps"]] == [
        wall(t) for t in due[:-1]
    ]
    assert ["resultCode" in response(m) for _, m in sent] == [False] * 5 + [True]
    assert rig.ended == [op]
    assert (op.stage, rig.machine.live, len(rig.machine.timers)) == (Stage.DONE, 0, 0)
    assert rig.counters == Counter({"device.result.SUCCESSFUL": 1, "device.ops.completed": 1})


def test_a_late_expire_still_sends_every_message_in_order_with_its_own_time() -> None:
    """The timer task wakes 10 s late, and each delivery takes 2 s (longer than a step): every
    message still goes out, in order, each stamped with the time it was due."""
    rig = Rig(Profile(flow="async-multi", delays=STEP_1S))
    rig.start(update("a", elements=1), now=0.0)
    rig.start(update("b", elements=1), now=0.25)
    sent = rig.run(10.0, delivery=2.0)
    for op_id, start in (("a", 0.0), ("b", 0.25)):
        mine = [response(m) for _, m in sent if response(m)["id"] == op_id]
        assert [r["timestamp"] for r in mine] == [
            wall(start + t) for t in (1.0, 2.0, 3.0, 4.0, 5.0, 7.0)
        ]
        assert [len(r["steps"]) for r in mine] == [1, 1, 1, 1, 1, 0]
        assert "resultCode" in mine[-1]
    assert [t for t, _ in sent] == sorted(t for t, _ in sent)
    assert sent[0][0] == 10.0  # nothing was sent before the late wake-up


def test_together_sums_the_steps_then_one_partial_then_the_final() -> None:
    rig = Rig(Profile(flow="async-multi", steps_mode="together", delays=STEP_1S))
    rig.start(update(elements=2), now=0.0)
    sent = rig.run(0.0)
    assert [t for t, _ in sent] == [6.0, 8.0]  # 6 steps of 1 s, then the final delay
    assert [len(response(m)["steps"]) for _, m in sent] == [6, 0]


def test_plain_async_without_delays_answers_at_once() -> None:
    rig = Rig(Profile(flow="async"))
    rig.start(reboot(), now=3.0)
    [(at, message)] = rig.run(3.0)
    assert at == 3.0
    assert response(message)["resultCode"] == "SUCCESSFUL"
    assert response(message)["timestamp"] == wall(3.0)


@pytest.mark.parametrize(
    ("fault", "finals", "after"),
    [("no_final", 0, 0), ("duplicate_final", 2, 0), ("partial_after_final", 1, 1)],
)
def test_faults_after_the_final(fault: str, finals: int, after: int) -> None:
    rig = Rig(Profile(flow="async", delays=Delays(final=Delay.fixed(1.0))))
    op = rig.start(reboot(), now=0.0, fault=fault)
    sent = rig.run(0.0)
    bodies = [response(m) for _, m in sent]
    assert sum("resultCode" in b for b in bodies) == finals
    if finals:
        last_final = max(i for i, b in enumerate(bodies) if "resultCode" in b)
        assert len(bodies) - 1 - last_final == after
    if fault == "duplicate_final":
        assert sent[0][1].body == sent[1][1].body  # the same message, byte for byte
    assert op.stage is Stage.DONE
    assert rig.counters["device.ops.completed"] == 1  # counted even without a final


def test_wrong_id_and_malformed_final() -> None:
    rig = Rig(Profile(flow="async"))
    rig.start(reboot("mine"), now=0.0, fault="wrong_id")
    [(_, message)] = rig.run(0.0)
    assert response(message)["id"] == "previous-op"
    rig = Rig(Profile(flow="async"))
    rig.start(reboot(), now=0.0, fault="malformed_json")
    [(_, message)] = rig.run(0.0)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(message.body)


def test_collect_follows_a_successful_refresh() -> None:
    rig = Rig(Profile(flow="async"), collect=True)
    name = "REFRESH_INFO"
    rig.start(OperationRequest(id="x", timestamp=1, name=name), now=2.0)
    sent = rig.run(2.0)
    assert [m.kind for _, m in sent] == ["callback", "collect"]


def test_a_retry_waits_in_the_heap_and_the_operation_waits_for_it() -> None:
    rig = Rig(Profile(flow="async-multi", delays=STEP_1S))
    op = rig.start(update(elements=0), now=0.0)
    [first] = rig.expire(1.0)  # BEGINUPDATE's partial
    rig.machine.retry(first, 1.4)  # the platform said 503: try again at 1.4
    assert rig.expire(1.39) == []
    assert rig.expire(1.4) == [first]
    assert op.stage is Stage.REPORTING  # no next step while its partial is undelivered
    assert len(rig.machine.timers) == 0
    assert rig.machine.done_with(first, 1.5, wall(1.5)) is None
    assert (op.stage, op.due) == (Stage.WORKING, 2.0)  # anchored at 1.0, not at 1.5


def test_refused_and_queued_operations() -> None:
    rig = Rig(Profile(flow="async"))
    op = AsyncOp(rig.device, reboot(), rig.behaviour, "duplicate_final")
    rig.machine.open(op)
    message = rig.machine.refuse(op, 1.0, wall(1.0))
    body = response(message)
    assert (body["resultCode"], body["steps"], body["timestamp"]) == (
        "ERROR_PROCESSING",
        [],
        wall(1.0),
    )
    assert rig.machine.done_with(message, 1.2, wall(1.2)) is None  # no duplicate: refused
    assert (op.stage, op.slot, rig.ended) == (Stage.DONE, False, [op])
    queued = AsyncOp(rig.device, reboot("q"), rig.behaviour, None)
    rig.machine.open(queued)
    rig.machine.queue(queued)
    assert queued.stage is Stage.QUEUED
    rig.machine.begin(queued, 5.0, None)
    [(at, final)] = rig.run(5.0)
    assert (at, response(final)["id"], queued.slot) == (5.0, "q", True)


def test_abandon_counts_what_is_live() -> None:
    rig = Rig(Profile(flow="async", delays=Delays(final=Delay.fixed(9.0))))
    for index in range(3):
        rig.start(reboot(f"r-{index}"), now=0.0)
    assert rig.machine.abandon() == 3
    assert (rig.machine.live, len(rig.machine.timers)) == (0, 0)


def test_an_operation_record_stays_small() -> None:
    """What stays per operation: the request's parameters go once the steps are drawn."""
    rig = Rig(Profile(flow="async", delays=Delays(final=Delay.fixed(9.0))))
    op = rig.start(update(elements=3), now=0.0)
    assert op.request is None
    assert op.parameters == {}
    other = rig.start(update("u-2", elements=3), now=0.0)
    assert other.steps is op.steps  # successful step lists are shared


@pytest.mark.parametrize("module", ["timers", "steps", "behaviour"])
def test_the_pure_modules_import_no_io(module: str) -> None:
    code = (
        f"import loadgen.device.{module}, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'trio', 'httpx', 'asyncio', 'h11', 'hypercorn'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
