"""The life of one asynchronous operation on a device after its acknowledgement (pure).

Theory of operation
-------------------
An async operation is a small record (``AsyncOp``) that moves through the stages of
``TRANSITIONS`` below, in the manner of ``loadgen.platform.inflight``: queued at its busy device,
working on its steps, finishing (the final delay), then handing its messages (partials, the
final, the messages a fault adds after it) to the responder one at a time. While it waits for a
due time it is one entry in the fleet's ``TimerHeap``; while a message of it is being delivered
it is referenced by that ``Message`` only. There is no task per operation: one timer task per
fleet calls ``expire(now)`` and the responder's workers call ``done_with(message, now)``
(``loadgen.device.outbox``, the I/O shell). The rules of this file:

1. Every change of stage goes through ``_move``, which looks the ``(stage, event)`` pair up in
   ``TRANSITIONS``; a pair that is not there is a bug in the caller and raises.
2. An operation is in exactly one place: a device's waiting line (``QUEUED``), the timer heap
   (``WORKING``, ``FINISHING``) or the responder (``REPORTING``, ``ANSWERING``, ``TRAILING``:
   one message). It ends exactly once, ``DONE``, and ``on_end(op)`` is then called (the shell
   gives back the device slot and the exclusive name); ``live`` counts the others.
3. Due times are anchored: a step ends its drawn delay after the previous one *was due*, not
   after its partial was delivered or the timer task woke, and every message carries the
   wall-clock time of its own due time (``wall_ms - (now - due)``), however late it is built or
   sent. A message the responder could not deliver yet waits in the heap, not in a task.
4. The messages of one operation go out in order, one at a time: the next is built only when
   the responder is done with the previous one (delivered, refused or given up); a step whose
   due time passed meanwhile fires at once, with its own time.
5. Time is an argument (``now`` on the trio clock, ``wall_ms`` the wall-clock milliseconds at
   ``now``); nothing here reads a clock or imports trio. Every draw comes from the fleet's
   ``random.Random`` in the order the due times come up, so a seeded run under the mock clock
   repeats exactly.

What an operation sends, by flow (PROTOCOL.md §5, the ``Profile`` docstring): ``partials``
mode, one partial per executed step, each after its step delay, then the final after the final
delay with the steps not executed; ``together`` mode, the sum of the step delays, then (only
``async-multi``) one partial with every step, then the final; a pending operation of a ``sync``
profile, its sync delay, then the final with every step. Faults after the ack: ``no_final``
(nothing), ``malformed_json`` (the final cut off), ``wrong_id`` (another id in every message),
``duplicate_final`` and ``partial_after_final`` (one more message right after the final). A
successful REFRESH_INFO ends with a collect/iot message when the fleet collects.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from loadgen.device.behaviour import (
    BUSY_DESCRIPTION,
    VARIABLE_OPERATIONS,
    Behaviour,
    Operation,
    collect_body,
    malformed,
    other_id,
    response_body,
    step_objects,
    step_results,
)
from loadgen.device.timers import TimerHeap
from loadgen.protocol import OPERATION_NAMES, ResultCode, StepResult

if TYPE_CHECKING:  # fleet.py holds trio (the sync path's admission waits); this module does not
    from loadgen.device.fleet import Device

__all__ = ["TRANSITIONS", "AsyncOp", "Event", "Message", "Stage", "StepMachine"]

REFRESH_INFO: Final = "REFRESH_INFO"
#: Counter prefixes of the two kinds of POST (``device.callback.sent``, ...).
CALLBACK: Final = "callback"
COLLECT: Final = "collect"
#: Operation names as one shared string each (a decoded name is a fresh copy per request).
_NAMES: Final = {name: name for name in OPERATION_NAMES}
_NO_PARAMETERS: Final[Mapping[str, Any]] = {}
_NOT_EXECUTED: Final = StepResult.NOT_EXECUTED
_SUCCESSFUL_STEPS_CACHED: Final = 1024
_TRAILING_FAULTS: Final = frozenset({"duplicate_final", "partial_after_final"})
_RESULT_COUNTERS: Final = {code: f"device.result.{code}" for code in ResultCode}

Step = tuple[str, StepResult]


class Stage(enum.Enum):
    # Identity hashing: members are singletons, and Enum.__hash__ is a Python-level call.
    __hash__ = object.__hash__

    NEW = "new"  # acknowledged (or fetched by a sleepy device), not yet admitted
    QUEUED = "queued"  # waiting for a slot at its busy device
    WORKING = "working"  # timer: the end of its current step (or of all steps, or its sync delay)
    REPORTING = "reporting"  # a partial is with the responder
    FINISHING = "finishing"  # timer: the end of the final delay
    ANSWERING = "answering"  # the final is with the responder
    TRAILING = "trailing"  # a message after the final is with the responder
    DONE = "done"


class Event(enum.Enum):
    __hash__ = object.__hash__  # as for Stage

    QUEUE = "queue"  # the device is busy and queues
    REFUSE = "refuse"  # the device is busy and turns it away: a final ERROR_PROCESSING
    WORK = "work"  # admitted, or a partial is done with: the next step starts
    REPORT = "report"  # a step ended: its partial goes out
    FINISH = "finish"  # the steps are done: the final delay starts
    ANSWER = "answer"  # the final delay ended: the final goes out
    SILENCE = "silence"  # the final delay ended and ``no_final`` keeps the final back
    TRAIL = "trail"  # one more message after the final (a fault's, or collect/iot)
    END = "end"  # nothing more to send


S, E = Stage, Event
#: Every legal move. Anything absent is a bug in the caller.
TRANSITIONS: Final[dict[tuple[Stage, Event], Stage]] = {
    (S.NEW, E.QUEUE): S.QUEUED,
    (S.NEW, E.REFUSE): S.ANSWERING,
    (S.NEW, E.WORK): S.WORKING,
    (S.NEW, E.FINISH): S.FINISHING,  # nothing to time before the final delay
    (S.QUEUED, E.WORK): S.WORKING,
    (S.QUEUED, E.FINISH): S.FINISHING,
    (S.WORKING, E.REPORT): S.REPORTING,
    (S.WORKING, E.FINISH): S.FINISHING,  # ``together`` without a partial, a sync profile
    (S.REPORTING, E.WORK): S.WORKING,
    (S.REPORTING, E.FINISH): S.FINISHING,
    (S.FINISHING, E.ANSWER): S.ANSWERING,
    (S.FINISHING, E.SILENCE): S.DONE,
    (S.ANSWERING, E.TRAIL): S.TRAILING,
    (S.ANSWERING, E.END): S.DONE,
    (S.TRAILING, E.TRAIL): S.TRAILING,
    (S.TRAILING, E.END): S.DONE,
}
del S, E


class AsyncOp:
    """One asynchronous operation in flight: what its messages need, and where it stands.

    It answers the ``Operation`` protocol (``id``, ``name``, ``parameters``, ``device_id``,
    ``path``), so the response bodies are built from it directly. The request itself is kept
    only until admission (its step names come from its parameters); after that only the
    parameters that a response echoes (GET/SET_DEVICE_PARAMETERS variables) stay.
    """

    __slots__ = (
        "behaviour",
        "device",
        "device_id",
        "done",
        "due",
        "fault",
        "id",
        "name",
        "operation_id",
        "parameters",
        "path",
        "request",
        "result",
        "slot",
        "stage",
        "steps",
    )

    def __init__(
        self, device: Device, request: Operation, behaviour: Behaviour, fault: str | None
    ) -> None:
        self.device = device
        self.request: Operation | None = request
        self.behaviour = behaviour
        self.fault = fault
        self.id = request.id
        name = request.name
        self.name = _NAMES.get(name, name)
        self.device_id = request.device_id
        self.path = request.path
        self.parameters: Mapping[str, Any] = _NO_PARAMETERS
        self.operation_id: str | None = None  # the ``wrong_id`` fault's id
        self.result: ResultCode | None = None
        self.steps: tuple[Step, ...] = ()
        self.done = 0  # steps already reported in partials
        self.due = 0.0  # the current (or last) due time, on the trio clock
        self.slot = False  # holds one of its device's slots
        self.stage = Stage.NEW

    def __repr__(self) -> str:
        return (
            f"<AsyncOp {self.id} {self.name} on {self.device.id} {self.stage.value} "
            f"due={self.due:.6f} steps={self.done}/{len(self.steps)} fault={self.fault}>"
        )


class Message:
    """One POST for the responder: a response (``callback``) or collect/iot data."""

    __slots__ = ("attempt", "body", "device_id", "kind", "op")

    def __init__(self, op: AsyncOp | None, device_id: str, kind: str, body: bytes) -> None:
        self.op = op  # None: a message of no operation in flight (a refusal, a collect)
        self.device_id = device_id
        self.kind = kind
        self.body = body
        self.attempt = 0  # retries so far

    def __repr__(self) -> str:
        op = "-" if self.op is None else self.op.id
        return f"<Message {self.kind} {self.device_id} op={op} attempt={self.attempt}>"


def _move(op: AsyncOp, event: Event) -> Stage:
    stage = TRANSITIONS.get((op.stage, event))
    if stage is None:
        raise RuntimeError(f"illegal {event.value} for {op!r}")
    op.stage = stage
    return stage


def stamp(due: float, now: float, wall_ms: int) -> int:
    """The wall-clock milliseconds of ``due``, given those of ``now`` (rule 3)."""
    return wall_ms - round((now - due) * 1000.0)


class StepMachine:
    """The asynchronous operations of one fleet, their due times and their messages.

    ``on_end(op)`` is called once per operation as it ends; ``on_earlier(due)`` when a timer is
    armed before every other one (the timer task then wakes earlier); ``on_answer(op, now)``
    when its final answer is written (built for the responder), ``no_final`` excepted.
    """

    __slots__ = (
        "_counters",
        "_successful",
        "collect",
        "live",
        "on_answer",
        "on_earlier",
        "on_end",
        "rng",
        "timers",
    )

    def __init__(
        self,
        rng: random.Random,
        counters: Counter[str],
        *,
        collect: bool = False,
        on_end: Callable[[AsyncOp], None] | None = None,
        on_earlier: Callable[[float], None] | None = None,
        on_answer: Callable[[AsyncOp, float], None] | None = None,
    ) -> None:
        self.rng = rng
        self.on_answer = on_answer
        self._counters = counters
        self.collect = collect
        self.on_end = on_end
        self.on_earlier = on_earlier
        self.timers: TimerHeap[AsyncOp | Message] = TimerHeap()
        self.live = 0
        # step names -> the all-successful step results, shared by every operation with them
        self._successful: dict[tuple[str, ...], tuple[Step, ...]] = {}

    def __repr__(self) -> str:
        return f"<StepMachine live={self.live} timers={len(self.timers)}>"

    # --- entering ------------------------------------------------------------------------

    def open(self, op: AsyncOp) -> None:
        """A new operation (stage ``NEW``); ``begin``, ``queue`` or ``refuse`` follows."""
        self.live += 1

    def queue(self, op: AsyncOp) -> None:
        """Its device is busy and it waits in the device's line (the caller put it there)."""
        _move(op, Event.QUEUE)

    def refuse(self, op: AsyncOp, now: float, wall_ms: int) -> Message:
        """Its device is busy and turns it away: the final ERROR_PROCESSING, at once."""
        _move(op, Event.REFUSE)
        op.fault = None  # a refused operation sends its refusal and nothing else
        op.result = ResultCode.ERROR_PROCESSING
        op.due = now
        self._completed(op.result)
        if self.on_answer is not None:
            self.on_answer(op, now)
        request = op.request
        assert request is not None
        op.request = None
        body = response_body(
            op,
            op.device.id,
            version=op.behaviour.profile.version,
            now_ms=wall_ms,
            result=ResultCode.ERROR_PROCESSING,
            steps=[],
            description=BUSY_DESCRIPTION,
        )
        return Message(op, op.device.id, CALLBACK, body)

    def begin(self, op: AsyncOp, now: float, last_id: str | None) -> None:
        """Admitted at ``now`` (it holds a device slot): draw its result and its steps, and arm
        its first timer. ``last_id`` is the fleet's previous operation (``wrong_id``)."""
        request = op.request
        assert request is not None
        op.request = None
        op.slot = True
        op.due = now
        behaviour = op.behaviour
        rng = self.rng
        result = op.result = behaviour.draw_result(rng)
        names = behaviour.step_names(request)
        if result is ResultCode.SUCCESSFUL:
            steps = self._successful.get(names)
            if steps is None:
                if len(self._successful) >= _SUCCESSFUL_STEPS_CACHED:
                    self._successful.clear()
                steps = self._successful[names] = tuple(step_results(names, result, rng))
            op.steps = steps
        else:
            op.steps = tuple(step_results(names, result, rng))
        if op.fault == "wrong_id":
            op.operation_id = other_id(rng, last_id, op.id)
        if op.name in VARIABLE_OPERATIONS:
            op.parameters = request.parameters
        self._work(op)

    # --- the timer side ------------------------------------------------------------------

    def expire(self, now: float, wall_ms: int) -> list[Message]:
        """Fire every timer due at ``now``, earliest first: the messages to deliver now (each
        stamped with its own due time) and the retries whose wait has passed."""
        timers = self.timers
        out: list[Message] = []
        while timers.next_due <= now:
            due, item = timers.pop()
            if isinstance(item, Message):
                out.append(item)
                continue
            message = self._fire(item, now, stamp(due, now, wall_ms))
            if message is not None:
                out.append(message)
        return out

    def retry(self, message: Message, at: float) -> None:
        """The responder will try ``message`` again at ``at`` (its operation waits meanwhile)."""
        self._arm(at, message)

    # --- the responder side --------------------------------------------------------------

    def done_with(self, message: Message, now: float, wall_ms: int) -> Message | None:
        """The responder is done with ``message``: the operation's next message when it goes
        right away (after the final), else None (a timer is armed, or the operation ended)."""
        op = message.op
        if op is None:
            return None
        stage = op.stage
        if stage is Stage.REPORTING:
            self._work(op)
            return None
        # ANSWERING or TRAILING: what follows the final, stamped with the final's due time
        when = stamp(op.due, now, wall_ms)
        if stage is Stage.ANSWERING and op.fault in _TRAILING_FAULTS:
            _move(op, Event.TRAIL)
            if op.fault == "duplicate_final":
                return Message(op, op.device.id, CALLBACK, self._final(op, when))
            late = op.steps[-1:] or ((op.name, StepResult.SUCCESSFUL),)
            return Message(op, op.device.id, CALLBACK, self._body(op, when, None, late))
        if message.kind != COLLECT and self._collects(op):
            _move(op, Event.TRAIL)
            return Message(op, op.device.id, COLLECT, collect_body(op.device.id, when, self.rng))
        _move(op, Event.END)
        self._end(op)
        return None

    def abandon(self) -> int:
        """The fleet stopped before these ended: empty the heap, forget them; how many."""
        cut = self.live
        self.timers.clear()
        self.live = 0
        return cut

    # --- the steps -----------------------------------------------------------------------

    def _work(self, op: AsyncOp) -> None:
        """Admitted, or a partial done with: arm the next step, or the final delay."""
        behaviour = op.behaviour
        profile = behaviour.profile
        rng = self.rng
        if op.stage is Stage.REPORTING and profile.steps_mode != "partials":
            self._finish(op)  # the one partial of ``together`` is out
            return
        if profile.flow == "sync":  # a pending operation of a sync profile
            delay = behaviour.sync_delay
            if delay is None:
                self._finish(op)
                return
            work = delay.sample(rng)
        elif profile.steps_mode == "partials":
            steps, done = op.steps, op.done
            if done >= len(steps) or steps[done][1] is _NOT_EXECUTED:
                self._finish(op)
                return
            step_delay = behaviour.step_delay
            work = 0.0 if step_delay is None else step_delay.sample(rng)
        else:
            step_delay = behaviour.step_delay
            multi = profile.flow == "async-multi" and op.steps
            if step_delay is None and not multi:
                self._finish(op)
                return
            executed = sum(1 for step in op.steps if step[1] is not _NOT_EXECUTED)
            work = (
                0.0 if step_delay is None else sum(step_delay.sample(rng) for _ in range(executed))
            )
        _move(op, Event.WORK)
        op.due += work
        self._arm(op.due, op)

    def _finish(self, op: AsyncOp) -> None:
        _move(op, Event.FINISH)
        delay = op.behaviour.final_delay
        if delay is not None:
            op.due += delay.sample(self.rng)
        self._arm(op.due, op)

    def _fire(self, op: AsyncOp, now: float, when: int) -> Message | None:
        """``op``'s timer is due (``now``: it fires); ``when`` is its due time on the wall
        clock."""
        if op.stage is Stage.WORKING:
            profile = op.behaviour.profile
            if profile.flow != "sync" and profile.steps_mode == "partials":
                step = op.steps[op.done]
                op.done += 1
                _move(op, Event.REPORT)
                return Message(op, op.device.id, CALLBACK, self._body(op, when, None, (step,)))
            if profile.flow == "async-multi" and op.steps:
                op.done = len(op.steps)  # every step in this partial, none left for the final
                _move(op, Event.REPORT)
                return Message(op, op.device.id, CALLBACK, self._body(op, when, None, op.steps))
            self._finish(op)
            return None
        result = op.result
        assert result is not None
        self._completed(result)
        if op.fault == "no_final":
            _move(op, Event.SILENCE)
            self._end(op)
            return None
        _move(op, Event.ANSWER)
        if self.on_answer is not None:
            self.on_answer(op, now)
        final = self._final(op, when)
        return Message(
            op, op.device.id, CALLBACK, malformed(final) if op.fault == "malformed_json" else final
        )

    # --- helpers -------------------------------------------------------------------------

    def _arm(self, due: float, item: AsyncOp | Message) -> None:
        if self.timers.push(due, item) and self.on_earlier is not None:
            self.on_earlier(due)

    def _body(
        self, op: AsyncOp, when: int, result: ResultCode | None, steps: tuple[Step, ...]
    ) -> bytes:
        return response_body(
            op,
            op.device.id,
            version=op.behaviour.profile.version,
            now_ms=when,
            result=result,
            steps=step_objects(op, steps, when),
            operation_id=op.operation_id,
        )

    def _final(self, op: AsyncOp, when: int) -> bytes:
        return self._body(op, when, op.result, op.steps[op.done :])

    def _collects(self, op: AsyncOp) -> bool:
        return self.collect and op.result is ResultCode.SUCCESSFUL and op.name == REFRESH_INFO

    def _completed(self, result: ResultCode) -> None:
        counters = self._counters
        counters[_RESULT_COUNTERS[result]] += 1
        counters["device.ops.completed"] += 1

    def _end(self, op: AsyncOp) -> None:
        self.live -= 1
        if self.on_end is not None:
            self.on_end(op)
