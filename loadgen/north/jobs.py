"""The application side's jobs: correlation and the four phases of each job (pure).

Theory of operation
-------------------
The north side creates a job (N1) at an intended time and then watches it cross three hops:
the platform dispatches its operation to a device (``dispatch``), the device writes its final
answer (``device_done``), the platform closes the operation and tells the application, by the
job's callback or by a poll of N2 (``closed``). The N1 answer itself is ``job_accepted``. Every
phase is recorded from the job's *intended* creation time, with its service-time twin from the
moment N1 was actually written, exactly once per job.

Correlation. The operation id a device sees is chosen by the platform, so the job it belongs
to is learned where both meet: the virtual devices run in this process, and a job holds its
target devices from its creation until its end (one job in flight per device, ``correlation =
"device"``). The first request a held device receives is that job's operation: from then on its
id is known (``by_op``) and the device's answer and the platform's callback find the job by it;
a callback also names the job id, which finds the job once N1 has answered. With ``K`` targets
the job is dispatched when all ``K`` devices received their request, done when all ``K``
answered, closed when all ``K`` operations were reported finished.

Rules of this file:

1. Every change of state goes through ``_move`` and ``TRANSITIONS``; a pair that is not there is
   a bug in the caller and raises. The hops may be seen out of order (a fast platform
   dispatches before N1's answer is read; a callback may be read before it), so ``ACCEPT`` is
   legal in every live state and records ``job_accepted`` without moving the job back.
2. A job ends exactly once: ``CLOSED``, ``TIMED_OUT`` or ``ERROR``, and then ``jobs.created ==
   jobs.closed + jobs.timed_out + jobs.errors`` once nothing is live (``drain``).
3. Each job has one pending deadline: ``dispatch_deadline`` (``t_intended +
   dispatch_timeout``) until it is dispatched, then its close deadline. A job that reaches
   one ends ``TIMED_OUT`` and its missing phases up to the one the deadline guarded, and
   ``closed``, are recorded *at the deadline* (``deadline - t_intended``), never dropped; a
   missing N1 answer counts as ``job_accepted`` at the deadline too. A fact that arrives after
   the job ended changes only a counter (``jobs.late.<hop>``).
4. A device is free again when its job ends, except after a timeout or an N1 transport error
   (the platform may still dispatch that job): then it stays held until the job's close
   deadline, so a late request is not taken for the next job's (``quarantine``).
5. Time is an argument; nothing here reads a clock or imports trio.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from loadgen.deadline_heap import DeadlineHeap
from loadgen.metrics.registry import Metrics
from loadgen.platform.inflight import EndedIds
from loadgen.protocol.north import JobStatus, OperationRecord

__all__ = [
    "HOP_CLOSE",
    "HOP_DEVICE",
    "PHASES",
    "TRANSITIONS",
    "Event",
    "JobTracker",
    "NorthJob",
    "State",
]

#: The phases, in the order of the hops (the summary keys ``latency_ms.<phase>``).
PHASES: Final = ("job_accepted", "dispatch", "device_done", "closed")
#: How long after its close deadline (or its end, if later) an ended job's ids are remembered,
#: so that a fact arriving after the job ended is told apart (``jobs.late.<hop>``) from one
#: about a job nobody created (``unknown``). A time window, not a count: what is kept is the
#: ids of the last ``rate x (close_timeout + REMEMBER_ENDED_S)``, whatever the run's length.
REMEMBER_ENDED_S: Final = 10.0
HOP_DEVICE: Final = "hop.device_work"
HOP_CLOSE: Final = "hop.platform_close"
_SUCCESSFUL: Final = "SUCCESSFUL"


class State(enum.Enum):
    __hash__ = object.__hash__  # identity hashing, as in platform/inflight.py

    SENT = "sent"  # N1 issued; no hop seen yet
    ACCEPTED = "accepted"  # N1 answered 2xx with a job id
    DISPATCHED = "dispatched"  # every target device received its operation request
    DEVICE_DONE = "device_done"  # every target device wrote its final answer
    CLOSED = "closed"  # the platform reported every operation finished
    TIMED_OUT = "timed_out"  # a deadline passed first
    ERROR = "error"  # N1 failed (an error status or a transport error)


class Event(enum.Enum):
    __hash__ = object.__hash__

    ACCEPT = "accept"
    REFUSE = "refuse"
    DISPATCH = "dispatch"
    DEVICE_DONE = "device_done"
    CLOSE = "close"
    DISPATCH_DEADLINE = "dispatch_deadline"
    CLOSE_DEADLINE = "close_deadline"


S, E = State, Event
TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (S.SENT, E.ACCEPT): S.ACCEPTED,
    (S.SENT, E.REFUSE): S.ERROR,
    (S.SENT, E.DISPATCH): S.DISPATCHED,  # dispatched before N1's answer was read
    (S.SENT, E.CLOSE): S.CLOSED,  # a poll or callback beat N1's answer (or nothing was seen)
    (S.SENT, E.DISPATCH_DEADLINE): S.TIMED_OUT,
    (S.SENT, E.CLOSE_DEADLINE): S.TIMED_OUT,
    (S.ACCEPTED, E.DISPATCH): S.DISPATCHED,
    (S.ACCEPTED, E.CLOSE): S.CLOSED,  # the platform ended it without our device seeing it
    (S.ACCEPTED, E.DISPATCH_DEADLINE): S.TIMED_OUT,
    (S.ACCEPTED, E.CLOSE_DEADLINE): S.TIMED_OUT,
    (S.DISPATCHED, E.ACCEPT): S.DISPATCHED,
    (S.DISPATCHED, E.REFUSE): S.ERROR,  # dispatched, yet N1 failed for the application
    (S.DISPATCHED, E.DEVICE_DONE): S.DEVICE_DONE,
    (S.DISPATCHED, E.CLOSE): S.CLOSED,
    (S.DISPATCHED, E.CLOSE_DEADLINE): S.TIMED_OUT,
    (S.DEVICE_DONE, E.ACCEPT): S.DEVICE_DONE,
    (S.DEVICE_DONE, E.REFUSE): S.ERROR,
    (S.DEVICE_DONE, E.CLOSE): S.CLOSED,
    (S.DEVICE_DONE, E.CLOSE_DEADLINE): S.TIMED_OUT,
}
del S, E
TERMINAL: Final = frozenset({State.CLOSED, State.TIMED_OUT, State.ERROR})
_END_COUNTER: Final = {
    State.CLOSED: "jobs.closed",
    State.TIMED_OUT: "jobs.timed_out",
    State.ERROR: "jobs.errors",
}


class NorthJob:
    """One job from the application's side."""

    __slots__ = (
        "close_deadline",
        "closed_ops",
        "devices",
        "dispatch_deadline",
        "done_ops",
        "failed",
        "job_id",
        "ops",
        "state",
        "t_accepted",
        "t_device_done",
        "t_dispatch",
        "t_intended",
        "t_sent",
        "timer",
        "token",
    )

    def __init__(
        self,
        token: int,
        devices: tuple[str, ...],
        t_intended: float,
        dispatch_deadline: float,
        close_deadline: float,
    ) -> None:
        self.token = token
        self.devices = devices
        self.t_intended = t_intended
        self.dispatch_deadline = dispatch_deadline
        self.close_deadline = close_deadline
        self.t_sent: float | None = None
        self.t_accepted: float | None = None
        self.t_dispatch: float | None = None
        self.t_device_done: float | None = None
        self.job_id: str | None = None
        self.state = State.SENT
        self.ops: dict[str, str] = {}  # operation id -> device id, as each is dispatched
        self.done_ops: set[str] = set()
        self.closed_ops: set[str] = set()
        self.failed = 0
        self.timer = -1  # the seq of its one valid entry in the tracker's DeadlineHeap (-1: none)

    def __repr__(self) -> str:
        return (
            f"<NorthJob #{self.token} {self.job_id} {self.state.value} devices={self.devices} "
            f"intended={self.t_intended:.6f}>"
        )

    @property
    def deadline(self) -> float:
        if self.state is State.SENT or self.state is State.ACCEPTED:
            return min(self.dispatch_deadline, self.close_deadline)
        if self.state in TERMINAL:
            return float("inf")
        return self.close_deadline


def _move(job: NorthJob, event: Event) -> State:
    state = TRANSITIONS.get((job.state, event))
    if state is None:
        raise RuntimeError(f"illegal {event.value} for {job!r}")
    job.state = state
    return state


class JobTracker:
    """Live jobs, the devices they hold, their deadlines, and the recording of every hop.

    It is also the device fleet's observer (``received`` / ``answered``, called by the engine
    as a request arrives and as its final answer is written).
    """

    def __init__(
        self,
        metrics: Metrics,
        devices: Sequence[str],
        *,
        dispatch_timeout: float,
        remember_s: float = REMEMBER_ENDED_S,
    ) -> None:
        if not devices:
            raise ValueError("the north side needs at least one target device")
        self.metrics = metrics
        self.counters = metrics.counters
        self.dispatch_timeout = dispatch_timeout
        self.phases = {name: metrics.phase(name) for name in PHASES}
        # The hops as gaps of the same job (a difference of two percentiles is not a
        # percentile of the differences): device work = device_done - dispatch, platform close
        # = closed - device_done. The platform's dispatch hop is the ``dispatch`` phase itself.
        self.hop_device = metrics.single(HOP_DEVICE)
        self.hop_close = metrics.single(HOP_CLOSE)
        self.free: deque[str] = deque(dict.fromkeys(devices))
        self.device_count = len(self.free)
        self.live: dict[int, NorthJob] = {}
        self.by_device: dict[str, NorthJob] = {}
        self.by_op: dict[str, NorthJob] = {}
        self.by_job_id: dict[str, NorthJob] = {}
        self.peak = 0
        self._ended = EndedIds(State)
        self._remember_s = remember_s
        self._timers: DeadlineHeap[NorthJob] = DeadlineHeap()
        self._quarantine: list[tuple[float, int, str, NorthJob]] = []
        self._seq = itertools.count()
        self._tokens = itertools.count(1)
        # called when the last live job ends (the shell's drain waits for it)
        self.on_empty: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<JobTracker live={len(self.live)} free={len(self.free)}/{self.device_count} "
            f"quarantined={len(self._quarantine)}>"
        )

    def __len__(self) -> int:
        return len(self.live)

    # --- devices -----------------------------------------------------------------------------

    def take_devices(self, count: int) -> tuple[str, ...] | None:
        """``count`` free devices (held from now on), or None (counted) when fewer are free."""
        free = self.free
        if len(free) < count:
            self.counters["jobs.rejected"] += 1
            self.counters["jobs.rejected.no_free_device"] += 1
            return None
        return tuple(free.popleft() for _ in range(count))

    def _release(self, job: NorthJob, now: float, *, quarantine: bool) -> None:
        until = job.close_deadline
        for device in job.devices:
            if quarantine and until > now:
                heapq.heappush(self._quarantine, (until, next(self._seq), device, job))
                self.counters["jobs.quarantined_devices"] += 1
            else:
                if self.by_device.get(device) is job:
                    del self.by_device[device]
                self.free.append(device)

    # --- the lifecycle -------------------------------------------------------------------------

    def open(self, devices: tuple[str, ...], t_intended: float, close_timeout: float) -> NorthJob:
        """A job about to be created (N1 is queued now) for the held ``devices``."""
        job = NorthJob(
            next(self._tokens),
            devices,
            t_intended,
            t_intended + self.dispatch_timeout,
            t_intended + close_timeout,
        )
        self.live[job.token] = job
        if len(self.live) > self.peak:
            self.peak = len(self.live)
        for device in devices:
            self.by_device[device] = job
        self.counters["jobs.created"] += 1
        self._timers.push(job.deadline, job)
        return job

    def sending(self, job: NorthJob, now: float) -> None:
        """N1 is being written now (the service-time anchor)."""
        if job.t_sent is None:
            job.t_sent = now

    def accepted(self, job: NorthJob, job_id: str, now: float) -> None:
        """N1 answered 2xx and ``job_id`` was read from it."""
        self.counters["jobs.accepted"] += 1
        job.job_id = job_id
        if job.state in TERMINAL:
            self._remember_id(job_id, job, now)
            if job.t_accepted is None:
                job.t_accepted = now
                self._record("job_accepted", job, now)
            else:
                self.counters["jobs.late.job_accepted"] += 1
            return
        self.by_job_id[job_id] = job
        if job.t_accepted is None:
            job.t_accepted = now
            self._record("job_accepted", job, now)
        _move(job, Event.ACCEPT)

    def refused(self, job: NorthJob, now: float, cause: str, *, maybe_created: bool) -> None:
        """N1 failed: ``cause`` names the counter (``north.status.<n>``, ``north.transport.<k>``).
        ``maybe_created``: the platform may have created it all the same (a transport error)."""
        self.counters[cause] += 1
        if job.state in TERMINAL:
            self.counters["jobs.late.refused"] += 1
            return
        if job.t_accepted is None:
            job.t_accepted = now
            self._record("job_accepted", job, now)
        _move(job, Event.REFUSE)
        self._end(job, now, quarantine=maybe_created)

    def received(self, device_id: str, op_id: str, now: float) -> None:
        """A device of this process received an operation request (the engine's call)."""
        job = self.by_device.get(device_id)
        if job is None:
            self.counters["north.correlation.unmatched"] += 1
            return
        if op_id in job.ops:
            self.counters["north.correlation.resent"] += 1  # a retry of the same operation
            return
        if job.state in TERMINAL or len(job.ops) >= len(job.devices):
            self.counters["jobs.late.dispatch"] += 1
            return
        job.ops[op_id] = device_id
        self.by_op[op_id] = job
        if len(job.ops) == len(job.devices):
            job.t_dispatch = now
            self._record("dispatch", job, now)
            _move(job, Event.DISPATCH)
            self._timers.push(job.deadline, job)

    def answered(self, device_id: str, op_id: str, now: float) -> None:
        """A device of this process wrote its final answer for ``op_id``."""
        job = self.by_op.get(op_id)
        if job is None:
            if self._was_ended(op_id, now):
                self.counters["jobs.late.device_done"] += 1
            else:
                self.counters["north.correlation.unmatched_answers"] += 1
            return
        job.done_ops.add(op_id)
        if len(job.done_ops) == len(job.devices) and job.state is State.DISPATCHED:
            job.t_device_done = now
            self._record("device_done", job, now)
            if job.t_dispatch is not None:
                self.hop_device.record(now - job.t_dispatch)
            _move(job, Event.DEVICE_DONE)

    def notified(self, record: OperationRecord, now: float) -> str:
        """A callback's record: ``ok``, ``not_finished``, ``late`` or ``unknown`` (counted
        ``north.callback.<outcome>``)."""
        job = self.by_op.get(record.operation_id) or self.by_job_id.get(record.job_id)
        if job is None:
            ended = self._was_ended(record.operation_id, now) or self._was_ended(record.job_id, now)
            outcome = "late" if ended else "unknown"
        elif not record.finished:
            outcome = "not_finished"
        else:
            outcome = "ok"
            if record.operation_id not in job.closed_ops:
                job.closed_ops.add(record.operation_id)
                if record.result != _SUCCESSFUL:
                    job.failed += 1
                self.counters[f"jobs.result.{record.result or 'NONE'}"] += 1
                if len(job.closed_ops) >= len(job.devices):
                    self._close(job, now)
            else:
                self.counters["north.callback.duplicate"] += 1
        self.counters[f"north.callback.{outcome}"] += 1
        return outcome

    def polled(self, job: NorthJob, status: JobStatus, now: float) -> bool:
        """An N2 answer for ``job``; True when it ended the job."""
        self.counters["north.poll.answers"] += 1
        if job.state in TERMINAL or not status.ended:
            return False
        job.failed = max(job.failed, status.failed, status.status != "FINISHED")
        self.counters[f"jobs.status.{status.status}"] += 1
        self._close(job, now)
        return True

    def _close(self, job: NorthJob, now: float) -> None:
        _move(job, Event.CLOSE)
        self._record("closed", job, now)
        if job.t_device_done is not None:
            self.hop_close.record(now - job.t_device_done)
        self.counters["jobs.failed" if job.failed else "jobs.succeeded"] += 1
        self._end(job, now, quarantine=False)

    # --- deadlines -----------------------------------------------------------------------------

    @property
    def next_deadline(self) -> float:
        """The earliest pending deadline or quarantine release (inf when none)."""
        first = self._timers.next_due
        if self._quarantine:
            first = min(first, self._quarantine[0][0])
        return first

    def expire(self, now: float) -> int:
        """Fire every deadline due at ``now`` and free the devices whose quarantine is over;
        returns how many jobs timed out."""
        fired = 0
        for deadline, job in self._timers.pop_due(now):
            self._time_out(job, deadline)
            fired += 1
        quarantine = self._quarantine
        while quarantine and quarantine[0][0] <= now:
            _, _, device, job = heapq.heappop(quarantine)
            if self.by_device.get(device) is job:
                del self.by_device[device]
            self.free.append(device)
        return fired

    def drain(self) -> int:
        """End every live job as timed out at its own deadline (the run is over); each is
        also counted in ``jobs.cut_by_grace``."""
        remaining = list(self.live.values())
        for job in remaining:
            self._time_out(job, job.deadline, cut=True)
        return len(remaining)

    def _time_out(self, job: NorthJob, deadline: float, *, cut: bool = False) -> None:
        before = job.state
        if before is State.SENT or before is State.ACCEPTED:
            event = (
                Event.DISPATCH_DEADLINE
                if job.dispatch_deadline <= job.close_deadline
                else Event.CLOSE_DEADLINE
            )
        else:
            event = Event.CLOSE_DEADLINE
        _move(job, event)
        if job.t_accepted is None:
            job.t_accepted = deadline
            self._record("job_accepted", job, deadline)
        if job.t_dispatch is None and event is Event.DISPATCH_DEADLINE:
            self._record("dispatch", job, deadline)
        self._record("closed", job, deadline)
        self.counters[f"jobs.timed_out.{event.value.removesuffix('_deadline')}"] += 1
        if cut:
            self.counters["jobs.cut_by_grace"] += 1
        self._end(job, deadline, quarantine=True)

    # --- recording and ends ----------------------------------------------------------------------

    def _record(self, phase: str, job: NorthJob, now: float) -> None:
        sent = job.t_sent
        self.phases[phase].record(
            now - job.t_intended, now - (sent if sent is not None else job.t_intended)
        )

    def _end(self, job: NorthJob, now: float, *, quarantine: bool) -> None:
        self._timers.cancel(job)
        del self.live[job.token]
        self.counters[_END_COUNTER[job.state]] += 1
        for op_id in job.ops:
            if self.by_op.get(op_id) is job:
                del self.by_op[op_id]
            self._remember_id(op_id, job, now)
        if job.job_id is not None:
            self.by_job_id.pop(job.job_id, None)
            self._remember_id(job.job_id, job, now)
        self._release(job, now, quarantine=quarantine)
        if not self.live and self.on_empty is not None:
            self.on_empty()

    def _remember_id(self, key: str, job: NorthJob, now: float) -> None:
        expires = max(job.close_deadline, now) + self._remember_s
        self._ended.add(key, job.state, expires, now)

    def _was_ended(self, key: str, now: float) -> bool:
        return self._ended.get(key, now) is not None

    @property
    def remembered(self) -> int:
        """Ended ids remembered now (bounded by the rate and the window, not the run's length)."""
        return len(self._ended)
