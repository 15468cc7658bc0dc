"""The stand-in's job book (pure): job and operation states of PROTOCOL.md §9 as a table,
FINISHED / FINISHED_WITH_ERRORS at the last operation, N4 moves, bounded memory."""

from __future__ import annotations

import gc
from collections import Counter

import pytest

from loadgen.platform.jobs import (
    JOB_TRANSITIONS,
    OPERATION_TRANSITIONS,
    FinishedJob,
    JobBook,
    JobOperation,
    JobState,
    OperationState,
)
from loadgen.protocol.north import (
    JobRequest,
    encode_job_status,
    encode_operation_record,
    encode_operations_page,
)


def _request(*entities: str) -> JobRequest:
    return JobRequest(name="REBOOT_EQUIPMENT", entities=entities or ("d1",))


def _book(**kw: float) -> tuple[JobBook, Counter[str], list[JobOperation]]:
    counters: Counter[str] = Counter()
    finished: list[JobOperation] = []
    book = JobBook(counters, on_finished=finished.append, **kw)  # type: ignore[arg-type]
    return book, counters, finished


def test_every_table_target_is_a_declared_state() -> None:
    assert set(JOB_TRANSITIONS.values()) <= set(JobState)
    assert set(OPERATION_TRANSITIONS.values()) <= set(OperationState)


def test_a_job_finishes_when_its_last_operation_does() -> None:
    book, counters, finished = _book()
    job = book.create("j1", _request("d1", "d2"), ["o1", "o2"], now=0.0, now_ms=1000)
    assert job.state is JobState.IN_PROGRESS
    assert [o.state for o in job.operations] == [OperationState.WAITING_FOR_CONNECTION] * 2

    book.sent("o1", 1001)
    assert job.operations[0].state is OperationState.IN_PROGRESS
    book.ended("o1", "SUCCESSFUL", [], now=0.1, now_ms=1100)
    assert job.state is JobState.IN_PROGRESS
    assert job.status().finished == 1

    book.sent("o2", 1002)
    book.ended("o2", "SUCCESSFUL", [{"name": "x"}], now=0.2, now_ms=1200)

    assert job.state is JobState.FINISHED
    assert [o.id for o in finished] == ["o1", "o2"]
    record = finished[1].record()
    assert (record.status, record.result, record.started_ms, record.finished_ms) == (
        "FINISHED", "SUCCESSFUL", 1002, 1200,
    )  # fmt: skip
    assert record.attempts_current == 1
    kept = book.get("j1")  # kept for N2/N3, as their answers
    assert isinstance(kept, FinishedJob)
    assert kept.status == encode_job_status(job.status(), created_ms=1000)
    assert kept.page(1, 10) == encode_operations_page([o.record() for o in job.operations])
    assert kept.page(2, 1) == encode_operations_page([job.operations[1].record()])
    assert kept.page(3, 5) == encode_operations_page([])
    assert finished[1].wire == encode_operation_record(record)  # the callback's body
    assert "j1" not in book.live
    assert counters["platform.north.jobs_finished"] == 1


def test_one_failure_makes_the_job_finished_with_errors() -> None:
    book, counters, _ = _book()
    job = book.create("j1", _request("d1", "d2"), ["o1", "o2"], now=0.0, now_ms=0)
    book.ended("o1", "SUCCESSFUL", [], now=0.0, now_ms=0)
    book.ended("o2", "ERROR_TIMEOUT", [], now=0.0, now_ms=0)  # never written: timed out waiting
    assert job.state is JobState.FINISHED_WITH_ERRORS
    assert job.status().failed == 1
    assert counters["platform.north.jobs_finished_with_errors"] == 1


def test_an_operation_that_is_not_a_jobs_is_ignored() -> None:
    book, _, finished = _book()
    assert book.ended("stray", "SUCCESSFUL", [], now=0.0, now_ms=0) is None
    assert finished == []


def test_n4_moves_and_refusals() -> None:
    book, counters, finished = _book()
    job = book.create("j1", _request("d1"), ["o1"], now=0.0, now_ms=0)
    assert book.set_state("nope", "o1", "IN_PROGRESS", 0.0, 0) == "no_job"
    assert book.set_state("j1", "nope", "IN_PROGRESS", 0.0, 0) == "no_operation"
    assert book.set_state("j1", "o1", "PAUSED", 0.0, 0) == "illegal"
    assert book.set_state("j1", "o1", "IN_PROGRESS", 0.0, 5) == "ok"
    assert job.operations[0].state is OperationState.IN_PROGRESS
    assert book.set_state("j1", "o1", "FINISHED", 0.0, 6) == "ok"
    assert job.state is JobState.FINISHED_WITH_ERRORS
    assert finished[0].result == "CANCELLED"
    # the in-flight twin ends later: nothing changes but a counter
    assert book.ended("o1", "SUCCESSFUL", [], now=1.0, now_ms=7) is None
    assert counters["platform.north.detached_ends"] == 0  # its job is over: not indexed any more
    assert book.set_state("j1", "o1", "FINISHED", 0.0, 6) == "illegal"
    assert book.set_state("j1", "o1", "IN_PROGRESS", 0.0, 6) == "illegal"
    assert book.set_state("j1", "o9", "IN_PROGRESS", 0.0, 6) == "no_operation"


def test_the_finished_jobs_kept_are_not_walked_by_the_garbage_collector() -> None:
    """What N2/N3 keep of a finished job holds no container the collector tracks, so the
    thousands kept in a long run add nothing to the cost of a collection."""
    book, _, _ = _book(keep_count=1000)
    for i in range(100):
        book.create(f"j{i}", _request("d1", "d2"), [f"o{i}a", f"o{i}b"], now=0.0, now_ms=0)
        book.ended(f"o{i}a", "SUCCESSFUL", [{"name": "x", "result": "SUCCESSFUL"}], 0.0, 0)
        book.ended(f"o{i}b", "ERROR_TIMEOUT", [], now=0.0, now_ms=0)
    gc.collect()  # untracks the inner tuples of atoms,
    gc.collect()  # then the outer ones (each collection examines the tuples it walks)
    kept = list(book.finished.values())
    assert len(kept) == 100
    assert not any(gc.is_tracked(job) for job in kept)
    assert isinstance(book.get("j7"), FinishedJob)


def test_finished_jobs_are_kept_bounded_by_count_and_age() -> None:
    book, counters, _ = _book(keep_count=2, keep_seconds=10.0)
    for i in range(4):
        book.create(f"j{i}", _request("d"), [f"o{i}"], now=float(i), now_ms=0)
        book.ended(f"o{i}", "SUCCESSFUL", [], now=float(i), now_ms=0)
    assert list(book.finished) == ["j2", "j3"]
    assert counters["platform.north.evicted"] == 2
    assert book.expire(12.5) == 1  # j2 ended at 2.0: older than 10 s
    assert list(book.finished) == ["j3"]
    assert book.get("j0") is None


def test_an_illegal_move_is_a_bug_and_raises() -> None:
    book, _, _ = _book()
    book.create("j1", _request("d1"), ["o1"], now=0.0, now_ms=0)
    job = book.get("j1")
    assert job is not None
    job.state = JobState.FINISHED
    with pytest.raises(RuntimeError, match="illegal"):
        book.ended("o1", "SUCCESSFUL", [], now=0.0, now_ms=0)
