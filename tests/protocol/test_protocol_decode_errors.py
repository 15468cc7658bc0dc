"""Decoding edge cases: what the decoders tolerate (PROTOCOL.md's liberal spots) and a table of
bad inputs with the exact ProtocolError message each must produce."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from loadgen.errors import ProtocolError
from loadgen.protocol import (
    MISSING,
    OperationRequest,
    StepResult,
    decode_iot,
    decode_pending,
    decode_pending_obj,
    decode_request,
    decode_request_obj,
    decode_response,
    decode_response_obj,
)

# --- liberal decoding -------------------------------------------------------------------------


def _request(**fields: Any) -> bytes:
    body: dict[str, Any] = {"id": "i", "timestamp": 1, "name": "N", "parameters": {}}
    body.update(fields)
    return orjson.dumps(
        {"operation": {"request": {k: v for k, v in body.items() if v is not DROP}}}
    )


def _response(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "i",
        "timestamp": 1,
        "deviceId": "d",
        "name": "N",
        "resultCode": "SUCCESSFUL",
        "resultDescription": "ok",
        "steps": [{"name": "S", "timestamp": 1, "result": "SUCCESSFUL"}],
    }
    version = fields.pop("version", "1.0")
    body.update(fields)
    envelope: dict[str, Any] = {
        "operation": {"response": {k: v for k, v in body.items() if v is not DROP}}
    }
    if version is not DROP:
        envelope["version"] = version
    return orjson.dumps(envelope)


DROP: Any = object()


def test_missing_and_empty_parameters_decode_to_empty_dict() -> None:
    for data in (_request(parameters=DROP), _request(parameters={}), _request(parameters=None)):
        req = decode_request(data)
        assert req.parameters == {}
        assert req.parameters_form == "object"
    req = decode_request(_request(parameters=[]))
    assert req.parameters == {}
    assert req.parameters_form == "array"


def test_unknown_keys_are_ignored() -> None:
    data = orjson.dumps(
        {
            "extra": 1,
            "operation": {
                "other": [],
                "request": {"id": "i", "timestamp": 1, "name": "N", "ttl": 5, "parameters": {}},
            },
        }
    )
    assert decode_request(data) == OperationRequest(id="i", timestamp=1, name="N")
    resp = decode_response(
        _response(foo="bar", steps=[{"name": "S", "timestamp": 1, "result": "ERROR", "x": 1}])
    )
    assert resp.steps[0].result is StepResult.ERROR


@pytest.mark.parametrize("version", ["1.0", "7.0", "8.0", "9.0", "1.0.0", "", "weird"])
def test_any_version_string_is_accepted(version: str) -> None:
    assert decode_response(_response(version=version)).version == version


def test_missing_version_defaults() -> None:
    assert decode_response(_response(version=DROP)).version == "1.0"


def test_partial_decodes_without_result_code() -> None:
    resp = decode_response(_response(resultCode=DROP, resultDescription=DROP))
    assert resp.result_code is None
    assert not resp.is_final
    resp = decode_response(_response(resultCode=None, resultDescription=None, steps=DROP))
    assert resp.result_code is None
    assert resp.steps == ()


def test_null_optionals_count_as_absent() -> None:
    req = decode_request(_request(deviceId=None, path=None))
    assert req.device_id is None
    assert req.path is None


# --- bad inputs: one table, exact messages ----------------------------------------------------

REQ = "operation.request"
RESP = "operation.response"
STEP_RESULTS = "one of SUCCESSFUL, ERROR, SKIPPED, NOT_EXECUTED"
RESULT_CODES = (
    "one of SUCCESSFUL, ERROR_IN_PARAM, NOT_SUPPORTED, ERROR_PROCESSING, ALREADY_IN_PROGRESS, "
    "ERROR_TIMEOUT, TIMEOUT_CANCELLED, CANCELLED, CANCELLED_INTERNAL, OPERATION_PENDING"
)
TYPED = "an object with one type key (string, number, boolean, array, object)"


def _steps(*steps: Any) -> list[Any]:
    ok = {"name": "S", "timestamp": 1, "result": "SUCCESSFUL"}
    return [ok, ok, *steps]


BAD_REQUESTS: list[tuple[str, bytes | str, str]] = [
    ("not json", b"{", "body: expected a JSON document"),
    ("empty", b"", "body: expected a JSON document"),
    ("not utf-8", b'"\xff"', "body: expected a JSON document"),
    ("top array", b"[1, 2]", "body: expected an object, got an array of 2"),
    ("no operation", b"{}", "operation: expected an object, got nothing"),
    ("operation null", b'{"operation": null}', "operation: expected an object, got null"),
    ("no request", b'{"operation": {}}', f"{REQ}: expected an object, got nothing"),
    ("request string", b'{"operation": {"request": "x"}}', f'{REQ}: expected an object, got "x"'),
    ("id int", _request(id=12), f"{REQ}.id: expected a non-empty string, got 12"),
    ("id missing", _request(id=DROP), f"{REQ}.id: expected a non-empty string, got nothing"),
    ("id empty", _request(id=""), f'{REQ}.id: expected a non-empty string, got ""'),
    ("name missing", _request(name=DROP), f"{REQ}.name: expected a non-empty string, got nothing"),
    ("name null", _request(name=None), f"{REQ}.name: expected a non-empty string, got null"),
    ("ts string", _request(timestamp="1"), f'{REQ}.timestamp: expected an integer, got "1"'),
    ("ts bool", _request(timestamp=True), f"{REQ}.timestamp: expected an integer, got true"),
    ("ts float", _request(timestamp=1.5), f"{REQ}.timestamp: expected an integer, got 1.5"),
    ("ts missing", _request(timestamp=DROP), f"{REQ}.timestamp: expected an integer, got nothing"),
    (
        "ts huge",
        b'{"operation": {"request": {"id": "i", "name": "N", "timestamp": 1e30}}}',
        f"{REQ}.timestamp: expected an integer, got 1e+30",
    ),
    (
        "parameters string",
        _request(parameters="x"),
        f'{REQ}.parameters: expected an object or a typed array, got "x"',
    ),
    ("deviceId int", _request(deviceId=3), f"{REQ}.deviceId: expected a string, got 3"),
    ("path string", _request(path="gw"), f'{REQ}.path: expected an array of strings, got "gw"'),
    ("path item", _request(path=["a", 2]), f"{REQ}.path[1]: expected a string, got 2"),
    (
        "typed item not object",
        _request(parameters=[1]),
        f"{REQ}.parameters[0]: expected an object with name and value, got 1",
    ),
    (
        "typed name missing",
        _request(parameters=[{"value": {"string": "x"}}]),
        f"{REQ}.parameters[0].name: expected a non-empty string, got nothing",
    ),
    (
        "typed duplicate name",
        _request(
            parameters=[
                {"name": "a", "value": {"number": 1}},
                {"name": "a", "value": {"number": 2}},
            ]
        ),
        f'{REQ}.parameters[1].name: expected a name not used before, got "a"',
    ),
    (
        "typed value missing",
        _request(parameters=[{"name": "a"}]),
        f"{REQ}.parameters[0].value: expected {TYPED}, got nothing",
    ),
    (
        "typed value bare",
        _request(parameters=[{"name": "a", "value": "x"}]),
        f'{REQ}.parameters[0].value: expected {TYPED}, got "x"',
    ),
    (
        "typed value two keys",
        _request(parameters=[{"name": "a", "value": {"string": "x", "number": 1}}]),
        f"{REQ}.parameters[0].value: expected {TYPED}, got an object",
    ),
    (
        "typed unknown type",
        _request(parameters=[{"name": "a", "value": {"integer": 1}}]),
        f'{REQ}.parameters[0].value: expected a type key, one of string, number, boolean, array, object, got "integer"',
    ),
    (
        "typed string mismatch",
        _request(parameters=[{"name": "a", "value": {"string": 1}}]),
        f"{REQ}.parameters[0].value.string: expected a string, got 1",
    ),
    (
        "typed number bool",
        _request(parameters=[{"name": "a", "value": {"number": True}}]),
        f"{REQ}.parameters[0].value.number: expected a number, got true",
    ),
    (
        "typed boolean mismatch",
        _request(parameters=[{"name": "a", "value": {"boolean": 0}}]),
        f"{REQ}.parameters[0].value.boolean: expected a boolean, got 0",
    ),
    (
        "typed array mismatch",
        _request(parameters=[{"name": "a", "value": {"array": {}}}]),
        f"{REQ}.parameters[0].value.array: expected an array, got an object",
    ),
    (
        "typed object mismatch",
        _request(parameters=[{"name": "a", "value": {"object": []}}]),
        f"{REQ}.parameters[0].value.object: expected an object, got an array of 0",
    ),
]

BAD_RESPONSES: list[tuple[str, bytes | str, str]] = [
    ("not json", "nope", "body: expected a JSON document"),
    ("top string", b'"x"', 'body: expected an object, got "x"'),
    ("version number", _response(version=1.0), "version: expected a string, got 1.0"),
    ("no operation", b'{"version": "1.0"}', "operation: expected an object, got nothing"),
    ("no response", b'{"operation": {"request": {}}}', f"{RESP}: expected an object, got nothing"),
    ("id int", _response(id=12), f"{RESP}.id: expected a non-empty string, got 12"),
    (
        "name missing",
        _response(name=DROP),
        f"{RESP}.name: expected a non-empty string, got nothing",
    ),
    (
        "ts missing",
        _response(timestamp=DROP),
        f"{RESP}.timestamp: expected an integer, got nothing",
    ),
    (
        "deviceId list",
        _response(deviceId=[]),
        f"{RESP}.deviceId: expected a string, got an array of 0",
    ),
    (
        "result code unknown",
        _response(resultCode="OK"),
        f'{RESP}.resultCode: expected {RESULT_CODES}, got "OK"',
    ),
    (
        "result code int",
        _response(resultCode=0),
        f"{RESP}.resultCode: expected {RESULT_CODES}, got 0",
    ),
    (
        "description in partial",
        _response(resultCode=DROP),
        f'{RESP}.resultDescription: expected no resultDescription in a partial response (one without resultCode), got "ok"',
    ),
    (
        "description int",
        _response(resultDescription=5),
        f"{RESP}.resultDescription: expected a string, got 5",
    ),
    (
        "steps object",
        _response(steps={}),
        f"{RESP}.steps: expected an array of steps, got an object",
    ),
    ("step not object", _response(steps=_steps(3)), f"{RESP}.steps[2]: expected an object, got 3"),
    (
        "step result unknown",
        _response(steps=_steps({"name": "S", "timestamp": 1, "result": "OK"})),
        f'{RESP}.steps[2].result: expected {STEP_RESULTS}, got "OK"',
    ),
    (
        "step result missing",
        _response(steps=_steps({"name": "S", "timestamp": 1})),
        f"{RESP}.steps[2].result: expected {STEP_RESULTS}, got nothing",
    ),
    (
        "step name empty",
        _response(steps=[{"name": "", "timestamp": 1, "result": "ERROR"}]),
        f'{RESP}.steps[0].name: expected a non-empty string, got ""',
    ),
    (
        "step timestamp bool",
        _response(steps=[{"name": "S", "timestamp": False, "result": "ERROR"}]),
        f"{RESP}.steps[0].timestamp: expected an integer, got false",
    ),
    (
        "step description",
        _response(steps=[{"name": "S", "timestamp": 1, "result": "ERROR", "description": {}}]),
        f"{RESP}.steps[0].description: expected a string, got an object",
    ),
    (
        "step response not array",
        _response(steps=[{"name": "S", "timestamp": 1, "result": "ERROR", "response": "x"}]),
        f'{RESP}.steps[0].response: expected an array of variable results, got "x"',
    ),
    (
        "variable not object",
        _response(
            steps=_steps({"name": "S", "timestamp": 1, "result": "ERROR", "response": [None]})
        ),
        f"{RESP}.steps[2].response[0]: expected an object, got null",
    ),
    (
        "variable name missing",
        _response(
            steps=[
                {
                    "name": "S",
                    "timestamp": 1,
                    "result": "ERROR",
                    "response": [
                        {"variableName": "a", "resultCode": "SUCCESS"},
                        {"variableValue": 1, "resultCode": "SUCCESS"},
                    ],
                }
            ]
        ),
        f"{RESP}.steps[0].response[1].variableName: expected a non-empty string, got nothing",
    ),
    (
        "variable result code",
        _response(
            steps=[
                {
                    "name": "S",
                    "timestamp": 1,
                    "result": "ERROR",
                    "response": [{"variableName": "a", "resultCode": "SUCCESSFUL"}],
                }
            ]
        ),
        f'{RESP}.steps[0].response[0].resultCode: expected one of SUCCESS, ERROR, NON_EXISTENT, got "SUCCESSFUL"',
    ),
    (
        "variable description",
        _response(
            steps=[
                {
                    "name": "S",
                    "timestamp": 1,
                    "result": "ERROR",
                    "response": [
                        {"variableName": "a", "resultCode": "ERROR", "resultDescription": 1}
                    ],
                }
            ]
        ),
        f"{RESP}.steps[0].response[0].resultDescription: expected a string, got 1",
    ),
    ("path item", _response(path=[None]), f"{RESP}.path[0]: expected a string, got null"),
]

BAD_PENDING: list[tuple[str, bytes | str, str]] = [
    ("not json", b"", "body: expected a JSON document"),
    ("object", b"{}", "body: expected an array of request envelopes, got an object"),
    ("item not object", b"[[]]", "[0]: expected an object, got an array of 0"),
    (
        "second item bad",
        b"[" + _request() + b"," + _request(id=12) + b"]",
        f"[1].{REQ}.id: expected a non-empty string, got 12",
    ),
    ("item without operation", b"[{}]", "[0].operation: expected an object, got nothing"),
]


def _iot(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "version": "1.0.0",
        "datastreams": [{"id": "t", "datapoints": [{"at": 1, "value": 1}]}],
    }
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not DROP})


BAD_IOT: list[tuple[str, bytes | str, str]] = [
    ("not json", b"{,}", "body: expected a JSON document"),
    ("array", b"[]", "body: expected an object, got an array of 0"),
    ("version int", _iot(version=1), "version: expected a string, got 1"),
    ("device int", _iot(device=1), "device: expected a string, got 1"),
    ("path item", _iot(path=["g", 1]), "path[1]: expected a string, got 1"),
    (
        "no datastreams",
        _iot(datastreams=DROP),
        "datastreams: expected an array of datastreams, got nothing",
    ),
    ("stream not object", _iot(datastreams=["t"]), 'datastreams[0]: expected an object, got "t"'),
    (
        "stream id",
        _iot(datastreams=[{"id": "a", "datapoints": []}, {"datapoints": []}]),
        "datastreams[1].id: expected a non-empty string, got nothing",
    ),
    (
        "no datapoints",
        _iot(datastreams=[{"id": "a"}]),
        "datastreams[0].datapoints: expected an array of datapoints, got nothing",
    ),
    (
        "datapoint not object",
        _iot(datastreams=[{"id": "a", "datapoints": [1]}]),
        "datastreams[0].datapoints[0]: expected an object, got 1",
    ),
    (
        "datapoint without value",
        _iot(datastreams=[{"id": "a", "datapoints": [{"at": 1}]}]),
        "datastreams[0].datapoints[0].value: expected a value, got nothing",
    ),
    (
        "datapoint at string",
        _iot(datastreams=[{"id": "a", "datapoints": [{"at": "now", "value": 1}]}]),
        'datastreams[0].datapoints[0].at: expected an integer, got "now"',
    ),
]


def _check(decode: Any, data: bytes | str, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request(data: bytes | str, message: str) -> None:
    _check(decode_request, data, message)


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_RESPONSES], ids=[c[0] for c in BAD_RESPONSES]
)
def test_bad_response(data: bytes | str, message: str) -> None:
    _check(decode_response, data, message)


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_PENDING], ids=[c[0] for c in BAD_PENDING]
)
def test_bad_pending(data: bytes | str, message: str) -> None:
    _check(decode_pending, data, message)


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in BAD_IOT], ids=[c[0] for c in BAD_IOT])
def test_bad_iot(data: bytes | str, message: str) -> None:
    _check(decode_iot, data, message)


def test_error_attributes_name_the_field() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(_request(id=12))
    assert info.value.field == "operation.request.id"
    assert info.value.expected == "a non-empty string"
    assert info.value.got == 12


def test_missing_field_is_reported_as_missing_not_null() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(_request(name=DROP))
    assert info.value.got is MISSING
    with pytest.raises(ProtocolError) as info:
        decode_request(_request(name=None))
    assert info.value.got is None


def test_invalid_json_keeps_the_parser_error_as_cause() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_response(b"{")
    assert isinstance(info.value.__cause__, orjson.JSONDecodeError)


def test_obj_decoders_reject_non_objects() -> None:
    for decode in (decode_request_obj, decode_response_obj):
        with pytest.raises(ProtocolError, match=r"^body: expected an object, got null$"):
            decode(None)
    with pytest.raises(ProtocolError, match=r"^body: expected an array of request envelopes"):
        decode_pending_obj({})
