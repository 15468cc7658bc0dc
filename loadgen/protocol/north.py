"""The north API's messages (PROTOCOL.md §9): records, bytes in and out, paths (pure).

An application makes OpenGate operate devices by creating a *job* (N1), reads it back (N2), lists
its operations (N3, one per target device) and may move one operation to a state (N4). When the
job names a ``callback`` URL the platform POSTs each finished operation's record there. Both
loadgen sides speak this: the north side (the application) encodes N1 and reads N1's answer, N2,
N3 and the callbacks; the platform's stand-in decodes N1 and encodes the rest.

Rules of this file, as in ``codec``: no I/O and no clock (wall-clock milliseconds for the JSON
dates are arguments); every decode failure raises ``ProtocolError`` naming the field path, and
nothing else; unknown keys are ignored. Durations are **milliseconds on the wire**
(``operationParameters``, ``schedule``) and seconds in the records, converted here and only here.

Decisions (PROTOCOL.md §9 marks them; each is configurable where deployments differ):

- the job id of an N1 answer is the last segment of its ``Location`` header or the value at a
  configurable key path of its JSON body (``id`` by default, ``job.id`` as written ``"job.id"``),
  whichever is present, the header first (``job_id_from``);
- a callback body is one operation record (N3 shape); ``{"operation": record}`` and
  ``{"operations": [record, ...]}`` are read too, since deployments wrap it differently;
- an error answer of the stand-in is ``{"errors": [{"code": ..., "message": ...}]}``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import orjson

from loadgen.errors import ProtocolError

__all__ = [
    "DEFAULT_NORTH_BASE",
    "JOB_STATES",
    "OPERATION_STATES",
    "JobRequest",
    "JobStatus",
    "NorthEndpoint",
    "NorthPaths",
    "OperationParameters",
    "OperationRecord",
    "decode_callback",
    "decode_job_request",
    "decode_job_status",
    "decode_operations_page",
    "encode_error",
    "encode_job_request",
    "encode_job_status",
    "encode_operation_record",
    "encode_operations_page",
    "job_id_from",
]

DEFAULT_NORTH_BASE: Final = "/north/v80"
JOB_STATES: Final = (
    "IDLE", "SCHEDULED", "IN_PROGRESS", "PAUSED", "CANCELLING", "CANCELLED", "FINISHED",
    "FINISHED_WITH_ERRORS",
)  # fmt: skip
OPERATION_STATES: Final = ("WAITING_FOR_CONNECTION", "IN_PROGRESS", "FINISHED")
#: The job states after which nothing changes (a poller stops there).
JOB_ENDED: Final = frozenset({"FINISHED", "FINISHED_WITH_ERRORS", "CANCELLED"})


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _loads(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError(what, "a JSON document", body[:60].decode("utf-8", "replace")) from None


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(path, "an object", value)
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(path, "a non-empty string", value)
    return value


def _millis(value: Any, path: str) -> float:
    """Milliseconds (an integer >= 0 on the wire) as seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ProtocolError(path, "a number of milliseconds >= 0", value)
    if math.isinf(value):
        raise ProtocolError(path, "a finite number of milliseconds", value)
    return value / 1000.0


# --- N1: the job request ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationParameters:
    """``operationParameters`` in seconds (milliseconds on the wire). ``ack_timeout`` 0 (the
    default seen in the sources) means none: it is left out of the body."""

    timeout: float = 90.0
    ack_timeout: float = 0.0
    retries: int = 0
    retries_delay: float = 0.0
    retry_result_list: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("timeout", "ack_timeout", "retries_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: expected seconds >= 0, got {value!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries: expected an integer >= 0, got {self.retries!r}")
        if type(self.retry_result_list) is not tuple:
            object.__setattr__(self, "retry_result_list", tuple(self.retry_result_list))

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "timeout": _ms(self.timeout),
            "retries": self.retries,
            "retriesDelay": _ms(self.retries_delay),
        }
        if self.ack_timeout > 0:
            out["ackTimeout"] = _ms(self.ack_timeout)
        if self.retry_result_list:
            out["retryResultList"] = list(self.retry_result_list)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """One job: operation ``name`` with ``parameters`` for every device of ``entities``."""

    name: str
    entities: tuple[str, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    operation_parameters: OperationParameters = field(default_factory=OperationParameters)
    active: bool = True
    notify: bool = False  # True whenever ``callback`` is set
    callback: str | None = None
    stop_delay: float | None = None  # schedule.stop.delayed, seconds

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if type(self.entities) is not tuple:
            object.__setattr__(self, "entities", tuple(self.entities))
        if not self.entities:
            raise ValueError("entities: expected at least one device id")
        if self.callback is not None and not self.notify:
            object.__setattr__(self, "notify", True)  # a callback is a notification


def encode_job_request(job: JobRequest) -> bytes:
    request: dict[str, Any] = {
        "name": job.name,
        "parameters": dict(job.parameters),
        "active": job.active,
        "operationParameters": job.operation_parameters.wire(),
        "target": {"append": {"entities": list(job.entities)}},
    }
    if job.stop_delay is not None:
        request["schedule"] = {"stop": {"delayed": _ms(job.stop_delay)}}
    if job.callback is not None:
        request["notify"] = True
        request["callback"] = job.callback
    elif job.notify:
        request["notify"] = True
    return orjson.dumps({"job": {"request": request}})


def decode_job_request(body: bytes) -> JobRequest:
    """An N1 body; ``ProtocolError`` naming the field otherwise."""
    root = _object(_loads(body, "job"), "(document)")
    request = _object(_object(root.get("job"), "job").get("request"), "job.request")
    name = _string(request.get("name"), "job.request.name")
    parameters = request.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, (dict, list)):
        raise ProtocolError("job.request.parameters", "an object", parameters)
    target = _object(request.get("target"), "job.request.target")
    append = _object(target.get("append"), "job.request.target.append")
    entities = append.get("entities")
    if not isinstance(entities, list) or not entities:
        raise ProtocolError("job.request.target.append.entities", "a non-empty array", entities)
    for i, entity in enumerate(entities):
        _string(entity, f"job.request.target.append.entities[{i}]")
    raw = request.get("operationParameters") or {}
    raw = _object(raw, "job.request.operationParameters")
    where = "job.request.operationParameters."
    retries = raw.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ProtocolError(where + "retries", "an integer >= 0", retries)
    retry_list = raw.get("retryResultList") or []
    if not isinstance(retry_list, list) or not all(isinstance(c, str) for c in retry_list):
        raise ProtocolError(where + "retryResultList", "an array of result codes", retry_list)
    params = OperationParameters(
        timeout=_millis(raw.get("timeout", 90000), where + "timeout"),
        ack_timeout=_millis(raw.get("ackTimeout", 0), where + "ackTimeout"),
        retries=retries,
        retries_delay=_millis(raw.get("retriesDelay", 0), where + "retriesDelay"),
        retry_result_list=tuple(retry_list),
    )
    if params.timeout <= 0:
        raise ProtocolError(where + "timeout", "a number of milliseconds > 0", raw.get("timeout"))
    active = request.get("active", True)
    if not isinstance(active, bool):
        raise ProtocolError("job.request.active", "true or false", active)
    callback = request.get("callback")
    if callback is not None:
        _string(callback, "job.request.callback")
    stop = None
    schedule = request.get("schedule")
    if isinstance(schedule, dict) and isinstance(schedule.get("stop"), dict):
        delayed = schedule["stop"].get("delayed")
        if delayed is not None:
            stop = _millis(delayed, "job.request.schedule.stop.delayed")
    return JobRequest(
        name=name,
        entities=tuple(entities),
        parameters=parameters if isinstance(parameters, dict) else {"_typed": parameters},
        operation_parameters=params,
        active=active,
        notify=bool(request.get("notify", False)),
        callback=callback,
        stop_delay=stop,
    )


def _at_path(document: Any, key_path: Sequence[str]) -> Any:
    node = document
    for key in key_path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def job_id_from(location: bytes | None, body: bytes, key_path: Sequence[str] = ("id",)) -> str:
    """The job id of an N1 answer: ``Location``'s last path segment, else the body's value at
    ``key_path``. ``ProtocolError`` when neither holds one."""
    if location:
        text = location.decode("latin-1").split("?", 1)[0].rstrip("/")
        segment = unquote(text.rsplit("/", 1)[-1])
        if segment and "://" not in segment:
            return segment
    where = ".".join(key_path)
    if not body.strip():
        raise ProtocolError(f"Location header or body {where}", "a job id", None, has_got=False)
    value = _at_path(_loads(body, "N1 answer"), key_path)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"Location header or body {where}", "a job id", value)
    return value


# --- N2: the job and its status --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStatus:
    """What N2 says of a job (the fields a load test reads)."""

    id: str
    status: str
    name: str = ""
    total: int = 0  # operations of the job
    finished: int = 0  # of them, finished (any result)
    failed: int = 0  # of the finished, not SUCCESSFUL

    @property
    def ended(self) -> bool:
        return self.status in JOB_ENDED


def encode_job_status(job: JobStatus, *, created_ms: int | None = None) -> bytes:
    report: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "request": {"name": job.name},
        "report": {
            "summary": {
                "total": job.total,
                "finished": job.finished,
                "successful": job.finished - job.failed,
                "failed": job.failed,
            }
        },
    }
    if created_ms is not None:
        report["creationDate"] = created_ms
    return orjson.dumps({"job": report})


def decode_job_status(body: bytes) -> JobStatus:
    root = _object(_loads(body, "job"), "(document)")
    job = _object(root.get("job", root), "job")
    job_id = job.get("id")
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    status = _string(job.get("status"), "job.status")
    if status not in JOB_STATES:
        raise ProtocolError("job.status", "one of " + ", ".join(JOB_STATES), status)
    summary = _at_path(job, ("report", "summary"))
    counts = summary if isinstance(summary, dict) else {}

    def count(key: str) -> int:
        value = counts.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return JobStatus(
        id=_string(job_id, "job.id"),
        status=status,
        name=str(_at_path(job, ("request", "name")) or ""),
        total=count("total"),
        finished=count("finished"),
        failed=count("failed"),
    )


# --- N3 and callbacks: the operation record --------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationRecord:
    """One operation of a job (N3, and the body of a callback)."""

    job_id: str
    entity_id: str
    operation_id: str
    name: str
    status: str  # WAITING_FOR_CONNECTION | IN_PROGRESS | FINISHED
    parameters: Mapping[str, Any] = field(default_factory=dict)
    result: str | None = None  # the final resultCode (ERROR_TIMEOUT included)
    attempts_total: int = 1
    attempts_current: int = 0
    activated_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    steps: Sequence[Any] = ()

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


def _record_wire(record: OperationRecord) -> dict[str, Any]:
    execution = {
        key: value
        for key, value in (
            ("activatedDate", record.activated_ms),
            ("startedDate", record.started_ms),
            ("finishedDate", record.finished_ms),
        )
        if value is not None
    }
    out: dict[str, Any] = {
        "jobId": record.job_id,
        "entityId": record.entity_id,
        "operationId": record.operation_id,
        "name": record.name,
        "parameters": dict(record.parameters),
        "attempts": {"total": record.attempts_total, "current": record.attempts_current},
        "execution": execution,
        "status": record.status,
        "steps": list(record.steps),
    }
    if record.result is not None:
        out["result"] = record.result
    return out


def encode_operation_record(record: OperationRecord) -> bytes:
    return orjson.dumps(_record_wire(record))


def encode_operations_page(records: Sequence[OperationRecord]) -> bytes:
    return orjson.dumps({"operations": [_record_wire(record) for record in records]})


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _record(raw: Any, path: str) -> OperationRecord:
    item = _object(raw, path)
    status = _string(item.get("status"), path + ".status")
    result = item.get("result")
    if result is not None and not isinstance(result, str):
        raise ProtocolError(path + ".result", "a result code", result)
    attempts = _dict_or_empty(item.get("attempts"))
    execution = _dict_or_empty(item.get("execution"))

    def integer(node: Mapping[str, Any], key: str) -> int | None:
        value = node.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    steps = item.get("steps")
    return OperationRecord(
        job_id=_string(item.get("jobId"), path + ".jobId"),
        entity_id=str(item.get("entityId") or ""),
        operation_id=_string(item.get("operationId"), path + ".operationId"),
        name=str(item.get("name") or ""),
        status=status,
        parameters=_dict_or_empty(item.get("parameters")),
        result=result,
        attempts_total=integer(attempts, "total") or 1,
        attempts_current=integer(attempts, "current") or 0,
        activated_ms=integer(execution, "activatedDate"),
        started_ms=integer(execution, "startedDate"),
        finished_ms=integer(execution, "finishedDate"),
        steps=tuple(steps) if isinstance(steps, list) else (),
    )


def decode_operations_page(body: bytes) -> list[OperationRecord]:
    root = _object(_loads(body, "operations"), "(document)")
    items = root.get("operations")
    if not isinstance(items, list):
        raise ProtocolError("operations", "an array", items)
    return [_record(item, f"operations[{i}]") for i, item in enumerate(items)]


def decode_callback(body: bytes) -> list[OperationRecord]:
    """The operation records of a callback notification (see the module's decisions)."""
    root = _object(_loads(body, "callback"), "(document)")
    if "operations" in root:
        return decode_operations_page(body)
    if "operation" in root and isinstance(root["operation"], dict):
        return [_record(root["operation"], "operation")]
    return [_record(root, "(record)")]


def encode_error(code: int, message: str) -> bytes:
    return orjson.dumps({"errors": [{"code": code, "message": message}]})


# --- paths -----------------------------------------------------------------------------------


class NorthEndpoint(enum.Enum):
    JOBS = "jobs"  # N1 (POST)
    JOB = "job"  # N2 (GET)
    OPERATIONS = "operations"  # N3 (GET)
    OPERATION = "operation"  # N4 (PUT)


@dataclass(frozen=True, slots=True)
class NorthRoute:
    endpoint: NorthEndpoint
    job_id: str | None = None
    operation_id: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)


class NorthPaths:
    """``{base}/operation/jobs[/{jobId}[/operations[/{operationId}]]]`` with its query."""

    __slots__ = ("base", "jobs")

    def __init__(self, base: str = DEFAULT_NORTH_BASE) -> None:
        base = "/" + base.strip("/") if base.strip("/") else ""
        self.base = base
        self.jobs = f"{base}/operation/jobs"

    def __repr__(self) -> str:
        return f"NorthPaths({self.base!r})"

    def job(self, job_id: str) -> str:
        return f"{self.jobs}/{job_id}"

    def operations(self, job_id: str, start: int = 1, size: int = 1000) -> str:
        return f"{self.jobs}/{job_id}/operations?start={start}&size={size}"

    def parse(self, target: bytes) -> NorthRoute | None:
        text = target.decode("latin-1")
        path, _, query_text = text.partition("?")
        path = path.rstrip("/")
        if path != self.jobs and not path.startswith(self.jobs + "/"):
            return None
        query = {key: values[-1] for key, values in parse_qs(query_text).items()}
        parts = [unquote(part) for part in path[len(self.jobs) :].split("/")[1:]]
        if not parts:
            return NorthRoute(NorthEndpoint.JOBS, query=query)
        if len(parts) == 1:
            return NorthRoute(NorthEndpoint.JOB, parts[0], query=query)
        if parts[1] != "operations" or len(parts) > 3:
            return None
        if len(parts) == 2:
            return NorthRoute(NorthEndpoint.OPERATIONS, parts[0], query=query)
        return NorthRoute(NorthEndpoint.OPERATION, parts[0], parts[2], query=query)
