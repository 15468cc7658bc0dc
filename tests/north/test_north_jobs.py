"""The application side's job tracker (pure): correlation by device, the four phases from the
intended creation time, deadlines recorded at the deadline, every job accounted once."""

from __future__ import annotations

import pytest

from loadgen.metrics.registry import Metrics
from loadgen.north.jobs import PHASES, TRANSITIONS, JobTracker, State
from loadgen.protocol.north import JobStatus, OperationRecord

MS = 1e-3


def _tracker(devices: int = 3, dispatch_timeout: float = 1.0) -> tuple[JobTracker, Metrics]:
    metrics = Metrics()
    ids = [f"dev-{i}" for i in range(devices)]
    return JobTracker(metrics, ids, dispatch_timeout=dispatch_timeout), metrics


class _Ms(float):
    """A recorded value in ms, equal to the exact one within the histogram's 3 digits."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (int, float)) and abs(self - other) <= max(1e-3 * other, 1e-3)

    __hash__ = float.__hash__


def _values(metrics: Metrics, phase: str, twin: str = "intended") -> list[float]:
    recorder = getattr(metrics.phase(phase), twin)
    hist = recorder.merged()
    return [
        _Ms(hist.get_lowest_equivalent_value(item.value_iterated_to) / 1e3)  # µs -> ms
        for item in hist.get_recorded_iterator()
        for _ in range(item.count_at_value_iterated_to)
    ]


def _finished(job_id: str, op_id: str, result: str = "SUCCESSFUL") -> OperationRecord:
    return OperationRecord(
        job_id=job_id, entity_id="", operation_id=op_id, name="X", status="FINISHED", result=result
    )


def _accounted(metrics: Metrics) -> bool:
    c = metrics.counters
    return c["jobs.created"] == c["jobs.closed"] + c["jobs.timed_out"] + c["jobs.errors"]


def test_every_transition_targets_a_state() -> None:
    assert set(TRANSITIONS.values()) <= set(State)


def test_the_four_phases_from_the_intended_time_with_service_twins() -> None:
    tracker, metrics = _tracker()
    devices = tracker.take_devices(1)
    assert devices == ("dev-0",)
    job = tracker.open(devices, t_intended=10.0, close_timeout=5.0)
    tracker.sending(job, 10.002)  # written 2 ms late
    tracker.accepted(job, "job-1", 10.005)
    tracker.received("dev-0", "op-1", 10.007)
    tracker.answered("dev-0", "op-1", 10.017)
    assert tracker.notified(_finished("job-1", "op-1"), 10.020) == "ok"

    assert job.state is State.CLOSED
    assert [_values(metrics, p) for p in PHASES] == [[5.0], [7.0], [17.0], [20.0]]
    assert [_values(metrics, p, "service") for p in PHASES] == [[3.0], [5.0], [15.0], [18.0]]
    assert tracker.free[-1] == "dev-0"  # free again
    assert _accounted(metrics)
    assert metrics.counters["jobs.closed"] == 1


def test_dispatch_before_the_n1_answer_and_a_callback_found_by_operation_id() -> None:
    tracker, metrics = _tracker()
    job = tracker.open(tracker.take_devices(1) or (), 0.0, 5.0)
    tracker.received("dev-0", "op-1", 0.003)  # the platform was faster than N1's answer
    assert job.state is State.DISPATCHED
    tracker.answered("dev-0", "op-1", 0.004)
    # the callback is read before N1's answer: found by its operation id
    assert tracker.notified(_finished("not-yet-known", "op-1"), 0.006) == "ok"
    tracker.accepted(job, "job-1", 0.008)  # the answer of a job already closed: still recorded
    assert _values(metrics, "job_accepted") == [8.0]
    assert _values(metrics, "closed") == [6.0]
    assert _accounted(metrics)


def test_k_targets_each_phase_when_the_last_one_gets_there() -> None:
    tracker, metrics = _tracker(devices=3)
    job = tracker.open(tracker.take_devices(3) or (), 0.0, 5.0)
    tracker.accepted(job, "j", 0.001)
    for i in range(3):
        tracker.received(f"dev-{i}", f"op-{i}", 0.002 + i * MS)
    for i in range(3):
        tracker.answered(f"dev-{i}", f"op-{i}", 0.010 + i * MS)
    for i in range(3):
        tracker.notified(_finished("j", f"op-{i}", "ERROR_PROCESSING" if i == 1 else "SUCCESSFUL"),
                         0.020 + i * MS)  # fmt: skip
    assert [_values(metrics, p) for p in PHASES] == [[1.0], [4.0], [12.0], [22.0]]
    assert metrics.counters["jobs.failed"] == 1
    assert metrics.counters["jobs.result.ERROR_PROCESSING"] == 1


def test_no_free_device_rejects_without_creating() -> None:
    tracker, metrics = _tracker(devices=1)
    assert tracker.take_devices(1) is not None
    assert tracker.take_devices(1) is None
    assert metrics.counters["jobs.rejected.no_free_device"] == 1
    assert metrics.counters["jobs.created"] == 0


def test_never_dispatched_ends_at_the_dispatch_deadline_and_is_recorded_there() -> None:
    tracker, metrics = _tracker(dispatch_timeout=0.5)
    job = tracker.open(tracker.take_devices(1) or (), 1.0, 5.0)
    tracker.sending(job, 1.0)
    tracker.accepted(job, "j", 1.004)
    assert tracker.next_deadline == 1.5
    # the timer task wakes late: the job is still recorded at its deadline, not at "now"
    assert tracker.expire(2.75) == 1
    assert job.state is State.TIMED_OUT
    assert _values(metrics, "dispatch") == [500.0]
    assert _values(metrics, "closed") == [500.0]
    assert metrics.counters["jobs.timed_out.dispatch"] == 1
    # the device is quarantined until the close deadline: a late request is not the next job's
    assert "dev-0" not in tracker.free
    tracker.received("dev-0", "op-late", 3.0)
    assert metrics.counters["jobs.late.dispatch"] == 1
    tracker.expire(6.0)
    assert "dev-0" in tracker.free
    assert _accounted(metrics)


def test_an_operation_never_closed_ends_at_its_close_deadline() -> None:
    tracker, metrics = _tracker()
    job = tracker.open(tracker.take_devices(1) or (), 0.0, 2.0)
    tracker.accepted(job, "j", 0.001)
    tracker.received("dev-0", "op", 0.002)
    tracker.answered("dev-0", "op", 0.003)
    assert tracker.next_deadline == 2.0
    tracker.expire(9.0)  # very late wake-up
    assert _values(metrics, "closed") == [2000.0]
    assert metrics.counters["jobs.timed_out.close"] == 1
    # a callback after the end: counted late, changes nothing
    assert tracker.notified(_finished("j", "op"), 9.5) == "late"
    assert metrics.counters["jobs.closed"] == 0
    assert _accounted(metrics)


def test_n1_errors_are_counted_by_cause_and_end_the_job() -> None:
    tracker, metrics = _tracker()
    job = tracker.open(tracker.take_devices(1) or (), 0.0, 2.0)
    tracker.refused(job, 0.004, "north.status.503", maybe_created=False)
    assert job.state is State.ERROR
    assert metrics.counters["north.status.503"] == 1
    assert "dev-0" in tracker.free  # not created: free at once
    job2 = tracker.open(tracker.take_devices(1) or (), 0.0, 2.0)
    tracker.refused(job2, 0.004, "north.transport.connect", maybe_created=True)
    assert metrics.counters["jobs.errors"] == 2
    assert _accounted(metrics)


def test_unknown_callbacks_are_counted() -> None:
    tracker, metrics = _tracker()
    assert tracker.notified(_finished("who", "what"), 0.0) == "unknown"
    assert metrics.counters["north.callback.unknown"] == 1


def test_polling_closes_a_job() -> None:
    tracker, metrics = _tracker()
    job = tracker.open(tracker.take_devices(1) or (), 0.0, 2.0)
    tracker.accepted(job, "j", 0.001)
    assert not tracker.polled(job, JobStatus(id="j", status="IN_PROGRESS"), 0.01)
    assert tracker.polled(job, JobStatus(id="j", status="FINISHED_WITH_ERRORS"), 0.05)
    assert _values(metrics, "closed") == [50.0]
    assert metrics.counters["jobs.failed"] == 1


def test_drain_times_out_the_rest_at_their_own_deadlines() -> None:
    tracker, metrics = _tracker(dispatch_timeout=0.5)
    emptied: list[bool] = []
    tracker.on_empty = lambda: emptied.append(True)
    a = tracker.open(tracker.take_devices(1) or (), 0.0, 2.0)
    b = tracker.open(tracker.take_devices(1) or (), 0.1, 2.0)
    tracker.received(b.devices[0], "op-b", 0.2)
    assert tracker.drain() == 2
    assert sorted(_values(metrics, "closed")) == [500.0, 2000.0]
    assert a.state is b.state is State.TIMED_OUT
    assert metrics.counters["jobs.cut_by_grace"] == 2
    assert emptied == [True]
    assert _accounted(metrics)


def test_an_illegal_move_is_a_bug() -> None:
    tracker, _ = _tracker()
    job = tracker.open(tracker.take_devices(1) or (), 0.0, 2.0)
    tracker.refused(job, 0.0, "north.status.500", maybe_created=False)
    with pytest.raises(KeyError):
        tracker._end(job, 0.0, quarantine=False)  # ended twice: its token is gone


def test_a_late_callback_is_late_within_the_window_and_unknown_after_it() -> None:
    """An ended job's ids are remembered until its close deadline + ``remember_s``, then
    forgotten: a duplicate callback inside the window is ``late``, after it ``unknown``."""
    metrics = Metrics()
    tracker = JobTracker(metrics, ["dev-0"], dispatch_timeout=1.0, remember_s=3.0)
    job = tracker.open(("dev-0",), 0.0, close_timeout=5.0)  # close deadline 5.0
    tracker.accepted(job, "job-1", 0.001)
    tracker.received("dev-0", "op-1", 0.002)
    tracker.answered("dev-0", "op-1", 0.003)
    assert tracker.notified(_finished("job-1", "op-1"), 0.004) == "ok"
    assert tracker.notified(_finished("job-1", "op-1"), 7.9) == "late"  # 5.0 + 3.0 not passed
    tracker.answered("dev-0", "op-1", 7.9)
    assert metrics.counters["jobs.late.device_done"] == 1
    # forgotten at most one generation (1 s) after the window closed
    assert tracker.notified(_finished("job-1", "op-1"), 9.1) == "unknown"
    assert metrics.counters["north.callback.late"] == 1
    assert metrics.counters["north.callback.unknown"] == 1


def test_what_is_remembered_is_bounded_by_rate_and_window_not_run_length() -> None:
    """At 100 jobs/s with a 2 s close timeout and a 3 s window, the ids kept after an hour are
    those of the last ~6 s (two per job: the operation's and the job's), as after a minute."""
    metrics = Metrics()
    tracker = JobTracker(metrics, [f"dev-{i}" for i in range(10)], dispatch_timeout=1.0,
                         remember_s=3.0)  # fmt: skip
    kept: dict[int, int] = {}
    for n in range(360_000):  # one hour at 100 jobs/s, each closed 5 ms after its creation
        t = n / 100
        job = tracker.open(tracker.take_devices(1) or (), t, close_timeout=2.0)
        tracker.accepted(job, f"job-{n}", t + 0.001)
        tracker.received(job.devices[0], f"op-{n}", t + 0.002)
        tracker.answered(job.devices[0], f"op-{n}", t + 0.003)
        tracker.notified(_finished(f"job-{n}", f"op-{n}"), t + 0.005)
        if n in (6_000, 359_999):
            kept[n] = tracker.remembered
    for remembered in kept.values():  # a window of 5 s (+ at most one 1 s generation)
        assert 2 * 100 * 5 <= remembered <= 2 * 100 * 6
    assert _accounted(metrics)
