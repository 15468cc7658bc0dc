"""The stand-in's jobs: each job's state and its operations' states (PROTOCOL.md §9), pure.

Theory of operation
-------------------
A job created on the north API (N1) becomes one operation per target device; the operations run
through the in-flight table like any other (``inflight.py`` times them out, retries them and
records them), and this book only follows them from the job's point of view: which are waiting,
which are running, which have finished and with what result, so that N2/N3 can answer and a
callback can be sent for each finished operation. Rules of this file:

1. Every change of a job's or an operation's state goes through ``_move``, which looks the
   ``(state, event)`` pair up in ``JOB_TRANSITIONS`` / ``OPERATION_TRANSITIONS``; a pair that is
   not there raises (a bug in the caller), except where the caller asks first (``can``: an N4
   state change the table does not allow is the client's mistake, answered 409).
2. A job is created active and starts ``IN_PROGRESS`` at once (the stand-in runs no schedule:
   ``IDLE``/``SCHEDULED``/``PAUSED``/``CANCELLING``/``CANCELLED`` exist in the enum because real
   OpenGate reports them, but no event of the stand-in leads there). It ends exactly once, when
   its last operation finishes: ``FINISHED`` when every result was ``SUCCESSFUL``, else
   ``FINISHED_WITH_ERRORS``.
3. An operation is ``WAITING_FOR_CONNECTION`` until its request is written to the device,
   ``IN_PROGRESS`` until it ends, then ``FINISHED`` with its result (the device's final
   ``resultCode``, or ``ERROR_TIMEOUT`` for a deadline, ``ERROR_PROCESSING`` for a transport
   error or a refused answer, ``CANCELLED`` for an N4 move to ``FINISHED``). An operation moved
   to ``FINISHED`` by N4 is detached: its in-flight twin still runs to its own end (and is
   counted there), which changes nothing here (``platform.north.detached_ends``).
4. Memory stays flat: a finished job is kept (for N2/N3) at most ``keep_seconds`` and at most
   ``keep_count`` finished jobs are kept, the oldest dropped first (``platform.north.evicted``).
   Live jobs are bounded by the operations in flight. A finished job can no longer change (no
   transition leaves ``FINISHED``), so it is kept as its answers, a ``FinishedJob`` of bytes
   and strings: a tuple of atoms, which the garbage collector stops tracking, so the thousands
   kept are never walked by a collection (they were most of what a full one walked, ~60 ms at
   2,500 jobs/s). Each operation's record is encoded once, when it finishes: that is its
   callback's body and its N3 entry.
5. Time is an argument (``now`` on the run's clock for the keep limit, ``now_ms`` wall-clock
   milliseconds for the JSON dates); nothing here reads a clock or imports trio.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Final, NamedTuple

from loadgen.protocol.north import (
    JobRequest,
    JobStatus,
    OperationRecord,
    encode_job_status,
    encode_operation_record,
)

__all__ = [
    "JOB_TRANSITIONS",
    "OPERATION_TRANSITIONS",
    "FinishedJob",
    "Job",
    "JobBook",
    "JobEvent",
    "JobOperation",
    "JobState",
    "OperationEvent",
    "OperationState",
]

_SUCCESSFUL: Final = "SUCCESSFUL"
CANCELLED: Final = "CANCELLED"


class JobState(enum.Enum):
    IDLE = "IDLE"
    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    FINISHED = "FINISHED"
    FINISHED_WITH_ERRORS = "FINISHED_WITH_ERRORS"


class JobEvent(enum.Enum):
    START = "start"  # created active: its operations are issued
    OPERATION_ENDED = "operation_ended"  # one finished, others still open
    ALL_SUCCEEDED = "all_succeeded"  # the last one finished; every result SUCCESSFUL
    SOME_FAILED = "some_failed"  # the last one finished; at least one was not


class OperationState(enum.Enum):
    WAITING_FOR_CONNECTION = "WAITING_FOR_CONNECTION"
    IN_PROGRESS = "IN_PROGRESS"
    FINISHED = "FINISHED"


class OperationEvent(enum.Enum):
    SENT = "sent"  # the request was written to the device
    ENDED = "ended"  # the in-flight table ended it
    SET_IN_PROGRESS = "set_in_progress"  # N4 ?state=IN_PROGRESS
    SET_FINISHED = "set_finished"  # N4 ?state=FINISHED (cancels it, result CANCELLED)


J, JE = JobState, JobEvent
JOB_TRANSITIONS: Final[dict[tuple[JobState, JobEvent], JobState]] = {
    (J.IDLE, JE.START): J.IN_PROGRESS,
    (J.IN_PROGRESS, JE.OPERATION_ENDED): J.IN_PROGRESS,
    (J.IN_PROGRESS, JE.ALL_SUCCEEDED): J.FINISHED,
    (J.IN_PROGRESS, JE.SOME_FAILED): J.FINISHED_WITH_ERRORS,
}
OS, OE = OperationState, OperationEvent
OPERATION_TRANSITIONS: Final[dict[tuple[OperationState, OperationEvent], OperationState]] = {
    (OS.WAITING_FOR_CONNECTION, OE.SENT): OS.IN_PROGRESS,
    (OS.WAITING_FOR_CONNECTION, OE.ENDED): OS.FINISHED,  # timed out before it could be written
    (OS.WAITING_FOR_CONNECTION, OE.SET_IN_PROGRESS): OS.IN_PROGRESS,
    (OS.WAITING_FOR_CONNECTION, OE.SET_FINISHED): OS.FINISHED,
    (OS.IN_PROGRESS, OE.SENT): OS.IN_PROGRESS,  # a retry's re-send
    (OS.IN_PROGRESS, OE.ENDED): OS.FINISHED,
    (OS.IN_PROGRESS, OE.SET_IN_PROGRESS): OS.IN_PROGRESS,
    (OS.IN_PROGRESS, OE.SET_FINISHED): OS.FINISHED,
}
del J, JE, OS, OE


def _move(thing: Job | JobOperation, event: Any, table: Mapping[Any, Any]) -> Any:
    state = table.get((thing.state, event))
    if state is None:
        raise RuntimeError(f"illegal {event.value} for {thing!r}")
    thing.state = state
    return state


class JobOperation:
    """One operation of a job (one target device)."""

    __slots__ = (
        "attempts",
        "entity",
        "finished_ms",
        "id",
        "job",
        "result",
        "started_ms",
        "state",
        "steps",
        "wire",
    )

    def __init__(self, job: Job, op_id: str, entity: str) -> None:
        self.job = job
        self.id = op_id
        self.entity = entity
        self.state = OperationState.WAITING_FOR_CONNECTION
        self.result: str | None = None
        self.steps: Sequence[Any] = ()
        self.started_ms: int | None = None
        self.finished_ms: int | None = None
        self.attempts = 0
        self.wire = b""  # the record's JSON, set once the operation is FINISHED

    def __repr__(self) -> str:
        return f"<JobOperation {self.id} {self.entity} {self.state.value} {self.result}>"

    def record(self) -> OperationRecord:
        job = self.job
        return OperationRecord(
            job_id=job.id,
            entity_id=self.entity,
            operation_id=self.id,
            name=job.request.name,
            status=self.state.value,
            parameters=job.request.parameters,
            result=self.result,
            attempts_total=job.request.operation_parameters.retries + 1,
            attempts_current=self.attempts,
            activated_ms=job.created_ms,
            started_ms=self.started_ms,
            finished_ms=self.finished_ms,
            steps=self.steps,
        )


class Job:
    """One job: its request, its operations, how many are still open, how many failed."""

    __slots__ = ("created_ms", "ended_at", "failed", "id", "open", "operations", "request", "state")

    def __init__(self, job_id: str, request: JobRequest, created_ms: int) -> None:
        self.id = job_id
        self.request = request
        self.created_ms = created_ms
        self.state = JobState.IDLE
        self.operations: list[JobOperation] = []
        self.open = 0
        self.failed = 0
        self.ended_at: float | None = None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.state.value} open={self.open}/{len(self.operations)}>"

    def status(self) -> JobStatus:
        total = len(self.operations)
        return JobStatus(
            id=self.id,
            status=self.state.value,
            name=self.request.name,
            total=total,
            finished=total - self.open,
            failed=self.failed,
        )


class FinishedJob(NamedTuple):
    """A finished job as N2 and N3 answer it (rule 4). The book keeps it as a plain tuple
    (the collector untracks exact tuples of atoms, not a NamedTuple's instances) and wraps it
    back when asked."""

    id: str
    ended_at: float
    status: bytes  # N2's answer
    records: tuple[bytes, ...]  # N3's records (each operation's JSON), in operation order
    operation_ids: tuple[str, ...]

    def page(self, start: int, size: int) -> bytes:
        """N3's answer for records ``start`` (1-based) to ``start + size - 1``: the bytes
        ``encode_operations_page`` gives for the same records."""
        return b'{"operations":[' + b",".join(self.records[start - 1 : start - 1 + size]) + b"]}"


class JobBook:
    """Live jobs, recently finished ones (bounded), and the operation -> job index.

    ``on_finished(job_operation)`` is called for each operation as it finishes (the shell
    sends the job's callback from there).
    """

    __slots__ = (
        "_by_operation",
        "counters",
        "finished",
        "keep_count",
        "keep_seconds",
        "live",
        "on_finished",
    )

    def __init__(
        self,
        counters: MutableMapping[str, int],
        *,
        keep_count: int = 10_000,
        keep_seconds: float = 60.0,
        on_finished: Callable[[JobOperation], None] | None = None,
    ) -> None:
        self.counters = counters
        self.keep_count = keep_count
        self.keep_seconds = keep_seconds
        self.on_finished = on_finished
        self.live: dict[str, Job] = {}
        # job id -> tuple(FinishedJob), oldest first
        self.finished: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._by_operation: dict[str, JobOperation] = {}

    def __repr__(self) -> str:
        return (
            f"<JobBook live={len(self.live)} finished={len(self.finished)} "
            f"operations={len(self._by_operation)}>"
        )

    def __len__(self) -> int:
        return len(self.live)

    def get(self, job_id: str) -> Job | FinishedJob | None:
        job = self.live.get(job_id)
        if job is not None:
            return job
        kept = self.finished.get(job_id)
        return None if kept is None else FinishedJob._make(kept)

    def operation(self, op_id: str) -> JobOperation | None:
        return self._by_operation.get(op_id)

    def create(
        self, job_id: str, request: JobRequest, op_ids: Sequence[str], now: float, now_ms: int
    ) -> Job:
        """A new job whose operation ``i`` (id ``op_ids[i]``) targets ``request.entities[i]``."""
        self.expire(now)
        job = Job(job_id, request, now_ms)
        for op_id, entity in zip(op_ids, request.entities, strict=True):
            op = JobOperation(job, op_id, entity)
            job.operations.append(op)
            self._by_operation[op_id] = op
        job.open = len(job.operations)
        _move(job, JobEvent.START, JOB_TRANSITIONS)
        self.live[job_id] = job
        self.counters["platform.north.jobs_created"] += 1
        return job

    def sent(self, op_id: str, now_ms: int) -> None:
        """The request of ``op_id`` was written to its device (an attempt)."""
        op = self._by_operation.get(op_id)
        if op is None or op.state is OperationState.FINISHED:
            return
        _move(op, OperationEvent.SENT, OPERATION_TRANSITIONS)
        op.attempts += 1
        if op.started_ms is None:
            op.started_ms = now_ms

    def ended(
        self, op_id: str, result: str, steps: Sequence[Any], now: float, now_ms: int
    ) -> JobOperation | None:
        """The in-flight table ended ``op_id`` with ``result``; None if it is not a job's (or
        was already finished by N4)."""
        op = self._by_operation.pop(op_id, None)
        if op is None:
            return None
        if op.state is OperationState.FINISHED:
            self.counters["platform.north.detached_ends"] += 1
            return None
        self._finish(op, OperationEvent.ENDED, result, steps, now, now_ms)
        return op

    def set_state(self, job_id: str, op_id: str, state: str, now: float, now_ms: int) -> str:
        """N4: ``ok``, ``no_job``, ``no_operation`` or ``illegal`` (the table forbids it)."""
        job = self.get(job_id)
        if job is None:
            return "no_job"
        if isinstance(job, FinishedJob):  # every operation FINISHED: no move leaves it
            return "illegal" if op_id in job.operation_ids else "no_operation"
        op = next((o for o in job.operations if o.id == op_id), None)
        if op is None:
            return "no_operation"
        event = {
            "IN_PROGRESS": OperationEvent.SET_IN_PROGRESS,
            "FINISHED": OperationEvent.SET_FINISHED,
        }.get(state)
        if event is None or (op.state, event) not in OPERATION_TRANSITIONS:
            return "illegal"
        if event is OperationEvent.SET_FINISHED:
            self.counters["platform.north.operations_cancelled"] += 1
            self._finish(op, event, CANCELLED, op.steps, now, now_ms)  # stays indexed: rule 3
            return "ok"
        _move(op, event, OPERATION_TRANSITIONS)
        if op.started_ms is None:
            op.started_ms = now_ms
        return "ok"

    def _finish(
        self,
        op: JobOperation,
        event: OperationEvent,
        result: str,
        steps: Sequence[Any],
        now: float,
        now_ms: int,
    ) -> None:
        _move(op, event, OPERATION_TRANSITIONS)
        op.result = result
        op.steps = tuple(steps)
        op.finished_ms = now_ms
        op.wire = encode_operation_record(op.record())
        job = op.job
        job.open -= 1
        if result != _SUCCESSFUL:
            job.failed += 1
        if job.open:
            _move(job, JobEvent.OPERATION_ENDED, JOB_TRANSITIONS)
        else:
            last = JobEvent.SOME_FAILED if job.failed else JobEvent.ALL_SUCCEEDED
            state = _move(job, last, JOB_TRANSITIONS)
            self.counters[f"platform.north.jobs_{state.value.lower()}"] += 1
            del self.live[job.id]
            for other in job.operations:  # N4-finished twins may still be indexed
                self._by_operation.pop(other.id, None)
            job.ended_at = now
            self.finished[job.id] = (
                job.id,
                now,
                encode_job_status(job.status(), created_ms=job.created_ms),
                tuple(o.wire for o in job.operations),
                tuple(o.id for o in job.operations),
            )
            while len(self.finished) > self.keep_count:
                self.finished.popitem(last=False)
                self.counters["platform.north.evicted"] += 1
        if self.on_finished is not None:
            self.on_finished(op)

    def expire(self, now: float) -> int:
        """Drop finished jobs older than ``keep_seconds``; how many went."""
        dropped = 0
        horizon = now - self.keep_seconds
        finished = self.finished
        while finished:
            if next(iter(finished.values()))[1] > horizon:  # FinishedJob.ended_at
                break
            finished.popitem(last=False)
            dropped += 1
        if dropped:
            self.counters["platform.north.evicted"] += dropped
        return dropped
