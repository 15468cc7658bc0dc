"""Bytes <-> records for the OpenGate operations protocol (PROTOCOL.md §3, §4, §5, §8).

Theory of operation. This runs for every message of a load test, so the happy path is
``orjson.loads`` followed by a straight run of ``isinstance`` checks and dict lookups, and
encoding is "build a dict, ``orjson.dumps`` it". No schema library, no per-field objects.

Every decode failure, whatever the input (bytes that are not JSON, a JSON value of the wrong
shape, a missing field, an unknown enum value), raises ``loadgen.errors.ProtocolError`` and
nothing else, with the full field path::

    operation.response.steps[2].result: expected one of SUCCESSFUL, ERROR, SKIPPED, NOT_EXECUTED, got "OK"

Paths are built only when something is wrong: nested helpers (a step, a variable result, one
envelope of a pending list) raise with a path relative to themselves and the loop that called
them prefixes it (``_nested``). ``try`` costs nothing in CPython 3.11+ until it catches.

Liberal where PROTOCOL.md is: unknown keys are ignored, any ``version`` string is accepted, a
JSON ``null`` optional field counts as absent, and parameters come either as an object or as
the older typed array ``[{"name": n, "value": {"<type>": v}}]``. Strict where correlation or
accounting depends on it: ``id`` and ``name`` are non-empty strings, ``timestamp`` is an
integer (not a bool, not a float), enum values are the documented ones, and a partial
response (no ``resultCode``) must not carry a ``resultDescription``.

The platform's south API reads responses with ``decode_response_lenient``: real device agents
send a few things the protocol does not (a response without ``timestamp``, a step whose
``timestamp`` is ``null``, fields of their own), and a platform that answered them 400 would
lose their operations. Those are accepted and *named* (``ODDITIES``) so the south API can count
them; everything else stays as strict as above, and ``refusal_cause`` sorts a refusal into what
the platform cannot use at all (``REFUSAL_CAUSES``: not JSON, no ``operation.response``, no
``id``, an unknown ``resultCode``) or any other invalid field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

import orjson

from loadgen.errors import ProtocolError
from loadgen.protocol.enums import (
    RESULT_CODE_BY_VALUE,
    RESULT_CODE_EXPECTED,
    STEP_RESULT_BY_VALUE,
    STEP_RESULT_EXPECTED,
    VARIABLE_RESULT_CODE_BY_VALUE,
    VARIABLE_RESULT_CODE_EXPECTED,
    ResultCode,
)
from loadgen.protocol.records import (
    OperationRequest,
    OperationResponse,
    ParametersForm,
    Step,
    VariableResult,
)

#: What the decoders take: anything ``orjson.loads`` reads.
Body = bytes | bytearray | memoryview | str

#: The ``version`` written by default, and assumed when a response has none.
DEFAULT_VERSION: Final = "1.0"

#: The type keys of the older typed-array parameter form, in the order they are tried.
TYPED_VALUE_KEYS: Final = ("string", "number", "boolean", "array", "object")

#: What ``decode_response_lenient`` accepts but names: a response without ``timestamp`` (or
#: ``null``), a step without one, a key the protocol does not define (anywhere in the message).
ODD_NO_TIMESTAMP: Final = "no_timestamp"
ODD_STEP_NO_TIMESTAMP: Final = "step_no_timestamp"
ODD_UNKNOWN_FIELD: Final = "unknown_field"
ODDITIES: Final = (ODD_NO_TIMESTAMP, ODD_STEP_NO_TIMESTAMP, ODD_UNKNOWN_FIELD)

#: Why a response is refused (``refusal_cause``): the first four leave the platform nothing to
#: correlate or complete; ``invalid`` is any other field the codec refuses.
REFUSAL_CAUSES: Final = ("not_json", "no_response", "no_id", "result_code", "invalid")

_ENVELOPE_KEYS: Final = frozenset({"version", "operation"})
_OPERATION_KEYS: Final = frozenset({"response"})
_RESPONSE_KEYS: Final = frozenset(
    {"id", "timestamp", "deviceId", "name", "resultCode", "resultDescription", "steps", "path"}
)
_STEP_KEYS: Final = frozenset({"name", "timestamp", "result", "description", "response"})
_VARIABLE_KEYS: Final = frozenset(
    {"variableName", "variableValue", "resultCode", "resultDescription"}
)


# Lower-case on purpose: ProtocolError shows a ``got`` it does not know by its type's name.
class nothing:
    """The type of ``MISSING``: ``ProtocolError`` renders it as "got nothing"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: The ``got`` of a ProtocolError for an absent field (distinct from a JSON ``null``).
MISSING: Final = nothing()

_E = TypeVar("_E")

_NON_EMPTY = "a non-empty string"
_STRING = "a string"
_INTEGER = "an integer"
_OBJECT = "an object"
_STRINGS = "an array of strings"
_PARAMETERS = "an object or a typed array"
_TYPED_VALUE = "an object with one type key (" + ", ".join(TYPED_VALUE_KEYS) + ")"
_TYPE_KEY = "a type key, one of " + ", ".join(TYPED_VALUE_KEYS)
_TYPE_EXPECTED: Final = {
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}
_DESCRIPTION_IN_PARTIAL = "no resultDescription in a partial response (one without resultCode)"
_JSON_DOCUMENT = "a JSON document"
_CAUSE_OF_FIELD: Final = {
    "operation": "no_response",
    "operation.response": "no_response",
    "operation.response.id": "no_id",
    "operation.response.resultCode": "result_code",
}


# --- small field readers ---------------------------------------------------------------------
# ``where`` is the path of the enclosing object with a trailing "." (or "" when relative).


def _loads(data: Body) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("body", _JSON_DOCUMENT, has_got=False) from exc


def _nested(exc: ProtocolError, prefix: str) -> ProtocolError:
    field = f"{prefix}.{exc.field}" if exc.field else prefix
    return ProtocolError(field, exc.expected, exc.got)


def _required_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key, MISSING)
    if isinstance(value, str) and value:
        return value
    raise ProtocolError(where + key, _NON_EMPTY, value)


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(where + key, _STRING, value)


def _timestamp(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key, MISSING)
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ProtocolError(where + key, _INTEGER, value)


def _other_timestamp(
    obj: dict[str, Any], where: str, odd: list[str] | None, kind: str
) -> int | None:
    """A ``timestamp`` that is not a plain int: as ``_timestamp``, except that with an ``odd``
    list an absent or null one is noted there (as ``kind``) and read as None."""
    if odd is not None and obj.get("timestamp") is None:
        _note(odd, kind)
        return None
    return _timestamp(obj, "timestamp", where)


def _note(odd: list[str], kind: str) -> None:
    if kind not in odd:
        odd.append(kind)


def _optional_path(obj: dict[str, Any], where: str) -> tuple[str, ...] | None:
    value = obj.get("path")
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError(where + "path", _STRINGS, value)
    for i, part in enumerate(value):
        if not isinstance(part, str):
            raise ProtocolError(f"{where}path[{i}]", _STRING, part)
    return tuple(value)


def _member(value: object, table: Mapping[str, _E], field: str, expected: str) -> _E:
    if isinstance(value, str):
        member = table.get(value)
        if member is not None:
            return member
    raise ProtocolError(field, expected, value)


# --- requests --------------------------------------------------------------------------------


def _typed_parameters(items: list[Any], where: str) -> dict[str, Any]:
    """The older form: ``[{"name": n, "value": {"<type>": v}}, ...]`` -> ``{n: v, ...}``."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"{where}parameters[{i}]", "an object with name and value", item)
        name = item.get("name", MISSING)
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{where}parameters[{i}].name", _NON_EMPTY, name)
        if name in out:
            raise ProtocolError(f"{where}parameters[{i}].name", "a name not used before", name)
        typed = item.get("value", MISSING)
        if not isinstance(typed, dict) or len(typed) != 1:
            raise ProtocolError(f"{where}parameters[{i}].value", _TYPED_VALUE, typed)
        ((kind, value),) = typed.items()
        if kind == "string":
            ok = isinstance(value, str)
        elif kind == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind == "boolean":
            ok = isinstance(value, bool)
        elif kind == "array":
            ok = isinstance(value, list)
        elif kind == "object":
            ok = isinstance(value, dict)
        else:
            raise ProtocolError(f"{where}parameters[{i}].value", _TYPE_KEY, kind)
        if not ok:
            raise ProtocolError(f"{where}parameters[{i}].value.{kind}", _TYPE_EXPECTED[kind], value)
        out[name] = value
    return out


def _request(obj: dict[str, Any], where: str) -> OperationRequest:
    id_ = _required_str(obj, "id", where)
    timestamp = _timestamp(obj, "timestamp", where)
    name = _required_str(obj, "name", where)
    raw = obj.get("parameters")
    form: ParametersForm = "object"
    parameters: dict[str, Any]
    if isinstance(raw, dict):
        parameters = raw
    elif raw is None:
        parameters = {}
    elif isinstance(raw, list):
        parameters = _typed_parameters(raw, where)
        form = "array"
    else:
        raise ProtocolError(where + "parameters", _PARAMETERS, raw)
    return OperationRequest(
        id=id_,
        timestamp=timestamp,
        name=name,
        parameters=parameters,
        parameters_form=form,
        device_id=_optional_str(obj, "deviceId", where),
        path=_optional_path(obj, where),
    )


def _request_in_envelope(obj: dict[str, Any]) -> OperationRequest:
    operation = obj.get("operation", MISSING)
    if not isinstance(operation, dict):
        raise ProtocolError("operation", _OBJECT, operation)
    request = operation.get("request", MISSING)
    if not isinstance(request, dict):
        raise ProtocolError("operation.request", _OBJECT, request)
    return _request(request, "operation.request.")


def decode_request_obj(obj: object) -> OperationRequest:
    """Validate an already-parsed request envelope ``{"operation": {"request": {...}}}``."""
    if not isinstance(obj, dict):
        raise ProtocolError("body", _OBJECT, obj)
    return _request_in_envelope(obj)


def decode_request(data: Body) -> OperationRequest:
    """Parse and validate one request envelope; raises only ``ProtocolError``."""
    return decode_request_obj(_loads(data))


def _type_key(name: str, value: object) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise ValueError(f"parameter {name!r} = {value!r} has no type in the typed-array form")


def request_envelope(req: OperationRequest) -> dict[str, Any]:
    """The JSON-ready envelope of ``req`` (what ``encode_request`` serialises)."""
    params = req.parameters
    body: dict[str, Any] = {
        "id": req.id,
        "timestamp": req.timestamp,
        "name": req.name,
        "parameters": (
            params
            if req.parameters_form == "object"
            else [{"name": k, "value": {_type_key(k, v): v}} for k, v in params.items()]
        ),
    }
    if req.device_id is not None:
        body["deviceId"] = req.device_id
    if req.path is not None:
        body["path"] = req.path
    return {"operation": {"request": body}}


def encode_request(req: OperationRequest) -> bytes:
    """``{"operation": {"request": {...}}}``; optional fields are omitted when None.

    Raises ``ValueError`` if an array-form request holds a value the typed array cannot
    express (``None``), and orjson's ``TypeError`` for values that are not JSON at all.
    """
    return orjson.dumps(request_envelope(req))


# --- pending (a JSON array of request envelopes) ---------------------------------------------


def decode_pending_obj(obj: object) -> list[OperationRequest]:
    """Validate an already-parsed pending list; error paths start with ``[i]``."""
    if not isinstance(obj, list):
        raise ProtocolError("body", "an array of request envelopes", obj)
    out: list[OperationRequest] = []
    try:
        for item in obj:
            if not isinstance(item, dict):
                raise ProtocolError("", _OBJECT, item)
            out.append(_request_in_envelope(item))
    except ProtocolError as exc:
        raise _nested(exc, f"[{len(out)}]") from None  # len(out) is the failing index
    return out


def decode_pending(data: Body) -> list[OperationRequest]:
    """Parse a ``GET .../operation/pending`` answer (PROTOCOL.md §5)."""
    return decode_pending_obj(_loads(data))


def encode_pending(requests: Iterable[OperationRequest]) -> bytes:
    """A JSON array of request envelopes (``[]`` when nothing is pending)."""
    return orjson.dumps([request_envelope(req) for req in requests])


# --- responses -------------------------------------------------------------------------------


def _variable(obj: object, odd: list[str] | None) -> VariableResult:
    if not isinstance(obj, dict):
        raise ProtocolError("", _OBJECT, obj)
    if odd is not None and not obj.keys() <= _VARIABLE_KEYS:
        _note(odd, ODD_UNKNOWN_FIELD)
    return VariableResult(
        variable_name=_required_str(obj, "variableName", ""),
        variable_value=obj.get("variableValue"),
        result_code=_member(
            obj.get("resultCode", MISSING),
            VARIABLE_RESULT_CODE_BY_VALUE,
            "resultCode",
            VARIABLE_RESULT_CODE_EXPECTED,
        ),
        result_description=_optional_str(obj, "resultDescription", ""),
    )


def _step(obj: object, odd: list[str] | None) -> Step:
    if not isinstance(obj, dict):
        raise ProtocolError("", _OBJECT, obj)
    if odd is not None and not obj.keys() <= _STEP_KEYS:
        _note(odd, ODD_UNKNOWN_FIELD)
    name = _required_str(obj, "name", "")
    timestamp = obj.get("timestamp")
    if type(timestamp) is not int:
        timestamp = _other_timestamp(obj, "", odd, ODD_STEP_NO_TIMESTAMP)
    result = _member(
        obj.get("result", MISSING), STEP_RESULT_BY_VALUE, "result", STEP_RESULT_EXPECTED
    )
    description = _optional_str(obj, "description", "")
    raw = obj.get("response")
    response: tuple[VariableResult, ...] | None
    if raw is None:
        response = None
    elif isinstance(raw, list):
        variables: list[VariableResult] = []
        try:
            for item in raw:
                variables.append(_variable(item, odd))  # noqa: PERF401 -- len() names the failure
        except ProtocolError as exc:
            raise _nested(exc, f"response[{len(variables)}]") from None
        response = tuple(variables)
    else:
        raise ProtocolError("response", "an array of variable results", raw)
    return Step(
        name=name, timestamp=timestamp, result=result, description=description, response=response
    )


def _response(
    obj: dict[str, Any], where: str, version: str, odd: list[str] | None
) -> OperationResponse:
    id_ = _required_str(obj, "id", where)
    if odd is not None and not obj.keys() <= _RESPONSE_KEYS:
        _note(odd, ODD_UNKNOWN_FIELD)
    timestamp = obj.get("timestamp")
    if type(timestamp) is not int:
        timestamp = _other_timestamp(obj, where, odd, ODD_NO_TIMESTAMP)
    device_id = _optional_str(obj, "deviceId", where)
    name = _required_str(obj, "name", where)
    raw_code = obj.get("resultCode")
    code: ResultCode | None = None
    if raw_code is not None:
        code = _member(raw_code, RESULT_CODE_BY_VALUE, where + "resultCode", RESULT_CODE_EXPECTED)
    description = _optional_str(obj, "resultDescription", where)
    if description is not None and code is None:
        raise ProtocolError(where + "resultDescription", _DESCRIPTION_IN_PARTIAL, description)
    raw_steps = obj.get("steps")
    steps: tuple[Step, ...] = ()
    if isinstance(raw_steps, list):
        done: list[Step] = []
        try:
            for item in raw_steps:
                done.append(_step(item, odd))  # noqa: PERF401 -- len() names the failure
        except ProtocolError as exc:
            raise _nested(exc, f"{where}steps[{len(done)}]") from None
        steps = tuple(done)
    elif raw_steps is not None:
        raise ProtocolError(where + "steps", "an array of steps", raw_steps)
    return OperationResponse(
        id=id_,
        timestamp=timestamp,
        device_id=device_id,
        name=name,
        result_code=code,
        result_description=description,
        steps=steps,
        path=_optional_path(obj, where),
        version=version,
    )


def _response_envelope(obj: object, odd: list[str] | None) -> OperationResponse:
    if not isinstance(obj, dict):
        raise ProtocolError("body", _OBJECT, obj)
    version = obj.get("version")
    if version is None:
        version = DEFAULT_VERSION
    elif not isinstance(version, str):
        raise ProtocolError("version", _STRING, version)
    operation = obj.get("operation", MISSING)
    if not isinstance(operation, dict):
        raise ProtocolError("operation", _OBJECT, operation)
    response = operation.get("response", MISSING)
    if not isinstance(response, dict):
        raise ProtocolError("operation.response", _OBJECT, response)
    if odd is not None and not (
        obj.keys() <= _ENVELOPE_KEYS and operation.keys() <= _OPERATION_KEYS
    ):
        _note(odd, ODD_UNKNOWN_FIELD)
    return _response(response, "operation.response.", version, odd)


def decode_response_obj(obj: object) -> OperationResponse:
    """Validate an already-parsed ``{"version": .., "operation": {"response": {...}}}``."""
    return _response_envelope(obj, None)


def decode_response(data: Body) -> OperationResponse:
    """Parse and validate one response (partial or final); raises only ``ProtocolError``."""
    return _response_envelope(_loads(data), None)


def decode_response_lenient(data: Body) -> tuple[OperationResponse, tuple[str, ...]]:
    """``decode_response`` as the platform's south API reads it: also accepts the ``ODDITIES``
    (a missing or null ``timestamp`` becomes ``None``), and returns the ones it met, each once,
    in the order met. Raises only ``ProtocolError`` (see ``refusal_cause``)."""
    odd: list[str] = []
    response = _response_envelope(_loads(data), odd)
    return response, tuple(odd)


def refusal_cause(exc: ProtocolError) -> str:
    """Which of ``REFUSAL_CAUSES`` a response decoder's ``ProtocolError`` is."""
    field = exc.field
    if field == "body":
        return "not_json" if exc.expected == _JSON_DOCUMENT else "no_response"
    return _CAUSE_OF_FIELD.get(field, "invalid")


def _variable_obj(var: VariableResult) -> dict[str, Any]:
    out: dict[str, Any] = {"variableName": var.variable_name}
    if var.variable_value is not None:
        out["variableValue"] = var.variable_value
    out["resultCode"] = var.result_code
    if var.result_description is not None:
        out["resultDescription"] = var.result_description
    return out


def _step_obj(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"name": step.name}
    if step.timestamp is not None:
        out["timestamp"] = step.timestamp
    out["result"] = step.result
    if step.description is not None:
        out["description"] = step.description
    if step.response is not None:
        out["response"] = [_variable_obj(var) for var in step.response]
    return out


def response_envelope(resp: OperationResponse) -> dict[str, Any]:
    """The JSON-ready envelope of ``resp`` (what ``encode_response`` serialises)."""
    body: dict[str, Any] = {"id": resp.id}
    if resp.timestamp is not None:
        body["timestamp"] = resp.timestamp
    if resp.device_id is not None:
        body["deviceId"] = resp.device_id
    body["name"] = resp.name
    if resp.result_code is not None:
        body["resultCode"] = resp.result_code
        if resp.result_description is not None:
            body["resultDescription"] = resp.result_description
    body["steps"] = [_step_obj(step) for step in resp.steps]
    if resp.path is not None:
        body["path"] = resp.path
    return {"version": resp.version, "operation": {"response": body}}


def encode_response(resp: OperationResponse) -> bytes:
    """``{"version": .., "operation": {"response": {...}}}``; a partial has no resultCode key."""
    return orjson.dumps(response_envelope(resp))


# --- data collection (collect/iot) -----------------------------------------------------------


def decode_iot_obj(obj: object) -> dict[str, Any]:
    """Lightly validate an already-parsed ``collect/iot`` payload (PROTOCOL.md §8).

    Checks the shape the platform counts on (``datastreams[].id``, ``datastreams[].datapoints[]``
    objects with a ``value``) and returns the payload itself.
    """
    if not isinstance(obj, dict):
        raise ProtocolError("body", _OBJECT, obj)
    for key in ("version", "device"):
        _optional_str(obj, key, "")
    _optional_path(obj, "")
    streams = obj.get("datastreams", MISSING)
    if not isinstance(streams, list):
        raise ProtocolError("datastreams", "an array of datastreams", streams)
    for i, stream in enumerate(streams):
        if not isinstance(stream, dict):
            raise ProtocolError(f"datastreams[{i}]", _OBJECT, stream)
        where = f"datastreams[{i}]."
        _required_str(stream, "id", where)
        _optional_str(stream, "feed", where)
        points = stream.get("datapoints", MISSING)
        if not isinstance(points, list):
            raise ProtocolError(where + "datapoints", "an array of datapoints", points)
        for j, point in enumerate(points):
            if not isinstance(point, dict):
                raise ProtocolError(f"{where}datapoints[{j}]", _OBJECT, point)
            if "value" not in point:
                raise ProtocolError(f"{where}datapoints[{j}].value", "a value", MISSING)
            if "at" in point and point["at"] is not None:
                _timestamp(point, "at", f"{where}datapoints[{j}].")
    return obj


def decode_iot(data: Body) -> dict[str, Any]:
    """Parse and lightly validate a ``collect/iot`` body; raises only ``ProtocolError``."""
    return decode_iot_obj(_loads(data))
