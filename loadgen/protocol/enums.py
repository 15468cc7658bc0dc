"""The closed vocabularies of PROTOCOL.md §4: operation result codes, step results and
per-variable result codes.

They are ``StrEnum`` so a member compares equal to its wire string and orjson writes it as
that string. The decoder does not call ``Enum.__call__`` on the hot path (it raises
``ValueError`` and walks the MRO); it uses the plain ``*_BY_VALUE`` dicts below, and names
the allowed values in its error message with the ``*_EXPECTED`` strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final


class ResultCode(StrEnum):
    """The ``resultCode`` of a final operation response."""

    # Sent by devices.
    SUCCESSFUL = "SUCCESSFUL"
    ERROR_IN_PARAM = "ERROR_IN_PARAM"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    ERROR_PROCESSING = "ERROR_PROCESSING"
    ALREADY_IN_PROGRESS = "ALREADY_IN_PROGRESS"
    # Assigned by the platform itself (a platform must still accept them on the wire).
    ERROR_TIMEOUT = "ERROR_TIMEOUT"
    TIMEOUT_CANCELLED = "TIMEOUT_CANCELLED"
    CANCELLED = "CANCELLED"
    CANCELLED_INTERNAL = "CANCELLED_INTERNAL"
    OPERATION_PENDING = "OPERATION_PENDING"


#: The result codes a device itself may send (the others are assigned by the platform).
DEVICE_RESULT_CODES: Final[frozenset[ResultCode]] = frozenset(
    {
        ResultCode.SUCCESSFUL,
        ResultCode.ERROR_IN_PARAM,
        ResultCode.NOT_SUPPORTED,
        ResultCode.ERROR_PROCESSING,
        ResultCode.ALREADY_IN_PROGRESS,
    }
)

#: The result codes only the platform assigns (timeouts, cancellations, pending).
PLATFORM_RESULT_CODES: Final[frozenset[ResultCode]] = frozenset(ResultCode) - DEVICE_RESULT_CODES


class StepResult(StrEnum):
    """The ``result`` of one step of a multi-step operation."""

    SUCCESSFUL = "SUCCESSFUL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"
    NOT_EXECUTED = "NOT_EXECUTED"


class VariableResultCode(StrEnum):
    """The ``resultCode`` of one variable in ``steps[].response[]`` (GET/SET_DEVICE_PARAMETERS)."""

    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    NON_EXISTENT = "NON_EXISTENT"


# Lookup tables for the decoder: a dict hit is the whole cost of validating an enum value.
RESULT_CODE_BY_VALUE: Final[dict[str, ResultCode]] = {m.value: m for m in ResultCode}
STEP_RESULT_BY_VALUE: Final[dict[str, StepResult]] = {m.value: m for m in StepResult}
VARIABLE_RESULT_CODE_BY_VALUE: Final[dict[str, VariableResultCode]] = {
    m.value: m for m in VariableResultCode
}


def _one_of(values: Iterable[str]) -> str:
    return "one of " + ", ".join(values)


# The ``expected`` part of a ProtocolError for a bad enum value, in declaration order:
# "one of SUCCESSFUL, ERROR, SKIPPED, NOT_EXECUTED".
RESULT_CODE_EXPECTED: Final[str] = _one_of(RESULT_CODE_BY_VALUE)
STEP_RESULT_EXPECTED: Final[str] = _one_of(STEP_RESULT_BY_VALUE)
VARIABLE_RESULT_CODE_EXPECTED: Final[str] = _one_of(VARIABLE_RESULT_CODE_BY_VALUE)
