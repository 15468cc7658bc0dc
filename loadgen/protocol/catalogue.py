"""The operation catalogue of PROTOCOL.md §6: which operations exist, what a platform sends
for each by default, and which steps and per-variable results a device answers with.

Both sides use it: the platform side to build plausible requests when a scenario names an
operation without parameters, the virtual device to answer with realistic steps. It is data
plus a few pure functions; timing, failures and flows belong to the scenario, not here.

Everything handed out is a fresh object, so callers may mutate what they get.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from loadgen.protocol.enums import ResultCode, VariableResultCode
from loadgen.protocol.records import VariableResult

REBOOT_EQUIPMENT: Final = "REBOOT_EQUIPMENT"
REFRESH_INFO: Final = "REFRESH_INFO"
EQUIPMENT_DIAGNOSTIC: Final = "EQUIPMENT_DIAGNOSTIC"
SET_CLOCK_EQUIPMENT: Final = "SET_CLOCK_EQUIPMENT"
GET_DEVICE_PARAMETERS: Final = "GET_DEVICE_PARAMETERS"
SET_DEVICE_PARAMETERS: Final = "SET_DEVICE_PARAMETERS"
UPDATE: Final = "UPDATE"

#: Every catalogue name, in the order of PROTOCOL.md §6.
OPERATION_NAMES: Final[tuple[str, ...]] = (
    REBOOT_EQUIPMENT,
    REFRESH_INFO,
    EQUIPMENT_DIAGNOSTIC,
    SET_CLOCK_EQUIPMENT,
    GET_DEVICE_PARAMETERS,
    SET_DEVICE_PARAMETERS,
    UPDATE,
)
_KNOWN: Final = frozenset(OPERATION_NAMES)

#: Operations of which a device runs only one at a time: a second one while the first runs
#: is answered ``ALREADY_IN_PROGRESS``.
EXCLUSIVE_OPERATIONS: Final = frozenset({REBOOT_EQUIPMENT, UPDATE})

#: The default answer to a name outside the catalogue (with ``steps: []``).
UNKNOWN_OPERATION_RESULT: Final = ResultCode.NOT_SUPPORTED

#: The step names of UPDATE, in order; DOWNLOADFILE repeats once per deployment element.
BEGINUPDATE: Final = "BEGINUPDATE"
DOWNLOADFILE: Final = "DOWNLOADFILE"
BEGININSTALL: Final = "BEGININSTALL"
ENDINSTALL: Final = "ENDINSTALL"
ENDUPDATE: Final = "ENDUPDATE"

#: The variables a virtual device knows, with the values it reports for GET_DEVICE_PARAMETERS.
DEFAULT_VARIABLES: Final[Mapping[str, Any]] = {
    "id": "virtual-device",
    "model": "LOADGEN-VD1",
    "serialNumber": "SN-0000000",
    "firmwareVersion": "1.0.0",
    "softwareVersion": "1.0.0",
    "reportingInterval": 60,
    "temperature": 21.5,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_known(name: str) -> bool:
    """True for the seven catalogue names of PROTOCOL.md §6."""
    return name in _KNOWN


def clock_parameters(timestamp: int) -> dict[str, Any]:
    """SET_CLOCK_EQUIPMENT parameters for ``timestamp`` (ms since the epoch), in UTC."""
    moment = _EPOCH + timedelta(milliseconds=timestamp)
    return {
        "datetime": {
            "date": moment.strftime("%Y-%m-%d"),
            "time": moment.strftime("%H:%M:%S"),
            "timezone": 0,
            "dst": 0,
        }
    }


def deployment_element(index: int) -> dict[str, Any]:
    """One plausible UPDATE ``deploymentElements`` entry (``index`` counts from 0)."""
    return {
        "name": f"element-{index + 1}",
        "version": "1.0.1",
        "type": "FIRMWARE",
        "path": "/opt/device",
        "order": index + 1,
        "operation": "INSTALL",
        "option": "MANDATORY",
        "downloadUrl": f"https://updates.example.invalid/element-{index + 1}.bin",
    }


def update_parameters(
    elements: int = 1, *, bundle_name: str = "loadgen-bundle", bundle_version: str = "1.0.1"
) -> dict[str, Any]:
    """UPDATE parameters with ``elements`` deployment elements."""
    if elements < 0:
        raise ValueError(f"elements must be >= 0, got {elements}")
    return {
        "bundleName": bundle_name,
        "bundleVersion": bundle_version,
        "deploymentElements": [deployment_element(i) for i in range(elements)],
    }


def default_parameters(name: str, *, timestamp: int) -> dict[str, Any]:
    """What a platform sends for ``name`` when the scenario gives no parameters.

    ``timestamp`` (ms since the epoch, normally the request's own) sets SET_CLOCK_EQUIPMENT's
    date and time; the other operations ignore it. A name outside the catalogue gets ``{}``.
    """
    if name in (REBOOT_EQUIPMENT, EQUIPMENT_DIAGNOSTIC):
        return {"type": "HARDWARE"}
    if name == SET_CLOCK_EQUIPMENT:
        return clock_parameters(timestamp)
    if name == GET_DEVICE_PARAMETERS:
        return {"variableList": ["id", "model", "firmwareVersion"]}
    if name == SET_DEVICE_PARAMETERS:
        return {"variableList": [{"name": "reportingInterval", "value": 60}]}
    if name == UPDATE:
        return update_parameters()
    return {}


def default_steps(name: str, parameters: Mapping[str, Any]) -> tuple[str, ...]:
    """The step names a device reports for ``name``, in order.

    UPDATE: BEGINUPDATE, one DOWNLOADFILE per ``deploymentElements`` entry, BEGININSTALL,
    ENDINSTALL, ENDUPDATE. Other catalogue operations: one step named like the operation.
    Names outside the catalogue: no steps.
    """
    if name == UPDATE:
        elements = parameters.get("deploymentElements")
        downloads = len(elements) if isinstance(elements, list) else 0
        return (BEGINUPDATE, *([DOWNLOADFILE] * downloads), BEGININSTALL, ENDINSTALL, ENDUPDATE)
    if name in _KNOWN:
        return (name,)
    return ()


def _variable_names(parameters: Mapping[str, Any]) -> list[object]:
    names = parameters.get("variableList")
    return names if isinstance(names, list) else []


def variable_results(
    name: str, parameters: Mapping[str, Any], *, variables: Mapping[str, Any] | None = None
) -> tuple[VariableResult, ...]:
    """Plausible per-variable results for the step of GET/SET_DEVICE_PARAMETERS.

    ``variables`` is the device's variable store (``DEFAULT_VARIABLES`` when ``None``).
    GET: a known variable -> SUCCESS with its value, an unknown one -> NON_EXISTENT. SET: an
    entry ``{"name": n, "value": v}`` -> SUCCESS echoing ``v``, an entry without a value ->
    ERROR. Malformed entries (no usable name) are skipped. Other operations -> ``()``.
    """
    store = DEFAULT_VARIABLES if variables is None else variables
    out: list[VariableResult] = []
    if name == GET_DEVICE_PARAMETERS:
        for entry in _variable_names(parameters):
            var = entry.get("name") if isinstance(entry, dict) else entry
            if not isinstance(var, str) or not var:
                continue
            if var in store:
                out.append(
                    VariableResult(
                        variable_name=var,
                        variable_value=store[var],
                        result_code=VariableResultCode.SUCCESS,
                        result_description="Success",
                    )
                )
            else:
                out.append(
                    VariableResult(
                        variable_name=var,
                        result_code=VariableResultCode.NON_EXISTENT,
                        result_description="Variable does not exist",
                    )
                )
    elif name == SET_DEVICE_PARAMETERS:
        for entry in _variable_names(parameters):
            if not isinstance(entry, dict):
                continue
            var = entry.get("name")
            if not isinstance(var, str) or not var:
                continue
            if "value" in entry:
                out.append(
                    VariableResult(
                        variable_name=var,
                        variable_value=entry["value"],
                        result_code=VariableResultCode.SUCCESS,
                        result_description="Success",
                    )
                )
            else:
                out.append(
                    VariableResult(
                        variable_name=var,
                        result_code=VariableResultCode.ERROR,
                        result_description="No value given",
                    )
                )
    return tuple(out)


def unknown_operation(name: str) -> str:
    """What to tell a user who wrote an operation name the catalogue does not have."""
    close = difflib.get_close_matches(name.upper(), OPERATION_NAMES, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"unknown operation {name!r}; {hint}the catalogue has {', '.join(OPERATION_NAMES)} "
        "(a custom operation needs custom = true)"
    )
