"""The north API's messages (PROTOCOL.md §9): milliseconds on the wire, round trips, job ids
from Location or a body key path, and every malformed body refused with the field named."""

from __future__ import annotations

import orjson
import pytest

from loadgen.errors import ProtocolError
from loadgen.protocol.north import (
    JobRequest,
    JobStatus,
    NorthEndpoint,
    NorthPaths,
    OperationParameters,
    OperationRecord,
    decode_callback,
    decode_job_request,
    decode_job_status,
    decode_operations_page,
    encode_job_request,
    encode_job_status,
    encode_operation_record,
    encode_operations_page,
    job_id_from,
)


def _job(**kw: object) -> JobRequest:
    base: dict[str, object] = {
        "name": "REBOOT_EQUIPMENT",
        "entities": ("dev-000001",),
        "parameters": {"type": "HARDWARE"},
        "operation_parameters": OperationParameters(
            timeout=90.0, ack_timeout=5.0, retries=2, retries_delay=0.25,
            retry_result_list=("ERROR_TIMEOUT",),
        ),
        "callback": "http://127.0.0.1:9/cb",
        "stop_delay": 120.0,
    }  # fmt: skip
    base.update(kw)
    return JobRequest(**base)  # type: ignore[arg-type]


def test_job_request_durations_are_milliseconds_on_the_wire() -> None:
    wire = orjson.loads(encode_job_request(_job()))["job"]["request"]

    assert wire["operationParameters"] == {
        "timeout": 90000, "ackTimeout": 5000, "retries": 2, "retriesDelay": 250,
        "retryResultList": ["ERROR_TIMEOUT"],
    }  # fmt: skip
    assert wire["schedule"] == {"stop": {"delayed": 120000}}
    assert wire["target"] == {"append": {"entities": ["dev-000001"]}}
    assert wire["notify"] is True
    assert wire["callback"] == "http://127.0.0.1:9/cb"


def test_ack_timeout_zero_is_left_out_as_the_sources_do() -> None:
    job = _job(operation_parameters=OperationParameters(timeout=1.0))
    wire = orjson.loads(encode_job_request(job))["job"]["request"]["operationParameters"]
    assert wire == {"timeout": 1000, "retries": 0, "retriesDelay": 0}


def test_job_request_round_trip() -> None:
    job = _job(entities=("a", "b", "c"))
    assert decode_job_request(encode_job_request(job)) == job


def test_the_documented_example_decodes() -> None:
    body = b"""{"job": {"request": {
        "name": "REBOOT_EQUIPMENT", "parameters": {"type": "HARDWARE"}, "active": true,
        "schedule": {"stop": {"delayed": 120000}},
        "operationParameters": {"ackTimeout": 5000, "timeout": 90000, "retries": 0,
            "retriesDelay": 0, "retryResultList": ["ERROR_TIMEOUT", "ERROR_PROCESSING"]},
        "target": {"append": {"entities": ["dev-000123"]}},
        "notify": true, "callback": "https://app.example/opengate/callback"}}}"""
    job = decode_job_request(body)
    assert job.operation_parameters == OperationParameters(
        timeout=90.0, ack_timeout=5.0, retry_result_list=("ERROR_TIMEOUT", "ERROR_PROCESSING")
    )
    assert job.stop_delay == 120.0
    assert job.entities == ("dev-000123",)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "job"),
        (b"[]", "(document)"),
        (b'{"job": {}}', "job.request"),
        (b'{"job": {"request": {"target": {"append": {"entities": ["d"]}}}}}', "job.request.name"),
        (b'{"job": {"request": {"name": "X"}}}', "job.request.target"),
        (b'{"job": {"request": {"name": "X", "target": {"append": {"entities": []}}}}}',
         "job.request.target.append.entities"),
        (b'{"job": {"request": {"name": "X", "target": {"append": {"entities": [1]}}}}}',
         "job.request.target.append.entities[0]"),
        (b'{"job": {"request": {"name": "X", "target": {"append": {"entities": ["d"]}},'
         b' "operationParameters": {"timeout": -1}}}}',
         "job.request.operationParameters.timeout"),
        (b'{"job": {"request": {"name": "X", "target": {"append": {"entities": ["d"]}},'
         b' "operationParameters": {"retries": true}}}}',
         "job.request.operationParameters.retries"),
        (b'{"job": {"request": {"name": "X", "target": {"append": {"entities": ["d"]}},'
         b' "active": "yes"}}}', "job.request.active"),
    ],
)  # fmt: skip
def test_malformed_job_requests_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_job_request(body)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("location", "body", "key_path", "expected"),
    [
        (b"/north/v80/operation/jobs/abc-1", b"", ("id",), "abc-1"),
        (b"https://og.example/north/v80/operation/jobs/abc-2/", b"", ("id",), "abc-2"),
        (b"/north/v80/operation/jobs/abc-3?x=1", b'{"id": "other"}', ("id",), "abc-3"),
        (None, b'{"id": "in-body"}', ("id",), "in-body"),
        (None, b'{"job": {"id": "nested"}}', ("job", "id"), "nested"),
        (None, b'{"id": 42}', ("id",), "42"),
    ],
)
def test_job_id_from_location_or_body(
    location: bytes | None, body: bytes, key_path: tuple[str, ...], expected: str
) -> None:
    assert job_id_from(location, body, key_path) == expected


@pytest.mark.parametrize("body", [b"", b"{}", b'{"id": ""}', b"not json"])
def test_no_job_id_anywhere_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        job_id_from(None, body, ("id",))


def test_job_status_round_trip() -> None:
    status = JobStatus(
        id="j1", status="FINISHED_WITH_ERRORS", name="REBOOT_EQUIPMENT", total=3, finished=3,
        failed=1,
    )  # fmt: skip
    decoded = decode_job_status(encode_job_status(status, created_ms=1))
    assert decoded == status
    assert decoded.ended


def test_unknown_job_status_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_job_status(b'{"job": {"id": "j", "status": "DONE"}}')
    assert caught.value.field == "job.status"


def _record(**kw: object) -> OperationRecord:
    base: dict[str, object] = {
        "job_id": "j1", "entity_id": "dev-1", "operation_id": "op-1", "name": "REFRESH_INFO",
        "status": "FINISHED", "result": "SUCCESSFUL", "attempts_total": 2, "attempts_current": 1,
        "activated_ms": 10, "started_ms": 11, "finished_ms": 12,
        "steps": ({"name": "REFRESH_INFO", "result": "SUCCESSFUL"},),
    }  # fmt: skip
    base.update(kw)
    return OperationRecord(**base)  # type: ignore[arg-type]


def test_operations_page_round_trip_with_the_documented_fields() -> None:
    records = [_record(), _record(operation_id="op-2", status="IN_PROGRESS", result=None)]
    body = encode_operations_page(records)
    wire = orjson.loads(body)["operations"][0]
    assert set(wire) == {
        "jobId", "entityId", "operationId", "name", "parameters", "attempts", "execution",
        "status", "result", "steps",
    }  # fmt: skip
    assert wire["execution"] == {"activatedDate": 10, "startedDate": 11, "finishedDate": 12}
    assert decode_operations_page(body) == records


@pytest.mark.parametrize("wrap", ["bare", "operation", "operations"])
def test_callbacks_are_read_bare_or_wrapped(wrap: str) -> None:
    record = _record()
    raw = orjson.loads(encode_operation_record(record))
    body = {
        "bare": raw,
        "operation": {"operation": raw},
        "operations": {"operations": [raw]},
    }[wrap]
    assert decode_callback(orjson.dumps(body)) == [record]


def test_callback_without_operation_id_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_callback(b'{"jobId": "j", "status": "FINISHED"}')
    assert caught.value.field == "(record).operationId"


@pytest.mark.parametrize(
    ("target", "endpoint", "job", "op", "query"),
    [
        (b"/north/v80/operation/jobs", NorthEndpoint.JOBS, None, None, {}),
        (b"/north/v80/operation/jobs/j1", NorthEndpoint.JOB, "j1", None, {}),
        (b"/north/v80/operation/jobs/j1/operations?start=1&size=5", NorthEndpoint.OPERATIONS,
         "j1", None, {"start": "1", "size": "5"}),
        (b"/north/v80/operation/jobs/j1/operations/o1?state=IN_PROGRESS",
         NorthEndpoint.OPERATION, "j1", "o1", {"state": "IN_PROGRESS"}),
    ],
)  # fmt: skip
def test_paths(
    target: bytes, endpoint: NorthEndpoint, job: str | None, op: str | None, query: dict[str, str]
) -> None:
    route = NorthPaths().parse(target)
    assert route is not None
    assert (route.endpoint, route.job_id, route.operation_id, dict(route.query)) == (
        endpoint, job, op, query,
    )  # fmt: skip


@pytest.mark.parametrize(
    "target",
    [b"/south/v80/devices/x", b"/north/v80/operation/jobsX", b"/north/v80/operation/jobs/j/x"],
)
def test_other_paths_are_not_ours(target: bytes) -> None:
    assert NorthPaths().parse(target) is None
