"""The operation catalogue of PROTOCOL.md §6."""

from __future__ import annotations

import pytest

from loadgen.protocol import (
    EXCLUSIVE_OPERATIONS,
    OPERATION_NAMES,
    VariableResult,
    VariableResultCode,
    default_parameters,
    default_steps,
    is_known,
    update_parameters,
    variable_results,
)

ONE_STEP = [
    "REBOOT_EQUIPMENT",
    "REFRESH_INFO",
    "EQUIPMENT_DIAGNOSTIC",
    "SET_CLOCK_EQUIPMENT",
    "GET_DEVICE_PARAMETERS",
    "SET_DEVICE_PARAMETERS",
]


def test_names() -> None:
    assert set(OPERATION_NAMES) == {*ONE_STEP, "UPDATE"}
    assert all(is_known(name) for name in OPERATION_NAMES)
    assert not is_known("CUSTOM")
    assert not is_known("update")
    assert frozenset({"REBOOT_EQUIPMENT", "UPDATE"}) == EXCLUSIVE_OPERATIONS


def test_update_steps_with_three_elements() -> None:
    params = update_parameters(3)
    assert len(params["deploymentElements"]) == 3
    assert default_steps("UPDATE", params) == (
        "BEGINUPDATE",
        "DOWNLOADFILE",
        "DOWNLOADFILE",
        "DOWNLOADFILE",
        "BEGININSTALL",
        "ENDINSTALL",
        "ENDUPDATE",
    )


def test_update_steps_without_elements() -> None:
    expected = ("BEGINUPDATE", "BEGININSTALL", "ENDINSTALL", "ENDUPDATE")
    assert default_steps("UPDATE", {}) == expected
    assert default_steps("UPDATE", {"deploymentElements": "x"}) == expected
    with pytest.raises(ValueError, match="elements"):
        update_parameters(-1)


@pytest.mark.parametrize("name", ONE_STEP)
def test_one_step_operations(name: str) -> None:
    assert default_steps(name, default_parameters(name, timestamp=0)) == (name,)


def test_unknown_operation_has_no_steps_nor_parameters() -> None:
    assert default_steps("CUSTOM", {"x": 1}) == ()
    assert default_parameters("CUSTOM", timestamp=0) == {}


def test_default_parameters() -> None:
    assert default_parameters("REBOOT_EQUIPMENT", timestamp=0) == {"type": "HARDWARE"}
    assert default_parameters("EQUIPMENT_DIAGNOSTIC", timestamp=0) == {"type": "HARDWARE"}
    assert default_parameters("REFRESH_INFO", timestamp=0) == {}
    assert default_parameters("UPDATE", timestamp=0)["bundleName"]
    # 2015-05-24T08:04:37.950Z
    assert default_parameters("SET_CLOCK_EQUIPMENT", timestamp=1432454677950) == {
        "datetime": {"date": "2015-05-24", "time": "08:04:37", "timezone": 0, "dst": 0}
    }
    # fresh objects every time
    first = default_parameters("GET_DEVICE_PARAMETERS", timestamp=0)
    first["variableList"].append("x")
    assert "x" not in default_parameters("GET_DEVICE_PARAMETERS", timestamp=0)["variableList"]


def test_get_device_parameters_results() -> None:
    results = variable_results(
        "GET_DEVICE_PARAMETERS", {"variableList": ["id", "nope", {"name": "model"}, 3, ""]}
    )
    assert [(r.variable_name, r.result_code) for r in results] == [
        ("id", VariableResultCode.SUCCESS),
        ("nope", VariableResultCode.NON_EXISTENT),
        ("model", VariableResultCode.SUCCESS),
    ]
    assert results[1].variable_value is None
    custom = variable_results(
        "GET_DEVICE_PARAMETERS", {"variableList": ["a"]}, variables={"a": [1, 2]}
    )
    assert custom == (
        VariableResult(
            variable_name="a",
            variable_value=[1, 2],
            result_code=VariableResultCode.SUCCESS,
            result_description="Success",
        ),
    )


def test_set_device_parameters_results() -> None:
    results = variable_results(
        "SET_DEVICE_PARAMETERS",
        {"variableList": [{"name": "a", "value": 5}, {"name": "b"}, "c", {"value": 1}]},
    )
    assert [(r.variable_name, r.variable_value, r.result_code) for r in results] == [
        ("a", 5, VariableResultCode.SUCCESS),
        ("b", None, VariableResultCode.ERROR),
    ]


def test_default_parameters_produce_all_success() -> None:
    for name in ("GET_DEVICE_PARAMETERS", "SET_DEVICE_PARAMETERS"):
        results = variable_results(name, default_parameters(name, timestamp=0))
        assert results
        assert all(r.result_code is VariableResultCode.SUCCESS for r in results)


def test_other_operations_have_no_variable_results() -> None:
    assert variable_results("REBOOT_EQUIPMENT", {"variableList": ["id"]}) == ()
    assert variable_results("GET_DEVICE_PARAMETERS", {}) == ()
    assert variable_results("GET_DEVICE_PARAMETERS", {"variableList": "id"}) == ()
