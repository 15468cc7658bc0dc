"""The sender: issues operations on schedule and carries each one's HTTP exchange (trio).

Shape of the hot path
---------------------
One *issuing* task runs the arrival model. In the open model it sleeps until the next intended
time (``loadgen.platform.schedule`` explains the pacing) and then issues every operation that is
due; in the closed model it issues one as soon as an in-flight slot frees. Issuing an operation
is synchronous and cheap: draw the mix entry and the device, render the body from its template,
open the operation in the in-flight table (which arms its ack deadline), record the send's
lateness, and append it to its *lane*.

A lane is the queue of one device address (``Origin``). It is served by up to
``max_connections`` worker tasks, each holding at most one connection of the pool at a time
and running one exchange after another, like wrk2's connections. Workers are started on demand
and park when their lane is empty, so there is no task per operation, and an operation's
``t_sent`` is the moment a worker actually writes it (``InflightTable.written``, which counts it
in ``ops.sent``): when every connection of an address is busy (a frozen device), operations wait
in the lane, *queued* (issued, ``ops.issued``, but not sent: the table's ``queued`` gauge), the
intended-time latency keeps growing (coordinated omission corrected) while the service time
shows the closed-loop view. One whose deadline comes while it is still queued times out there,
never sent (``ops.timed_out_queued``).

Operations for *sleepy* devices are not written at all: they wait in the south API's pending
queue until the device polls (``GET .../operation/pending``). Being put there is their sending
(``t_sent``, ``ops.sent``): the platform has offered them, and the device fetches them when it
wakes (``south.pending_served``).

HTTP and HTTPS: no task per connection (the common path)
--------------------------------------------------------
With a pool to multiplex (``mux_pool``; the platform always passes one, Linux), an HTTP or HTTPS
lane has no workers at all: it is a ``MuxLane`` of the sender's ``MuxClient``
(``loadgen.http.muxclient``: a ``Mux`` with a queue and idle lines per origin, shared with the
north side). Issuing writes the operation on an idle line synchronously (one non-blocking
``send``, ``t_sent`` = that moment); the mux's one task reads every ready answer in a pass and
the client first writes the lane's next queued operation on the freed line (or lists it idle),
then calls back (``_answered``) to judge the answer, timed as it was read (the callback's
``now``); the closed model's next operation, issued from that judgement, finds
the line idle and goes out on it at once. A lane with no idle line queues the operation and,
while under ``max_connections``, the client opens one more line. Measured per operation: one
task step for many answers instead of one per answer, and no ``epoll_ctl`` per wait.

Each request's token is ``(operation, attempt)`` (``retries_left`` as it is sent: one less per
retry), so the answer or failure of an earlier attempt's exchange, ending after a retry re-sent
the operation, is told apart (``superseded``). The client writes a queued one only while it is
still waiting for exactly that attempt (``_muxed_wanted``), and drops one whose deadline passed
in the queue without a failure (``fail_expired=False``): the in-flight table's timer ends it,
never sent (``ops.timed_out_queued``).

Below saturation what an operation costs is mostly the wake-ups it causes (on this project's
VM a block-and-wake of the process costs ~35 µs of its CPU; an operation's own work ~20 µs).
So the open model's pacer wakes at most once per ``BATCH_WINDOW`` (on a timerfd ``Alarm``, as
trio's own sleeps are whole milliseconds when the loop is idle) and sends everything due; their
answers then come back together and share the mux's wake-ups too.

Every lane without a mux (not Linux, a caller's own transport) uses workers: a worker whose
lane is empty keeps its connection (a ``Line``, normally the pool's ``Held``) and waits on it
(``Line.answer``), listed in its lane's ``armed``; the issuer writes the next operation on it
synchronously (``Line.write_now``) when the line allows (``ready``: plain HTTP), else queues it
for the workers.

The transport is a parameter (``Transport``: ``(origin, target, body, *, deadline) -> answer``),
normally ``ConnectionPool.request``, with ``lines`` (normally ``ConnectionPool.hold``) making
the ``Line`` of each worker; without ``lines`` each worker gets a ``CallLine`` over the
transport (same issuing path, every write an ordinary call); tests pass an in-memory fake and run everything on a mock
clock. ``deadline`` is the operation's first deadline (``min(ack deadline, final deadline)``, on
the trio clock): the in-flight table's timer ends the operation exactly then, and the transport
gives up the exchange and closes its connection, so a target that never answers holds neither
a measurement nor a connection past the operation's ``timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence, Sized
from typing import Final, Protocol

import trio

from loadgen.errors import TransportError
from loadgen.http.client import ConnectionPool, Origin
from loadgen.http.muxclient import MuxClient, MuxLane
from loadgen.metrics.registry import Metrics
from loadgen.platform.alarm import Alarm
from loadgen.platform.config import MAX_QUEUED, Timeouts
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.platform.mix import DeviceChooser, OperationIds, OperationMix
from loadgen.platform.south import PendingQueues, misfits
from loadgen.protocol.lean import decode_response_lean

__all__ = [
    "BATCH_WINDOW",
    "LATE_SEND",
    "MAX_QUEUED",
    "Answer",
    "CallLine",
    "DeviceRoute",
    "Lane",
    "Line",
    "Sender",
    "Transport",
]

#: A send more than this after its intended time counts in ``ops.late_sends``. ``sleep_until``
#: alone wakes up to ~1.2 ms late (epoll's whole-millisecond timeout), which is not the
#: generator falling behind; 2 ms is.
LATE_SEND: Final = 0.002
#: The open model's pacer wakes at most once per this window and sends, at each wake-up, every
#: operation already due. Below saturation a wake-up per operation is most of its cost
#: (measured on this project's 2-core VM: a block-and-wake of the process costs ~35 µs of its
#: CPU, an operation's own work ~20 µs), so operations sent together, whose answers then also
#: arrive together, share them. The price is send lateness of up to the window, recorded as
#: lateness and counted in every latency (from the intended time) like any other.
BATCH_WINDOW: Final = 0.0005
#: Operations issued back to back before the issuing task yields to the workers.
BURST: Final = 64
#: The states of an operation re-sent by a retry and not yet ended: an answer to an earlier
#: attempt's exchange must not move them.
_RESENT: Final = frozenset({State.SENT, State.ACKED, State.PARTIAL})
_SENT: Final = State.SENT  # bound once (an enum member's look-up is ~60 ns: per operation here)


class Answer(Protocol):
    """What a transport returns: the HTTP status and body (``parser.Response`` fits)."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


class Transport(Protocol):
    """One exchange: ``(origin, target, body)`` given up at ``deadline`` (trio clock)."""

    def __call__(
        self, origin: Origin, target: bytes, body: bytes, /, *, deadline: float
    ) -> Awaitable[Answer]: ...


class Line(Protocol):
    """A connection one worker keeps between its exchanges (``loadgen.http.client.Held``)."""

    @property
    def ready(self) -> bool:
        """``write_now`` may be used (an idle connection is held)."""
        ...

    @property
    def unsent(self) -> object | None:
        """Set when ``write_now`` wrote only part of the request: run ``finish_write``."""
        ...

    def write_now(self, target: bytes, body: bytes, *, deadline: float) -> bool: ...

    async def finish_write(self) -> None: ...

    async def answer(self) -> Answer: ...

    async def request(self, target: bytes, body: bytes, *, deadline: float) -> Answer: ...

    def close(self) -> None: ...


class CallLine:
    """A ``Line`` over a plain ``Transport``: ``write_now`` hands the request to the worker
    waiting in ``answer``, which makes the call (in-memory transports, tests)."""

    __slots__ = ("_asked", "_event", "origin", "transport")

    unsent = None
    ready = True

    def __init__(self, transport: Transport, origin: Origin) -> None:
        self.transport = transport
        self.origin = origin
        self._event = trio.Event()
        self._asked: tuple[bytes, bytes, float] | None = None

    def __repr__(self) -> str:
        return f"<CallLine {self.origin} asked={self._asked is not None}>"

    def write_now(self, target: bytes, body: bytes, *, deadline: float) -> bool:
        self._asked = (target, body, deadline)
        self._event.set()
        return True

    async def finish_write(self) -> None:
        await trio.lowlevel.checkpoint()

    async def answer(self) -> Answer:
        await self._event.wait()
        self._event = trio.Event()
        asked, self._asked = self._asked, None
        assert asked is not None
        target, body, deadline = asked
        return await self.transport(self.origin, target, body, deadline=deadline)

    async def request(self, target: bytes, body: bytes, *, deadline: float) -> Answer:
        return await self.transport(self.origin, target, body, deadline=deadline)

    def close(self) -> None:
        pass


class _Armed:
    """A worker waiting on its idle line, and what the issuer wrote on it."""

    __slots__ = ("attempt", "line", "op")

    def __init__(self, line: Line) -> None:
        self.line = line
        self.op: Operation | None = None
        self.attempt = 0


class Lane:
    """The queue of one device address and the workers that serve it (or, with a
    ``MuxClient``, its ``MuxLane``: ``muxed``)."""

    __slots__ = (
        "armed",
        "backlog",
        "lot",
        "max_workers",
        "muxed",
        "origin",
        "queue",
        "workers",
    )

    def __init__(self, origin: Origin, max_workers: int) -> None:
        self.origin = origin
        self.queue: deque[Operation] = deque()
        self.lot = trio.lowlevel.ParkingLot()
        self.armed: list[_Armed] = []  # workers waiting on an idle connection, most recent last
        self.workers = 0
        self.max_workers = max_workers
        # Set by a sender with a ``MuxClient`` serving the origin: its lane holds the queue.
        self.muxed: MuxLane | None = None
        self.backlog: Sized = self.queue  # the operations waiting for a connection

    def __repr__(self) -> str:
        if self.muxed is not None:
            return f"<Lane {self.muxed!r}>"
        return (
            f"<Lane {self.origin} queued={len(self.queue)} workers={self.workers} "
            f"armed={len(self.armed)}>"
        )


class DeviceRoute:
    """Where one device's operations go: its lane and request target, or its pending queue."""

    __slots__ = ("device_id", "lane", "sleepy", "target")

    def __init__(self, device_id: str, lane: Lane, target: bytes, sleepy: bool) -> None:
        self.device_id = device_id
        self.lane = lane
        self.target = target
        self.sleepy = sleepy

    def __repr__(self) -> str:
        kind = "sleepy" if self.sleepy else str(self.lane.origin)
        return f"<DeviceRoute {self.device_id} {kind} {self.target.decode()}>"


async def pace(
    times: Iterable[float],
    t0: float,
    end: float,
    issue: Callable[[float, float], object],
    *,
    window: float = 0.0,
    sleep_until: Callable[[float], Awaitable[None]] = trio.sleep_until,
    full: Callable[[], bool] | None = None,
    refused: Callable[[int], None] | None = None,
) -> None:
    """The open model's clock: ``issue(intended, now)`` at ``t0 + t`` for each ``t``, then wait
    until ``end``. It sleeps until the next intended time, never relative to now, and issues
    everything already due at each wake-up (a late wake-up sends the backlog at once, each
    operation keeping its own intended time, ``now`` read afresh for each); a long backlog
    yields every ``BURST`` operations so the workers run (``issue`` returning False, a refusal,
    does not count: past its ceiling the pacer keeps to the schedule and refuses the excess).
    Two wake-ups are at least ``window`` apart: what falls due in between is sent together at
    the next one (see ``BATCH_WINDOW``). The platform's sender and the north side's job
    creation both use it.

    Past the ceiling most of the schedule is refused, and a refusal must cost far less than an
    operation or the generator spends its core refusing (issue 17: offered twice its ceiling, it
    sent 0.8 of it). With ``full`` (True when ``issue`` would surely refuse now: nothing can
    drain between two operations of one pass) the due operations are counted while it holds,
    without a call each, and handed to ``refused(n)`` before the pacer next issues or waits:
    every operation is still accounted once."""
    current_time = trio.lowlevel.current_clock().current_time
    burst = 0
    shed = 0
    woke = now = current_time()  # the start counts as a wake-up
    for t in times:
        intended = t0 + t
        if full is not None and intended <= now and full():
            shed += 1  # due, and refused for sure: counted in bulk below
            continue
        if shed:
            assert refused is not None
            refused(shed)
            shed = 0
        now = current_time()
        if intended > now:
            wake = woke + window
            await sleep_until(intended if intended >= wake else wake)
            now = woke = current_time()
            burst = 0
        elif burst >= BURST:
            # Behind schedule (or a large batch due at once): let the workers run.
            await trio.lowlevel.checkpoint()
            now = current_time()
            burst = 0
        if issue(intended, now) is not False:
            burst += 1  # (a refused operation made no work for the workers: no need to yield)
    if shed:
        assert refused is not None
        refused(shed)
    await trio.sleep_until(end)


class Sender:
    """Issues operations and runs their exchanges; workers are started in ``nursery``."""

    def __init__(
        self,
        *,
        table: InflightTable,
        metrics: Metrics,
        routes: Sequence[DeviceRoute],
        mix: OperationMix,
        timeouts: Sequence[Timeouts],
        chooser: DeviceChooser,
        transport: Transport,
        pending: PendingQueues,
        nursery: trio.Nursery,
        t0: float,
        wall0_ms: int,
        max_in_flight: int | None = None,
        ids: OperationIds | None = None,
        lines: Callable[[Origin], Line] | None = None,
        max_queued: int = MAX_QUEUED,
        mux_pool: ConnectionPool | None = None,
        window: float = BATCH_WINDOW,
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.counters = metrics.counters
        self.routes = routes
        self.mix = mix
        self.timeouts = tuple(timeouts)
        self.chooser = chooser
        self.transport = transport
        self.lines = lines
        self.pending = pending
        self.nursery = nursery
        self.t0 = t0
        self.wall0_ms = wall0_ms
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.ids = ids or OperationIds()
        self.issued = 0
        self._lateness = metrics.single("lateness")
        self._names = tuple(entry.name for entry in mix.entries)
        # Bound once: ``issue`` runs per operation.
        self._renders = tuple(template.render for template in mix.templates)
        self._choose_entry = mix.choose
        self._choose_device = chooser.choose
        self._next_id = self.ids.next
        self._now = trio.lowlevel.current_clock().current_time
        self.window = window
        # HTTP and HTTPS lanes over ``mux_pool``: run ``client.run`` (in ``nursery``) before issuing.
        # Their lines are bounded by the pool's ``max_connections`` (the runner gives the lanes'
        # ``max_workers`` the same value).
        self.client: MuxClient | None = None
        if mux_pool is not None:
            client = self.client = MuxClient(
                mux_pool, self._answered, self._muxed_failed,
                on_written=self._muxed_written, wanted=self._muxed_wanted, fail_expired=False,
            )  # fmt: skip
            self._put = client.put
            for route in routes:
                lane = route.lane
                muxed = client.lane(lane.origin)
                if muxed.muxed:
                    lane.muxed = muxed
                    lane.backlog = muxed.queue

    def __repr__(self) -> str:
        return (
            f"<Sender issued={self.issued} in_flight={len(self.table)} devices={len(self.routes)}>"
        )

    # --- issuing -----------------------------------------------------------------------------

    def issue(self, t_intended: float, now: float, device: int | None = None) -> bool:
        """Issue one operation intended at ``t_intended``; False if the in-flight cap refused it."""
        table = self.table
        if self.max_in_flight is not None and len(table.live) >= self.max_in_flight:
            self._refused(1)
            return False
        if device is None:
            device = self._choose_device()
        route = self.routes[device]
        if len(route.lane.backlog) >= self.max_queued and not route.sleepy:
            # Past the ceiling most of the schedule is refused here: the refusal is kept
            # cheap (no mix draw, which only an issued operation needs).
            self._refused(1)
            return False
        entry = self._choose_entry()
        op_id = self._next_id()
        body = self._renders[entry](op_id.encode(), self.wall0_ms + int((now - self.t0) * 1000))
        op = Operation(
            op_id, device, self._names[entry], t_intended, self.timeouts[entry], body, entry
        )
        deadline = table.open(op)
        self.issued += 1
        late = now - t_intended
        self._lateness.record(late)
        if late > LATE_SEND:
            self.counters["ops.late_sends"] += 1
        muxed = route.lane.muxed
        if muxed is None or route.sleepy:
            self.dispatch(op, now)
        elif self._put(muxed, route.target, body, deadline, (op, op.retries_left)):
            # (``dispatch``'s common case inlined, with the deadline just armed)
            table.written(op, now)
        return True

    def dispatch(self, op: Operation, now: float | None = None) -> None:
        """Write an opened operation on an armed worker's connection, else queue it on its lane
        (or put it in its sleepy device's pending queue). ``now``: the clock, if just read."""
        route = self.routes[op.device]  # (``issue`` has the muxed case written out: keep in step)
        if route.sleepy:
            # "sent" = offered to the device (from its intended time); served when it polls
            self.table.written(op, op.t_anchor)
            self.pending.put(route.device_id, op)
            return
        lane = route.lane
        muxed = lane.muxed
        if muxed is not None:
            if self._put(muxed, route.target, op.body, op.deadline, (op, op.retries_left)):
                self.table.written(op, self._now() if now is None else now)
            return
        armed = lane.armed
        while armed and not lane.queue:
            slot = armed.pop()
            line = slot.line
            if not line.write_now(route.target, op.body, deadline=op.deadline):
                continue  # its connection broke; that worker wakes and drops it
            slot.op = op
            slot.attempt = op.retries_left
            self.table.written(op, self._now() if now is None else now)
            if line.unsent is not None:
                self.nursery.start_soon(line.finish_write)
            return
        lane.queue.append(op)
        if lane.lot:
            lane.lot.unpark()
        elif lane.workers < lane.max_workers:
            lane.workers += 1
            self.nursery.start_soon(self._worker, lane)

    def resend(self, ops: Iterable[Operation]) -> None:
        """Retries whose delay has passed (from the timer task)."""
        for op in ops:
            self.counters["ops.resent"] += 1
            self.dispatch(op)

    async def run_open(self, times: Iterable[float], end: float) -> None:
        """Issue at ``t0 + t`` for each ``t`` of ``times``, then wait until ``end``."""
        alarm = Alarm()
        try:
            await pace(
                times, self.t0, end, self.issue, window=self.window,
                sleep_until=alarm.sleep_until, full=self._full(), refused=self._refused,
            )  # fmt: skip
        finally:
            alarm.close()

    def _full(self) -> Callable[[], bool] | None:
        """``pace``'s ``full``: True when ``issue`` would refuse whatever it drew (the in-flight
        cap is reached, or the one lane every device shares is full). None when no such test
        is cheap (several lanes, sleepy devices, neither bound)."""
        live, cap, bound = self.table.live, self.max_in_flight, self.max_queued
        lanes = {id(route.lane): route.lane for route in self.routes}
        queue = None
        if len(lanes) == 1 and not any(route.sleepy for route in self.routes):
            queue = next(iter(lanes.values())).backlog
        if cap is None and queue is None:
            return None
        if cap is None:
            assert queue is not None
            return lambda: len(queue) >= bound
        if queue is None:
            return lambda: len(live) >= cap
        return lambda: len(live) >= cap or len(queue) >= bound

    def _refused(self, count: int) -> None:
        """``count`` operations refused in bulk by the pacer (see ``pace``), counted by cause
        exactly as ``issue`` counts one."""
        counters = self.counters
        counters["ops.rejected"] += count
        cap = self.max_in_flight
        if cap is None or len(self.table.live) < cap:
            counters["ops.rejected.queue_full"] += count

    async def run_closed(self, slots: int, end: float, *, per_device: bool) -> None:
        """Keep ``slots`` operations in flight until ``end`` (one per device with
        ``per_device``); each is intended at the moment the previous one of its slot ended.

        The next operation is issued from the end of the previous one, synchronously (the
        table's ``on_end``), so the worker that finished finds it in its lane at once.
        """
        # The run's clock itself: what ``trio.current_time()`` reads, two calls fewer per use.
        current_time = trio.lowlevel.current_clock().current_time
        issue = self.issue
        refused: list[int | None] = []

        def next_one(op: Operation) -> None:
            now = current_time()
            if now < end and not issue(now, now, op.device if per_device else None):
                refused.append(op.device if per_device else None)

        self.table.on_end = next_one
        try:
            now = current_time()
            first = range(len(self.routes)) if per_device else [None] * slots
            refused.extend(device for device in first if not issue(now, now, device))
            # A slot refused by the in-flight cap is retried every millisecond.
            while current_time() < end:
                await trio.sleep_until(min(end, current_time() + 0.001) if refused else end)
                now = current_time()
                retry, refused[:] = refused[:], []
                if now < end:
                    refused.extend(device for device in retry if not issue(now, now, device))
        finally:
            self.table.on_end = None

    # --- the MuxClient's callbacks (HTTP and HTTPS); a token is ``(operation, attempt)`` ---------

    def _muxed_written(self, token: tuple[Operation, int], now: float) -> None:
        """A queued operation written on a freed line (``dispatch`` notes one written at
        once)."""
        self.table.written(token[0], now)

    def _muxed_wanted(self, token: tuple[Operation, int]) -> bool:
        """Still waiting to be written, as this attempt (else it timed out while it waited, or
        a later attempt's token follows it in the queue)."""
        op, attempt = token
        return op.state is _SENT and op.t_sent is None and op.retries_left == attempt

    def _muxed_failed(self, token: tuple[Operation, int], exc: TransportError) -> None:
        op, attempt = token
        self._failed(op, attempt, exc, self.routes[op.device].lane.origin)

    # --- exchanges ---------------------------------------------------------------------------

    async def _worker(self, lane: Lane) -> None:
        queue = lane.queue
        lot = lane.lot
        armed = lane.armed
        routes = self.routes
        table = self.table
        current_time = trio.lowlevel.current_clock().current_time  # as in run_closed
        sent_state = _SENT
        origin = lane.origin
        line = CallLine(self.transport, origin) if self.lines is None else self.lines(origin)
        try:
            while True:
                if queue:
                    op = queue.popleft()
                    if op.state is not sent_state or op.t_sent is not None:
                        continue  # timed out while it waited for a connection
                    now = current_time()
                    if now >= op.deadline:
                        # Its deadline passed while it waited (the timer task has not run yet):
                        # it times out there, never sent; writing it would only open an
                        # exchange to drop.
                        continue
                    attempt = op.retries_left  # one less per retry: names this attempt
                    table.written(op, now)
                    try:
                        answer = await line.request(
                            routes[op.device].target, op.body, deadline=op.deadline
                        )
                    except TransportError as exc:
                        self._failed(op, attempt, exc, origin)
                        continue
                elif line.ready:
                    # Wait on the idle connection; the issuer writes on it (see the header).
                    slot = _Armed(line)
                    armed.append(slot)
                    try:
                        answer = await line.answer()
                    except TransportError as exc:
                        if slot.op is not None:
                            self._failed(slot.op, slot.attempt, exc, origin)
                        continue  # else: the idle connection closed; the line dropped it
                    finally:
                        if slot.op is None and slot in armed:
                            armed.remove(slot)
                    written = slot.op
                    if written is None:
                        continue
                    op, attempt = written, slot.attempt
                else:
                    await lot.park()
                    continue
                self._answered((op, attempt), answer, current_time())
        finally:
            line.close()

    def _failed(self, op: Operation, attempt: int, exc: TransportError, origin: Origin) -> None:
        if op.retries_left != attempt and op.state in _RESENT:
            self.table.superseded(op)
            return
        cause = "transport." + exc.kind
        self.metrics.note(cause, f"{exc} ({origin})")
        self.table.error(op, self._now(), cause)

    def _answered(self, token: tuple[Operation, int], answer: Answer, now: float) -> None:
        """The answer to the exchange of ``token`` (``(operation, attempt)``), read at ``now``:
        the ``MuxClient``'s ``on_answer``, and the workers'."""
        op, attempt = token
        table = self.table
        if op.retries_left != attempt and op.state in _RESENT:
            # Re-sent while this exchange ran (an async final asked for a retry before its HTTP
            # answer was read): that answer belongs to the earlier attempt, not the one now live.
            table.superseded(op)
            return
        status = answer.status
        if not 200 <= status < 300:
            cause = f"http.status.{status}"
            self.metrics.note(cause, f"{status} {answer.body[:120]!r}")
            table.error(op, now, cause)
            return
        body = answer.body
        if not body:
            table.ack(op, now)
            if not op.retries_left:  # nothing re-sends it: its bytes need not wait for the final
                op.body = b""
            return
        response = decode_response_lean(body)
        if response is None:
            table.error(op, now, "http.malformed_body")
            return
        # Correlated by its connection, the answer is still judged against the operation (one
        # comparison each on the common path; ``misfits`` only when something is off).
        device = self.routes[op.device].device_id
        if (
            response.id != op.id
            or response.name != op.name
            or (response.device_id is not None and response.device_id != device)
        ) and table.misfit(
            op, misfits(op, device, response.id, response.name, response.device_id), now
        ):
            return  # strict: the operation has ended as an error
        code, steps = response.result_code, response.steps
        if code is None:  # a partial in the answer: acknowledged, more to come
            table.ack(op, now)
            table.partial(op, now, steps)
        else:
            table.final(op, now, code, steps, sync=True)
