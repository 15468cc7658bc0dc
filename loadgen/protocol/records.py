"""The records of PROTOCOL.md §3-§4: an operation request, a (partial or final) response, its
steps and per-variable results.

They are frozen, slotted, keyword-only dataclasses, so they are cheap to build by the ten
thousand and safe to share between tasks. ``__post_init__`` checks only the invariants that
cost a few ``type()`` calls; it raises ``TypeError`` / ``ValueError`` because a bad record built
in our own code is a bug. Input from the wire is validated earlier, field by field, by
``loadgen.protocol.codec``, which raises ``ProtocolError`` naming the JSON path.

A few conveniences keep call sites short: enum fields accept their wire strings, and
sequences given for tuple fields are turned into tuples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from loadgen.protocol.enums import ResultCode, StepResult, VariableResultCode

#: Parameters travel either as a JSON object (current form) or as a typed array (older form).
ParametersForm = Literal["object", "array"]

_PARAMETERS_FORMS = ("object", "array")


def _set(obj: object, name: str, value: object) -> None:
    # The documented way to normalise a field of a frozen dataclass in __post_init__.
    object.__setattr__(obj, name, value)


def _check_non_empty_str(owner: str, name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a non-empty string, not {value!r}")
    if not value:
        raise ValueError(f"{owner}.{name} must be a non-empty string, not ''")


def _check_timestamp(owner: str, value: object) -> None:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{owner}.timestamp must be an int (ms since the epoch), not {value!r}")


def _check_optional_timestamp(owner: str, value: object) -> None:
    if value is not None:
        _check_timestamp(owner, value)


def _check_optional_str(owner: str, name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a string or None, not {value!r}")


def _normalise_path(owner: str, obj: object, value: object) -> None:
    if value is None:
        return
    if type(value) is not tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{owner}.path must be a tuple of strings or None, not {value!r}")
        value = tuple(value)
        _set(obj, "path", value)
    for part in value:
        if not isinstance(part, str):
            raise TypeError(f"{owner}.path must hold only strings, not {part!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VariableResult:
    """The outcome for one variable of a GET/SET_DEVICE_PARAMETERS step (``steps[].response[]``).

    ``variable_value`` is any JSON value; ``None`` means "no value" and is not written.
    """

    variable_name: str
    variable_value: Any = field(default=None, hash=False)
    result_code: VariableResultCode
    result_description: str | None = None

    def __post_init__(self) -> None:
        _check_non_empty_str("VariableResult", "variable_name", self.variable_name)
        if type(self.result_code) is not VariableResultCode:
            _set(self, "result_code", VariableResultCode(self.result_code))
        _check_optional_str("VariableResult", "result_description", self.result_description)

    def __repr__(self) -> str:
        text = f"VariableResult({self.variable_name}={self.variable_value!r} {self.result_code}"
        if self.result_description is not None:
            text += f" {self.result_description!r}"
        return text + ")"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One finished step of an operation (``steps[]``).

    ``response`` is ``None`` when the step carries no per-variable results (the key is not
    written) and a tuple, possibly empty, when it does. ``timestamp`` is ``None`` only when a
    device sent none (the south API's lenient reading accepts that, and counts it); it is then
    not written.
    """

    name: str
    timestamp: int | None
    result: StepResult
    description: str | None = None
    response: tuple[VariableResult, ...] | None = None

    def __post_init__(self) -> None:
        _check_non_empty_str("Step", "name", self.name)
        _check_optional_timestamp("Step", self.timestamp)
        if type(self.result) is not StepResult:
            _set(self, "result", StepResult(self.result))
        _check_optional_str("Step", "description", self.description)
        response = self.response
        if response is not None:
            if type(response) is not tuple:
                response = tuple(response)
                _set(self, "response", response)
            for item in response:
                if not isinstance(item, VariableResult):
                    raise TypeError(f"Step.response must hold VariableResult, not {item!r}")

    def __repr__(self) -> str:
        text = f"Step({self.name} {self.result} at={self.timestamp}"
        if self.description is not None:
            text += f" {self.description!r}"
        if self.response is not None:
            text += f" variables={len(self.response)}"
        return text + ")"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationRequest:
    """An operation request (platform → device), PROTOCOL.md §3.

    ``parameters`` is always a plain ``dict`` of Python values, whichever wire form carried it;
    ``parameters_form`` remembers that form so re-encoding reproduces it. The dict is not
    copied: treat it as read-only once the record is built.
    """

    id: str
    timestamp: int
    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    parameters_form: ParametersForm = "object"
    device_id: str | None = None
    path: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_non_empty_str("OperationRequest", "id", self.id)
        _check_timestamp("OperationRequest", self.timestamp)
        _check_non_empty_str("OperationRequest", "name", self.name)
        if type(self.parameters) is not dict:
            if not isinstance(self.parameters, Mapping):
                raise TypeError(
                    f"OperationRequest.parameters must be a mapping, not {self.parameters!r}"
                )
            _set(self, "parameters", dict(self.parameters))
        if self.parameters_form not in _PARAMETERS_FORMS:
            raise ValueError(
                "OperationRequest.parameters_form must be 'object' or 'array', "
                f"not {self.parameters_form!r}"
            )
        _check_optional_str("OperationRequest", "device_id", self.device_id)
        _normalise_path("OperationRequest", self, self.path)

    def __repr__(self) -> str:
        text = f"OperationRequest(id={self.id!r} {self.name} at={self.timestamp}"
        if self.parameters:
            text += f" parameters={sorted(self.parameters)}"
        if self.parameters_form != "object":
            text += f" form={self.parameters_form}"
        if self.device_id is not None:
            text += f" device={self.device_id!r}"
        if self.path is not None:
            text += f" path={list(self.path)}"
        return text + ")"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationResponse:
    """An operation response (device → platform), PROTOCOL.md §4.

    A *partial* response has no ``result_code`` and no ``result_description`` and carries the
    steps finished since the previous message; the *final* one has a ``result_code``.
    ``timestamp`` is ``None`` only when a device sent none (as for ``Step``).
    """

    id: str
    timestamp: int | None
    device_id: str | None = None
    name: str
    result_code: ResultCode | None = None
    result_description: str | None = None
    steps: tuple[Step, ...] = ()
    path: tuple[str, ...] | None = None
    version: str = "1.0"

    def __post_init__(self) -> None:
        _check_non_empty_str("OperationResponse", "id", self.id)
        _check_optional_timestamp("OperationResponse", self.timestamp)
        _check_optional_str("OperationResponse", "device_id", self.device_id)
        _check_non_empty_str("OperationResponse", "name", self.name)
        if self.result_code is None:
            if self.result_description is not None:
                raise ValueError(
                    "OperationResponse.result_description needs a result_code "
                    "(a partial response has neither)"
                )
        elif type(self.result_code) is not ResultCode:
            _set(self, "result_code", ResultCode(self.result_code))
        _check_optional_str("OperationResponse", "result_description", self.result_description)
        steps = self.steps
        if type(steps) is not tuple:
            steps = tuple(steps)
            _set(self, "steps", steps)
        for step in steps:
            if not isinstance(step, Step):
                raise TypeError(f"OperationResponse.steps must hold Step, not {step!r}")
        _normalise_path("OperationResponse", self, self.path)
        if not isinstance(self.version, str):
            raise TypeError(f"OperationResponse.version must be a string, not {self.version!r}")

    @property
    def is_final(self) -> bool:
        """True for the final response (it has a ``resultCode``), False for a partial one."""
        return self.result_code is not None

    def __repr__(self) -> str:
        outcome = "partial" if self.result_code is None else str(self.result_code)
        text = f"OperationResponse(id={self.id!r} {self.name} {outcome} at={self.timestamp}"
        if self.result_description is not None:
            text += f" {self.result_description!r}"
        if self.steps:
            text += " steps=[" + ", ".join(f"{s.name}:{s.result}" for s in self.steps) + "]"
        if self.device_id is not None:
            text += f" device={self.device_id!r}"
        if self.path is not None:
            text += f" path={list(self.path)}"
        if self.version != "1.0":
            text += f" version={self.version!r}"
        return text + ")"
