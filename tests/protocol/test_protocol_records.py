"""Record invariants checked in ``__post_init__``, conveniences, and reprs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from loadgen.protocol import (
    DEVICE_RESULT_CODES,
    PLATFORM_RESULT_CODES,
    OperationRequest,
    OperationResponse,
    ResultCode,
    Step,
    StepResult,
    VariableResult,
    VariableResultCode,
)


def test_enums_are_the_documented_values() -> None:
    assert [m.value for m in StepResult] == ["SUCCESSFUL", "ERROR", "SKIPPED", "NOT_EXECUTED"]
    assert [m.value for m in VariableResultCode] == ["SUCCESS", "ERROR", "NON_EXISTENT"]
    assert {m.value for m in DEVICE_RESULT_CODES} == {
        "SUCCESSFUL",
        "ERROR_IN_PARAM",
        "NOT_SUPPORTED",
        "ERROR_PROCESSING",
        "ALREADY_IN_PROGRESS",
    }
    assert {m.value for m in PLATFORM_RESULT_CODES} == {
        "ERROR_TIMEOUT",
        "TIMEOUT_CANCELLED",
        "CANCELLED",
        "CANCELLED_INTERNAL",
        "OPERATION_PENDING",
    }
    assert ResultCode.SUCCESSFUL == "SUCCESSFUL"


def test_records_are_frozen_slotted_keyword_only() -> None:
    req = OperationRequest(id="i", timestamp=1, name="N")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.id = "j"  # type: ignore[misc]
    assert not hasattr(req, "__dict__")
    with pytest.raises(TypeError):
        OperationRequest("i", 1, "N")  # type: ignore[call-arg]


def test_wire_strings_and_lists_are_normalised() -> None:
    step = Step(name="S", timestamp=1, result="ERROR", response=[])  # type: ignore[arg-type]
    assert step.result is StepResult.ERROR
    assert step.response == ()
    resp = OperationResponse(
        id="i",
        timestamp=1,
        name="N",
        result_code="SUCCESSFUL",  # type: ignore[arg-type]
        steps=[step],  # type: ignore[arg-type]
        path=["g"],  # type: ignore[arg-type]
    )
    assert resp.result_code is ResultCode.SUCCESSFUL
    assert resp.steps == (step,)
    assert resp.path == ("g",)
    var = VariableResult(variable_name="v", result_code="NON_EXISTENT")  # type: ignore[arg-type]
    assert var.result_code is VariableResultCode.NON_EXISTENT


def test_parameters_become_a_plain_dict() -> None:
    from types import MappingProxyType

    req = OperationRequest(id="i", timestamp=1, name="N", parameters=MappingProxyType({"a": 1}))
    assert type(req.parameters) is dict
    assert req.parameters == {"a": 1}


def test_records_with_json_values_are_hashable() -> None:
    req = OperationRequest(id="i", timestamp=1, name="N", parameters={"a": [1]})
    var = VariableResult(
        variable_name="v", variable_value=[1], result_code=VariableResultCode.SUCCESS
    )
    assert hash(req) == hash(OperationRequest(id="i", timestamp=1, name="N", parameters={"b": 2}))
    assert isinstance(hash(var), int)


BAD_RECORDS: list[tuple[str, type, dict[str, Any], type[Exception]]] = [
    ("request empty id", OperationRequest, {"id": "", "timestamp": 1, "name": "N"}, ValueError),
    ("request int id", OperationRequest, {"id": 1, "timestamp": 1, "name": "N"}, TypeError),
    ("request bool ts", OperationRequest, {"id": "i", "timestamp": True, "name": "N"}, TypeError),
    ("request float ts", OperationRequest, {"id": "i", "timestamp": 1.0, "name": "N"}, TypeError),
    ("request no name", OperationRequest, {"id": "i", "timestamp": 1, "name": ""}, ValueError),
    (
        "request params list",
        OperationRequest,
        {"id": "i", "timestamp": 1, "name": "N", "parameters": []},
        TypeError,
    ),
    (
        "request bad form",
        OperationRequest,
        {"id": "i", "timestamp": 1, "name": "N", "parameters_form": "typed"},
        ValueError,
    ),
    (
        "request path str",
        OperationRequest,
        {"id": "i", "timestamp": 1, "name": "N", "path": "gw"},
        TypeError,
    ),
    (
        "request path item",
        OperationRequest,
        {"id": "i", "timestamp": 1, "name": "N", "path": ("gw", 1)},
        TypeError,
    ),
    (
        "partial with description",
        OperationResponse,
        {"id": "i", "timestamp": 1, "name": "N", "result_description": "x"},
        ValueError,
    ),
    (
        "unknown result code",
        OperationResponse,
        {"id": "i", "timestamp": 1, "name": "N", "result_code": "OK"},
        ValueError,
    ),
    (
        "steps not steps",
        OperationResponse,
        {"id": "i", "timestamp": 1, "name": "N", "steps": ("S",)},
        TypeError,
    ),
    (
        "version int",
        OperationResponse,
        {"id": "i", "timestamp": 1, "name": "N", "version": 1},
        TypeError,
    ),
    ("step bad result", Step, {"name": "S", "timestamp": 1, "result": "OK"}, ValueError),
    (
        "step response item",
        Step,
        {"name": "S", "timestamp": 1, "result": "ERROR", "response": ({},)},
        TypeError,
    ),
    ("variable no name", VariableResult, {"variable_name": "", "result_code": "ERROR"}, ValueError),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error"), [c[1:] for c in BAD_RECORDS], ids=[c[0] for c in BAD_RECORDS]
)
def test_bad_records(cls: type, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        cls(**kwargs)


def test_reprs_show_the_state() -> None:
    req = OperationRequest(
        id="i", timestamp=5, name="UPDATE", parameters={"b": 1, "a": 2}, device_id="d"
    )
    assert repr(req) == "OperationRequest(id='i' UPDATE at=5 parameters=['a', 'b'] device='d')"
    partial = OperationResponse(
        id="i",
        timestamp=6,
        name="UPDATE",
        steps=(Step(name="BEGINUPDATE", timestamp=6, result=StepResult.SUCCESSFUL),),
    )
    assert (
        repr(partial)
        == "OperationResponse(id='i' UPDATE partial at=6 steps=[BEGINUPDATE:SUCCESSFUL])"
    )
    final = OperationResponse(
        id="i", timestamp=7, name="X", result_code=ResultCode.NOT_SUPPORTED, version="8.0"
    )
    assert repr(final) == "OperationResponse(id='i' X NOT_SUPPORTED at=7 version='8.0')"
    var = VariableResult(
        variable_name="v", variable_value=3, result_code=VariableResultCode.SUCCESS
    )
    assert repr(var) == "VariableResult(v=3 SUCCESS)"
