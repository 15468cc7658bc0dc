"""Codec tables: the literal examples of PROTOCOL.md, round trips and exact encodings.
(Bad inputs are in test_protocol_decode_errors.py.)"""

from __future__ import annotations

import orjson
import pytest

from loadgen.protocol import (
    OperationRequest,
    OperationResponse,
    ResultCode,
    Step,
    StepResult,
    VariableResult,
    VariableResultCode,
    decode_iot,
    decode_pending,
    decode_request,
    decode_request_obj,
    decode_response,
    decode_response_obj,
    encode_pending,
    encode_request,
    encode_response,
)

ID = "072b08d1-0fcb-4a0c-a2d8-99773f9b9327"

# --- the literal examples of PROTOCOL.md ------------------------------------------------------

REQUEST_EXAMPLE = b"""{"operation": {"request": {
    "id": "072b08d1-0fcb-4a0c-a2d8-99773f9b9327",
    "timestamp": 1432454277950,
    "name": "REBOOT_EQUIPMENT",
    "parameters": {"type": "HARDWARE"}}}}"""

RESPONSE_EXAMPLE = b"""{"version": "1.0", "operation": {"response": {
    "id": "072b08d1-0fcb-4a0c-a2d8-99773f9b9327",
    "timestamp": 1432454278950,
    "deviceId": "dev-000123",
    "name": "REBOOT_EQUIPMENT",
    "resultCode": "SUCCESSFUL",
    "resultDescription": "Success",
    "steps": [{"name": "REBOOT_EQUIPMENT", "timestamp": 1432454278950,
               "result": "SUCCESSFUL", "description": "Rebooting"}]}}}"""

TYPED_PARAMETERS_EXAMPLE = (
    b'{"operation": {"request": {"id": "u1", "timestamp": 1, "name": "UPDATE", "parameters": '
    b'[{"name": "bundleName", "value": {"string": "b1"}}, '
    b'{"name": "deploymentElements", "value": {"array": [{"name": "e1"}]}}]}}}'
)

IOT_EXAMPLE = (
    b'{"version": "1.0.0", "device": "sub-id (optional)", "path": ["gateway"], "datastreams": '
    b'[{"id": "temperature", "feed": "default", "datapoints": [{"at": 1614239127235, "value": 21.5}]}]}'
)


def test_decode_request_example() -> None:
    assert decode_request(REQUEST_EXAMPLE) == OperationRequest(
        id=ID, timestamp=1432454277950, name="REBOOT_EQUIPMENT", parameters={"type": "HARDWARE"}
    )


def test_decode_response_example() -> None:
    resp = decode_response(RESPONSE_EXAMPLE)
    assert resp == OperationResponse(
        id=ID,
        timestamp=1432454278950,
        device_id="dev-000123",
        name="REBOOT_EQUIPMENT",
        result_code=ResultCode.SUCCESSFUL,
        result_description="Success",
        steps=(
            Step(
                name="REBOOT_EQUIPMENT",
                timestamp=1432454278950,
                result=StepResult.SUCCESSFUL,
                description="Rebooting",
            ),
        ),
    )
    assert resp.is_final
    # Re-encoding gives the same JSON value (key order and whitespace aside).
    assert orjson.loads(encode_response(resp)) == orjson.loads(RESPONSE_EXAMPLE)


def test_encode_request_example_is_the_documented_json() -> None:
    assert orjson.loads(encode_request(decode_request(REQUEST_EXAMPLE))) == orjson.loads(
        REQUEST_EXAMPLE
    )


def test_decode_typed_array_parameters_example() -> None:
    req = decode_request(TYPED_PARAMETERS_EXAMPLE)
    assert req.parameters == {"bundleName": "b1", "deploymentElements": [{"name": "e1"}]}
    assert type(req.parameters) is dict
    assert req.parameters_form == "array"
    assert orjson.loads(encode_request(req)) == orjson.loads(TYPED_PARAMETERS_EXAMPLE)


def test_decode_iot_example() -> None:
    assert decode_iot(IOT_EXAMPLE) == orjson.loads(IOT_EXAMPLE)


# --- round trips ------------------------------------------------------------------------------

REQUESTS = [
    OperationRequest(id="r1", timestamp=0, name="REFRESH_INFO"),
    OperationRequest(id="r2", timestamp=-5, name="REBOOT_EQUIPMENT", parameters={"type": "SOFT"}),
    OperationRequest(
        id="r3",
        timestamp=1700000000000,
        name="SET_DEVICE_PARAMETERS",
        parameters={"variableList": [{"name": "a", "value": None}], "x": {"y": [1, 2.5]}},
        device_id="sub-1",
        path=("gw-1", "gw-2"),
    ),
    OperationRequest(
        id="r4",
        timestamp=1,
        name="UPDATE",
        parameters={"s": "x", "n": 3, "f": 0.5, "b": False, "a": [1, "2"], "o": {"k": None}},
        parameters_form="array",
    ),
    OperationRequest(id="r5", timestamp=1, name="CUSTOM", parameters_form="array"),
    OperationRequest(id="r6", timestamp=1, name="CUSTOM", path=()),
]

RESPONSES = [
    # final, simple
    OperationResponse(id="a", timestamp=1, name="REFRESH_INFO", result_code=ResultCode.SUCCESSFUL),
    # partial with one step, deviceId and path
    OperationResponse(
        id="b",
        timestamp=2,
        device_id="dev",
        name="UPDATE",
        steps=(Step(name="BEGINUPDATE", timestamp=2, result=StepResult.SUCCESSFUL),),
        path=("gw",),
    ),
    # final with per-variable results and another version
    OperationResponse(
        id="c",
        timestamp=3,
        name="GET_DEVICE_PARAMETERS",
        result_code=ResultCode.ERROR_PROCESSING,
        result_description="partly failed",
        version="8.0",
        steps=(
            Step(
                name="GET_DEVICE_PARAMETERS",
                timestamp=3,
                result=StepResult.ERROR,
                description="d",
                response=(
                    VariableResult(
                        variable_name="id",
                        variable_value="dev",
                        result_code=VariableResultCode.SUCCESS,
                        result_description="Success",
                    ),
                    VariableResult(variable_name="zz", result_code=VariableResultCode.NON_EXISTENT),
                    VariableResult(
                        variable_name="o",
                        variable_value={"k": [1, False]},
                        result_code=VariableResultCode.ERROR,
                    ),
                ),
            ),
            Step(name="X", timestamp=4, result=StepResult.SKIPPED, response=()),
        ),
    ),
    # unknown operation: NOT_SUPPORTED, no steps
    OperationResponse(id="d", timestamp=5, name="FOO", result_code=ResultCode.NOT_SUPPORTED),
    # a platform-assigned code must be accepted too
    OperationResponse(id="e", timestamp=6, name="FOO", result_code=ResultCode.ERROR_TIMEOUT),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.id)
def test_request_round_trip(req: OperationRequest) -> None:
    data = encode_request(req)
    assert decode_request(data) == req
    assert decode_request(data.decode()) == req
    assert decode_request_obj(orjson.loads(data)) == req


@pytest.mark.parametrize("resp", RESPONSES, ids=lambda r: r.id)
def test_response_round_trip(resp: OperationResponse) -> None:
    data = encode_response(resp)
    assert decode_response(data) == resp
    assert decode_response_obj(orjson.loads(data)) == resp


def test_pending_round_trip() -> None:
    data = encode_pending(REQUESTS)
    assert isinstance(orjson.loads(data), list)
    assert decode_pending(data) == REQUESTS
    assert encode_pending([]) == b"[]"
    assert decode_pending(b"[]") == []


# --- exact encodings --------------------------------------------------------------------------


def test_encode_request_omits_absent_optionals() -> None:
    req = OperationRequest(id="i", timestamp=7, name="REFRESH_INFO")
    assert encode_request(req) == (
        b'{"operation":{"request":{"id":"i","timestamp":7,"name":"REFRESH_INFO","parameters":{}}}}'
    )


def test_encode_request_typed_array_form() -> None:
    req = OperationRequest(
        id="i",
        timestamp=7,
        name="UPDATE",
        parameters={"s": "b1", "n": 2, "b": True, "a": [1], "o": {}},
        parameters_form="array",
        device_id="d",
        path=("g",),
    )
    assert orjson.loads(encode_request(req))["operation"]["request"] == {
        "id": "i",
        "timestamp": 7,
        "name": "UPDATE",
        "parameters": [
            {"name": "s", "value": {"string": "b1"}},
            {"name": "n", "value": {"number": 2}},
            {"name": "b", "value": {"boolean": True}},
            {"name": "a", "value": {"array": [1]}},
            {"name": "o", "value": {"object": {}}},
        ],
        "deviceId": "d",
        "path": ["g"],
    }


def test_encode_request_typed_array_cannot_hold_null() -> None:
    req = OperationRequest(
        id="i", timestamp=7, name="X", parameters={"v": None}, parameters_form="array"
    )
    with pytest.raises(ValueError, match="'v'"):
        encode_request(req)


def test_partial_response_has_no_result_keys() -> None:
    partial = OperationResponse(
        id="i",
        timestamp=9,
        device_id="d",
        name="UPDATE",
        steps=(Step(name="BEGINUPDATE", timestamp=8, result=StepResult.SUCCESSFUL),),
    )
    assert not partial.is_final
    assert encode_response(partial) == (
        b'{"version":"1.0","operation":{"response":{"id":"i","timestamp":9,"deviceId":"d",'
        b'"name":"UPDATE","steps":[{"name":"BEGINUPDATE","timestamp":8,"result":"SUCCESSFUL"}]}}}'
    )


def test_variable_results_use_camel_case_keys() -> None:
    resp = RESPONSES[2]
    step = orjson.loads(encode_response(resp))["operation"]["response"]["steps"][0]
    assert step["response"] == [
        {
            "variableName": "id",
            "variableValue": "dev",
            "resultCode": "SUCCESS",
            "resultDescription": "Success",
        },
        {"variableName": "zz", "resultCode": "NON_EXISTENT"},
        {"variableName": "o", "variableValue": {"k": [1, False]}, "resultCode": "ERROR"},
    ]
