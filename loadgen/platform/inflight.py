"""The in-flight table: every operation from its send to its one and only end (pure).

Theory of operation
-------------------
The platform matches asynchronous responses to requests by operation id alone (PROTOCOL.md §7),
so the table is a dict ``id -> Operation`` holding ``(device, name, t_intended, t_sent, t_ack,
t_first, steps, deadline)``. An operation's lifecycle is a small state machine, kept as data in
``TRANSITIONS`` below, in the manner of h11's ``_state.py``. The rules of this file:

1. Every change of state goes through ``_move``, which looks the ``(state, event)`` pair up in
   ``TRANSITIONS``; a pair that is not there is a bug in the caller and raises.
2. An operation ends exactly once, in one of the three terminal states (``COMPLETED``,
   ``TIMED_OUT``, ``ERROR``), and leaves the live dict at that moment; ``ops.issued ==
   ops.completed + ops.timed_out + ops.errors`` once nothing is live. ``ops.issued`` counts
   operations as they are opened, ``ops.sent`` as they are first *written* (``written``: a
   worker takes one from its lane to write it on a connection, or a sleepy device's is put in
   its pending queue); in between they are *queued* (``queued``, a gauge). One that reaches its
   deadline still queued was never sent: it times out like any other (``ops.timed_out``,
   recorded at its deadline) and is also counted in ``ops.timed_out_queued``, so ``ops.sent ==
   ops.issued - ops.timed_out_queued`` once nothing is live. Nothing else can end an
   operation that was never written (every other end is an answer to it): a message for one
   changes nothing and is counted (``south.unsent``), as is one for the attempt before a
   re-send still queued (``south.late``). The id is remembered
   for a while (rule 6) so that a later message for it is classified ``late`` or
   ``duplicate`` rather than ``orphan``; none of them changes anything but a counter.
3. Every latency is recorded from the intended send time, with its service-time twin from the
   actual send time (``metrics.phase(name).record(now - t_intended, now - t_sent)``), each phase
   at most once per operation (``step`` once per partial message). A missing answer is recorded
   *at its deadline*, as the deadline's value: a timed-out operation records ``complete`` (and
   ``ack`` when it was never acknowledged) as ``deadline - t_intended``, never dropped.
4. Time is an argument (``now: float``); nothing here reads a clock or imports trio, so a test
   drives every timing with plain floats.
5. A deadline comes before a failure it caused: an exchange that fails at or after its
   operation's pending deadline while the operation is still ``SENT`` (the connection pool
   closes the connection *because* of that deadline, and may report it before the timer task
   runs) times the operation out at the deadline, exactly as the timer would have; the
   exchange's end then counts as ``ops.abandoned_exchanges`` as it does in the other order.
6. An ended id is remembered for its *window*, the longest time in which a message for it still
   means something: from its end, its own ``timeout`` (a device may still be working on it) plus
   the south API's ``linger`` (how long the API listens after the last operation). After that it
   is forgotten and a message for it is an ``orphan``. Memory is bounded in time, not in count:
   ``rate x window`` ids, whatever the run's length (see ``EndedIds``).

Deadlines
---------
Each live operation has exactly one pending timer, whose meaning follows from its state: in
``SENT`` it is the *first* deadline, ``t_anchor + min(ackTimeout, timeout)`` (``timeout`` bounds
the time to the final response whatever phase the operation is stuck in, PROTOCOL.md §7, so an
answer that never comes ends it at ``timeout`` when that is the shorter), in ``ACKED``/``PARTIAL``
the final deadline (``t_anchor + timeout``), in ``RETRY_WAIT`` the time to re-send. ``t_anchor``
is the intended send time of the first attempt (so a timed-out operation records exactly its
deadline), and the re-send time of a retry. The sender hands the ``SENT`` deadline to the
transport with the request, which closes the connection of an exchange still running then (the
pool never reuses it). Timers live in one ``DeadlineHeap`` (``loadgen.deadline_heap``, shared
with the north side's jobs) serviced by one task (``expire(now)``), not a task or a cancel scope
per operation: arming is an O(log n) push, and a timer made obsolete by an answer is not removed
but recognised as stale when it surfaces (the heap is rebuilt when stale entries outnumber live
ones), which keeps 100k operations in flight cheap.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from loadgen.deadline_heap import DeadlineHeap
from loadgen.metrics.registry import Metrics, PhaseRecorder
from loadgen.protocol.enums import RESULT_CODE_BY_VALUE

if TYPE_CHECKING:  # config pulls in the HTTP layer (and trio); this module stays pure
    from loadgen.platform.config import Timeouts

__all__ = [
    "ENDED",
    "GENERATION_SECONDS",
    "TRANSITIONS",
    "EndedIds",
    "Event",
    "InflightTable",
    "Operation",
    "State",
    "TableStats",
]

StateT = TypeVar("StateT", bound=enum.Enum)

#: The width of one generation of remembered ended ids (``EndedIds``): an id is forgotten at most
#: this long after its window closes, and a lookup probes ``window / width + 1`` generations.
GENERATION_SECONDS: Final = 1.0
_SUCCESSFUL: Final = "SUCCESSFUL"
_ERROR_TIMEOUT: Final = "ERROR_TIMEOUT"
#: ``result.<code>`` counter names, built once rather than per operation.
_RESULT_COUNTER: Final = {code: f"result.{code}" for code in RESULT_CODE_BY_VALUE}


class State(enum.Enum):
    # Members are singletons compared by identity, so identity hashing is consistent with their
    # equality; ``Enum.__hash__`` is a Python-level call, paid on every transition lookup.
    __hash__ = object.__hash__

    SENT = "sent"  # issued: queued, being written, or waiting for the HTTP answer (or a poll)
    ACKED = "acked"  # HTTP 2xx without a response: the device will POST its responses
    PARTIAL = "partial"  # at least one partial response arrived
    RETRY_WAIT = "retry_wait"  # a final code in retryResultList: waiting retriesDelay to re-send
    COMPLETED = "completed"  # final response (or sync answer) received
    TIMED_OUT = "timed_out"  # ack or final deadline passed: ERROR_TIMEOUT
    ERROR = "error"  # no response: transport error or non-2xx answer


class Event(enum.Enum):
    __hash__ = object.__hash__  # as for State

    ACK = "ack"  # HTTP 2xx with an empty body, or the operation served to a pending poll
    SYNC_FINAL = "sync_final"  # HTTP 2xx whose body is the final response
    PARTIAL = "partial"  # async message without resultCode
    FINAL = "final"  # async message with resultCode
    RETRY = "retry"  # a final (sync or async) whose code asks for a retry, retries left
    ERROR = "error"  # the exchange failed (transport error or non-2xx)
    ACK_DEADLINE = "ack_deadline"
    DEADLINE = "deadline"
    RESEND = "resend"  # the retry delay has passed
    REJECT = "reject"  # strict: the device's answer does not match the operation (``misfit``)


TERMINAL: Final = frozenset({State.COMPLETED, State.TIMED_OUT, State.ERROR})
#: The states in which an answer or message changes nothing but a counter (``_after_end``).
_OVER_OR_WAITING: Final = TERMINAL | {State.RETRY_WAIT}
# Members read on the hot paths, bound once: ``State.SENT`` is a look-up through the enum's
# metaclass (~60 ns on CPython 3.11, ten times a local's), paid several times per operation.
_SENT: Final = State.SENT
_ACKED: Final = State.ACKED
_PARTIAL: Final = State.PARTIAL
_RETRY_WAIT: Final = State.RETRY_WAIT
_ON_ACK: Final = Event.ACK
_ON_FINAL: Final = Event.FINAL
_ON_SYNC_FINAL: Final = Event.SYNC_FINAL

S, E = State, Event
#: Every legal move. Anything absent is a bug in the caller.
TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (S.SENT, E.ACK): S.ACKED,
    (S.SENT, E.SYNC_FINAL): S.COMPLETED,
    (S.SENT, E.PARTIAL): S.PARTIAL,  # the device POSTed before we read its 201
    (S.SENT, E.FINAL): S.COMPLETED,  # likewise
    (S.SENT, E.RETRY): S.RETRY_WAIT,
    (S.SENT, E.ERROR): S.ERROR,
    (S.SENT, E.ACK_DEADLINE): S.TIMED_OUT,
    (S.SENT, E.DEADLINE): S.TIMED_OUT,  # timeout < ackTimeout: the final deadline comes first
    (S.ACKED, E.PARTIAL): S.PARTIAL,
    (S.ACKED, E.FINAL): S.COMPLETED,
    (S.ACKED, E.RETRY): S.RETRY_WAIT,
    (S.ACKED, E.DEADLINE): S.TIMED_OUT,
    (S.PARTIAL, E.ACK): S.PARTIAL,  # the 201 read after an early partial
    (S.PARTIAL, E.ERROR): S.PARTIAL,  # the exchange broke, but the device is working on it
    (S.PARTIAL, E.PARTIAL): S.PARTIAL,
    (S.PARTIAL, E.FINAL): S.COMPLETED,
    (S.PARTIAL, E.RETRY): S.RETRY_WAIT,
    (S.PARTIAL, E.DEADLINE): S.TIMED_OUT,
    (S.RETRY_WAIT, E.RESEND): S.SENT,
    (S.RETRY_WAIT, E.DEADLINE): S.TIMED_OUT,  # only when the run ends before the re-send
    (S.SENT, E.REJECT): S.ERROR,
    (S.ACKED, E.REJECT): S.ERROR,
    (S.PARTIAL, E.REJECT): S.ERROR,
}
del S, E

#: A wire message (or HTTP answer) for an operation no longer live: the counter it goes to.
ENDED: Final[dict[tuple[State, Event], str]] = {
    (State.COMPLETED, Event.FINAL): "south.duplicate",
    (State.COMPLETED, Event.PARTIAL): "south.late",
    (State.TIMED_OUT, Event.FINAL): "south.late",
    (State.TIMED_OUT, Event.PARTIAL): "south.late",
    (State.ERROR, Event.FINAL): "south.late",
    (State.ERROR, Event.PARTIAL): "south.late",
}


class Operation:
    """One operation in flight (and, once ended, what is left of it for the sender)."""

    __slots__ = (
        "body",
        "device",
        "entry",
        "id",
        "name",
        "on_done",
        "result",
        "retries_left",
        "state",
        "steps",
        "t_ack",
        "t_anchor",
        "t_first",
        "t_intended",
        "t_sent",
        "timeouts",
        "timer",
    )

    def __init__(
        self,
        op_id: str,
        device: int,
        name: str,
        t_intended: float,
        timeouts: Timeouts,
        body: bytes = b"",
        entry: int = 0,
    ) -> None:
        # Not keyword-only: the sender creates one per operation, positionally, and passing
        # keywords would cost more than the rest of this constructor.
        self.id = op_id
        self.device = device
        self.name = name
        self.entry = entry
        self.body = body
        self.t_intended = t_intended
        self.t_anchor = t_intended
        self.t_sent: float | None = None
        self.t_ack: float | None = None
        self.t_first: float | None = None
        self.steps: list[Any] | None = None  # accumulated over the messages, when any
        self.timeouts = timeouts
        self.retries_left = timeouts.retries
        self.state = _SENT
        self.timer = -1  # the seq of its one valid entry in the table's DeadlineHeap (-1: none)
        self.result: str | None = None  # the final resultCode, once completed
        # Called once as the operation ends (the stand-in's job book follows its operations so).
        self.on_done: Callable[[Operation], None] | None = None

    @property
    def deadline(self) -> float:
        """The pending deadline implied by the state (inf once ended)."""
        state = self.state
        if state is _SENT:  # _first_timeout inlined: the sender reads this per exchange
            timeouts = self.timeouts
            ack, final = timeouts.ack_timeout, timeouts.timeout
            return self.t_anchor + (ack if ack <= final else final)
        if state is _ACKED or state is _PARTIAL:
            return self.t_anchor + self.timeouts.timeout
        if state is _RETRY_WAIT:
            return self.t_anchor
        return float("inf")

    def __repr__(self) -> str:
        return (
            f"<Operation {self.id} {self.name} dev={self.device} {self.state.value} "
            f"intended={self.t_intended:.6f} sent={self.t_sent} ack={self.t_ack} "
            f"steps={len(self.steps or ())}>"
        )


class EndedIds(Generic[StateT]):
    """Ended ids and how each ended (a member of the enum ``kind``), each kept until its window
    closes (rule 6).

    Generations by expiry time, not a dict of every id ever ended: ``add`` puts an id into the
    generation ``ceil(expires / width)``, and a generation is dropped whole as soon as ``now``
    passes its end (``index * width``), when every id in it has expired. So an id is recognised
    at least until it expires and forgotten at most ``width`` later; adding is O(1); dropping is
    one dict freed per generation, without a timer or a scan per id; what is kept is the ids
    ended in the last window, ``rate x (window + width)``, whatever the run's length. Windows may
    differ per operation (each has its own ``timeout``): each id goes where its own expiry falls.
    A lookup probes every kept generation (``window / width + 1``); only messages for ids that
    are no longer live look, so the hot path never does.

    A generation maps an id to the member's *value* (a string), not the member: a dict of
    strings only is never tracked by the garbage collector, so the tens of thousands of ids
    kept add nothing to a collection (an enum member would make every generation a container
    the collector walks, entry by entry, at each full collection).
    """

    __slots__ = ("_generations", "_horizon", "kind", "width")

    def __init__(self, kind: type[StateT], width: float = GENERATION_SECONDS) -> None:
        if not width > 0:
            raise ValueError(f"expected a generation width > 0 s, got {width!r}")
        self.kind = kind
        self.width = width
        self._generations: dict[int, dict[str, Any]] = {}
        self._horizon = math.inf  # the end of the oldest generation: past it, one is dropped

    def __len__(self) -> int:
        return sum(len(generation) for generation in self._generations.values())

    def __repr__(self) -> str:
        return f"<EndedIds ids={len(self)} generations={len(self._generations)}>"

    @property
    def generations(self) -> int:
        return len(self._generations)

    def add(self, op_id: str, state: StateT, expires: float, now: float) -> None:
        """Remember ``op_id`` (ended in ``state``) until ``expires``; ``now`` drops what expired."""
        if now > self._horizon:
            self.forget(now)
        index = math.ceil(expires / self.width)
        generation = self._generations.get(index)
        if generation is None:
            generation = self._generations[index] = {}
            end = index * self.width
            if end < self._horizon:
                self._horizon = end
        generation[op_id] = state._value_  # (``value`` is a property: a Python-level call)

    def get(self, op_id: str, now: float) -> StateT | None:
        """How ``op_id`` ended, or None when it never did or its window has closed."""
        if now > self._horizon:
            self.forget(now)
        for generation in self._generations.values():
            value = generation.get(op_id)
            if value is not None:
                return self.kind(value)
        return None

    def forget(self, now: float) -> None:
        """Drop every generation whose end ``now`` has passed (all of its ids have expired)."""
        generations, width = self._generations, self.width
        for index in [index for index in generations if index * width < now]:
            del generations[index]
        self._horizon = min(generations) * width if generations else math.inf


class TableStats:
    """A frozen view for status lines."""

    __slots__ = ("in_flight", "peak", "queued", "timers")

    def __init__(self, in_flight: int, peak: int, timers: int, queued: int = 0) -> None:
        self.in_flight = in_flight
        self.peak = peak
        self.timers = timers
        self.queued = queued  # of ``in_flight``, not written yet (waiting for a connection)

    def __repr__(self) -> str:
        return (
            f"TableStats(in_flight={self.in_flight}, peak={self.peak}, timers={self.timers}, "
            f"queued={self.queued})"
        )


def _never_written(op: Operation) -> bool:
    """Not written yet, and not a re-send either (a retry clears ``t_sent`` but keeps one
    retry fewer): an operation that was never sent."""
    return op.t_sent is None and op.retries_left == op.timeouts.retries


def _first_timeout(timeouts: Timeouts) -> float:
    """How long a ``SENT`` operation may wait: the ack deadline, or the final one if earlier."""
    ack, final = timeouts.ack_timeout, timeouts.timeout
    return ack if ack <= final else final


def _add_steps(op: Operation, steps: Sequence[Any]) -> None:
    if op.steps is None:
        op.steps = list(steps)
    else:
        op.steps.extend(steps)


def _move(op: Operation, event: Event) -> State:
    state = TRANSITIONS.get((op.state, event))
    if state is None:
        raise RuntimeError(f"illegal {event.value} for {op!r}")
    op.state = state
    return state


class InflightTable:
    """Live operations by id, their deadlines, and the recording of every transition.

    ``on_end(op)`` is called once per operation as it ends (the closed model uses it to start
    the next one); ``on_earlier(deadline)`` when a timer is armed before every other one (the
    timer task then wakes earlier). With ``strict``, an answer that does not match its
    operation ends it as an error (``misfit``). ``linger`` is the south API's (rule 6);
    ``generation`` the width of one generation of ended ids (``EndedIds``).
    """

    __slots__ = (
        "_ack",
        "_breakdown",
        "_complete",
        "_first",
        "_linger",
        "_step",
        "_timers",
        "counters",
        "ended",
        "live",
        "metrics",
        "on_end",
        "peak",
        "queued",
        "strict",
    )

    def __init__(
        self,
        metrics: Metrics,
        *,
        breakdown_by_name: bool = False,
        linger: float = 0.0,
        generation: float = GENERATION_SECONDS,
        on_end: Callable[[Operation], None] | None = None,
        on_earlier: Callable[[float], None] | None = None,
        strict: bool = False,
    ) -> None:
        self.metrics = metrics
        self.strict = strict
        self.counters = metrics.counters
        self.live: dict[str, Operation] = {}
        self.ended = EndedIds(State, generation)
        self._linger = linger
        self.peak = 0
        self.queued = 0  # live operations not written yet (``t_sent is None``)
        self.on_end = on_end
        self._breakdown = breakdown_by_name
        self._timers: DeadlineHeap[Operation] = DeadlineHeap(on_earlier)
        self._ack = metrics.phase("ack")
        self._first = metrics.phase("first_response")
        self._complete = metrics.phase("complete")
        self._step = metrics.phase("step")

    def __len__(self) -> int:
        return len(self.live)

    def __repr__(self) -> str:
        return (
            f"<InflightTable live={len(self.live)} peak={self.peak} timers={self._timers.entries}"
            f" ended={len(self.ended)}>"
        )

    def statistics(self) -> TableStats:
        return TableStats(len(self.live), self.peak, self._timers.entries, self.queued)

    # --- timers ------------------------------------------------------------------------------

    @property
    def on_earlier(self) -> Callable[[float], None] | None:
        """Called with a deadline armed before every other (the timer task then wakes sooner)."""
        return self._timers.on_earlier

    @on_earlier.setter
    def on_earlier(self, callback: Callable[[float], None] | None) -> None:
        self._timers.on_earlier = callback

    @property
    def next_deadline(self) -> float:
        """The earliest pending deadline (inf when none); drops stale heap heads."""
        return self._timers.next_due

    def expire(self, now: float) -> list[Operation]:
        """Fire every timer due at ``now``. Returns the operations to re-send (retries)."""
        resend: list[Operation] = []
        for deadline, op in self._timers.pop_due(now):
            if op.state is State.RETRY_WAIT:
                _move(op, Event.RESEND)
                op.t_anchor = deadline
                op.t_sent = None
                self.queued += 1
                self._timers.push(deadline + _first_timeout(op.timeouts), op)
                resend.append(op)
            else:
                self._time_out(op, deadline)
        return resend

    def drain(self) -> int:
        """End every live operation as timed out at its own deadline (the run is over, the
        grace period with it): each is also counted in ``ops.cut_by_grace``."""
        remaining = list(self.live.values())
        for op in remaining:
            self._time_out(op, op.deadline, cut=True)
        self._timers.clear()
        return len(remaining)

    # --- the lifecycle -----------------------------------------------------------------------

    def open(self, op: Operation) -> float:
        """A new operation has been issued: queued until ``written``. Returns the deadline it
        armed, ``op.deadline`` (the sender passes it with the request: one computation less)."""
        live = self.live
        live[op.id] = op
        if len(live) > self.peak:
            self.peak = len(live)
        self.counters["ops.issued"] += 1
        self.queued += 1
        deadline = op.t_anchor + _first_timeout(op.timeouts)
        self._timers.push(deadline, op)
        return deadline

    def written(self, op: Operation, now: float) -> None:
        """``op`` (queued, ``t_sent is None``) is being written now: its service time starts.
        The first write of an operation counts it in ``ops.sent``; a retry's re-send does not."""
        if op.t_sent is None and op.retries_left == op.timeouts.retries:  # _never_written
            self.counters["ops.sent"] += 1
        op.t_sent = now
        self.queued -= 1

    def ack(self, op: Operation, now: float) -> None:
        """The HTTP answer was 2xx with no response in it (or a pending poll served it)."""
        if op.state in _OVER_OR_WAITING:
            self._after_end(op, _ON_ACK, now)
            return
        state = _move(op, _ON_ACK)
        self._record_ack(op, now)
        if state is _ACKED:
            self._timers.push(op.t_anchor + op.timeouts.timeout, op)

    def final(
        self, op: Operation, now: float, code: str, steps: Sequence[Any], *, sync: bool
    ) -> None:
        """A final response: the HTTP answer's body (``sync``) or an async message."""
        if op.state in _OVER_OR_WAITING:
            self._after_end(op, _ON_FINAL, now)
            return
        if steps:
            _add_steps(op, steps)
        counters = self.counters
        # ``_record`` and ``_record_ack`` unrolled (the sync answer is the hot path): the ack and
        # the completion of a sync answer are the same instant, hence the same two values.
        sent = op.t_sent
        intended = now - op.t_intended
        service = now - (sent if sent is not None else op.t_anchor)
        if sync:
            if op.t_ack is None:
                op.t_ack = now
                self._ack.intended.record(intended)
                self._ack.service.record(service)
                counters["ops.acked"] += 1
        elif op.t_first is None:
            op.t_first = now
            self._first.intended.record(intended)
            self._first.service.record(service)
        if op.retries_left and code in op.timeouts.retry_result_list:
            _move(op, Event.RETRY)
            op.retries_left -= 1
            counters["ops.retries"] += 1
            op.t_anchor = now + op.timeouts.retries_delay
            self._timers.push(op.t_anchor, op)
            return
        _move(op, _ON_SYNC_FINAL if sync else _ON_FINAL)
        complete = self._complete
        complete.intended.record(intended)
        complete.service.record(service)
        if self._breakdown:
            self._record(self.metrics.phase(f"complete.{op.name}"), op, now)
            if code != _SUCCESSFUL:
                counters[f"by_name.{op.name}.failed"] += 1
        counters["ops.completed"] += 1
        op.result = code
        counters["ops.succeeded" if code == _SUCCESSFUL else "ops.failed"] += 1
        counters[_RESULT_COUNTER.get(code) or f"result.{code}"] += 1
        self._end(op, now)

    def partial(self, op: Operation, now: float, steps: Sequence[Any]) -> None:
        """An async message without resultCode: accumulate its steps."""
        if op.state in _OVER_OR_WAITING:
            self._after_end(op, Event.PARTIAL, now)
            return
        previous = op.state
        _move(op, Event.PARTIAL)
        if steps:
            _add_steps(op, steps)
        if op.t_first is None:
            op.t_first = now
            self._record(self._first, op, now)
        self._record(self._step, op, now)
        self.counters["ops.partials"] += 1
        if previous is _SENT:
            self._timers.push(op.t_anchor + op.timeouts.timeout, op)

    def error(self, op: Operation, now: float, counter: str) -> None:
        """The exchange failed: ``counter`` names why (``transport.<kind>``, ``http.status.<n>``)."""
        if op.state in _OVER_OR_WAITING:
            # The operation ended (timed out, or answered by an async final) while its exchange
            # was still going: that exchange's end is no longer an outcome.
            self.counters["ops.abandoned_exchanges"] += 1
            return
        if op.state is State.SENT:
            deadline = op.deadline
            if now >= deadline:  # rule 5: the deadline came first
                self._time_out(op, deadline)
                self.counters["ops.abandoned_exchanges"] += 1
                return
        self.counters[counter] += 1
        if _move(op, Event.ERROR) is State.ERROR:
            self.counters["ops.errors"] += 1
            if self._breakdown:
                self.counters[f"by_name.{op.name}.errors"] += 1
            self._end(op, now)

    def superseded(self, op: Operation) -> None:
        """An exchange of an earlier attempt ended after its operation was re-sent (a retry):
        its answer or failure says nothing about the attempt now live, so only a counter."""
        self.counters["ops.abandoned_exchanges"] += 1

    def misfit(self, op: Operation, wrong: Sequence[str], now: float) -> bool:
        """A device's answer or message for ``op`` does not match it: each of ``wrong`` (the
        ``device.wrong_*`` counters) is counted. With ``strict``, a live operation then ends as
        an error (``ops.errors``, ``ops.strict_errors``) and True says the answer is not to be
        used; otherwise (or once it has ended) False, and the answer goes on as usual."""
        counters = self.counters
        for name in wrong:
            counters[name] += 1
        if not self.strict or op.state in _OVER_OR_WAITING:
            return False
        _move(op, Event.REJECT)
        counters["ops.strict_errors"] += 1
        counters["ops.errors"] += 1
        self._end(op, now)
        return True

    def message(self, op_id: str, now: float, code: str | None, steps: Sequence[Any]) -> str:
        """An async message from the south API. Returns ``ok``, ``orphan``, ``late``,
        ``duplicate`` or ``unsent`` (each counted as ``south.<outcome>`` except ``ok``):
        ``unsent`` is a message for a live operation not written yet, which answers nothing
        (a device answering an id it never received); it changes nothing, by rule 2."""
        op = self.live.get(op_id)
        if op is None:
            state = self.ended.get(op_id, now)
            if state is None:
                self.counters["south.orphan"] += 1
                return "orphan"
            counter = ENDED[(state, Event.PARTIAL if code is None else Event.FINAL)]
            self.counters[counter] += 1
            return counter.split(".", 1)[1]
        if op.state is State.RETRY_WAIT:
            self.counters["south.late"] += 1
            return "late"
        if op.t_sent is None:  # the attempt this would answer has not been written (rule 2)
            if _never_written(op):
                self.counters["south.unsent"] += 1
                return "unsent"
            self.counters["south.late"] += 1  # for the attempt before the re-send queued now
            return "late"
        if code is None:
            self.partial(op, now, steps)
        else:
            self.final(op, now, code, steps, sync=False)
        return "ok"

    # --- recording ---------------------------------------------------------------------------

    def _record(self, phase: PhaseRecorder, op: Operation, now: float) -> None:
        # ``phase.record`` unrolled: this runs two or three times per operation.
        sent = op.t_sent
        phase.intended.record(now - op.t_intended)
        phase.service.record(now - (sent if sent is not None else op.t_anchor))

    def _record_ack(self, op: Operation, now: float, *, answered: bool = True) -> None:
        if op.t_ack is None:
            op.t_ack = now
            self._record(self._ack, op, now)
            if answered:
                self.counters["ops.acked"] += 1

    def _after_end(self, op: Operation, event: Event, now: float) -> None:
        """An answer or message for an operation that has ended (or awaits its retry)."""
        if event is Event.ACK:
            if op.state in (State.COMPLETED, State.RETRY_WAIT) and op.t_ack is None:
                self._record_ack(op, now)  # the 201 read after the async final: still a fact
            else:
                self.counters["ops.late_answers"] += 1
            return
        if op.state is State.RETRY_WAIT:
            self.counters["south.late"] += 1
            return
        self.counters[ENDED[(op.state, event)]] += 1

    def _time_out(self, op: Operation, deadline: float, *, cut: bool = False) -> None:
        if op.state is State.SENT:
            timeouts = op.timeouts
            first = timeouts.ack_timeout <= timeouts.timeout
            _move(op, Event.ACK_DEADLINE if first else Event.DEADLINE)
        else:
            _move(op, Event.DEADLINE)
        if op.t_ack is None:
            self._record_ack(op, deadline, answered=False)
        self._record(self._complete, op, deadline)
        counters = self.counters
        if self._breakdown:
            self._record(self.metrics.phase(f"complete.{op.name}"), op, deadline)
            counters[f"by_name.{op.name}.timed_out"] += 1
        counters["ops.timed_out"] += 1
        counters[_RESULT_COUNTER[_ERROR_TIMEOUT]] += 1
        if _never_written(op):  # its deadline came while it waited for a connection
            counters["ops.timed_out_queued"] += 1
        if cut:
            counters["ops.cut_by_grace"] += 1
        self._end(op, deadline)

    def _end(self, op: Operation, now: float) -> None:
        """``op`` ended at ``now`` (a deadline for a time-out, however late its timer woke)."""
        if op.t_sent is None:
            self.queued -= 1
        self._timers.cancel(op)  # its heap entry, if any, is stale from now on
        del self.live[op.id]
        self.ended.add(op.id, op.state, now + op.timeouts.timeout + self._linger, now)
        if self.on_end is not None:
            self.on_end(op)
        if op.on_done is not None:
            op.on_done(op)
