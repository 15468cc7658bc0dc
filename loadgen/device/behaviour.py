"""What a device answers: result and fault draws, step results, and the response JSON.

Pure (no trio, no sockets): the engine passes in the seeded ``random.Random``, the request and
the wall-clock milliseconds for the JSON timestamps, and gets back choices and bytes.

Theory of operation. A ``Behaviour`` is compiled once per ``Profile``: the result mix and the
fault table become cumulative-weight lists, so a draw is one ``rng.random()`` and a short scan,
and a profile with a single result or no faults draws nothing at all. That keeps the synchronous
fast path at: one dict lookup for the profile, at most two draws, one ``orjson.dumps``.

Step results match the operation's result (PROTOCOL.md §4, §6):

- ``SUCCESSFUL``: every step ``SUCCESSFUL``;
- ``ERROR_PROCESSING``: one step, drawn uniformly, is ``ERROR``; those before it succeeded and
  those after it are ``NOT_EXECUTED``;
- ``ERROR_IN_PARAM``: the first step is ``ERROR`` (the parameters are checked first), the rest
  ``NOT_EXECUTED``;
- ``NOT_SUPPORTED`` and ``ALREADY_IN_PROGRESS``: no steps at all (``steps: []``), as for an
  operation name outside the catalogue.

GET/SET_DEVICE_PARAMETERS steps carry per-variable results from the catalogue.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from loadgen.protocol import (
    ResultCode,
    StepResult,
    default_steps,
    variable_results,
)

if TYPE_CHECKING:  # the config pulls in the HTTP server (and trio); this module stays pure
    from loadgen.device.config import Delay, Faults, Profile

__all__ = [
    "BUSY_DESCRIPTION",
    "RESULT_DESCRIPTIONS",
    "VARIABLE_OPERATIONS",
    "Behaviour",
    "Operation",
    "collect_body",
    "malformed",
    "other_id",
    "response_body",
    "step_objects",
    "step_results",
]

RESULT_DESCRIPTIONS: Final[Mapping[ResultCode, str]] = {
    ResultCode.SUCCESSFUL: "Success",
    ResultCode.ERROR_IN_PARAM: "Invalid parameters (simulated)",
    ResultCode.NOT_SUPPORTED: "Operation not supported",
    ResultCode.ERROR_PROCESSING: "Error while processing (simulated)",
    ResultCode.ALREADY_IN_PROGRESS: "Operation already in progress",
}
BUSY_DESCRIPTION: Final = "Device busy: too many operations in progress"

STEP_DESCRIPTIONS: Final[Mapping[StepResult, str]] = {
    StepResult.SUCCESSFUL: "Done",
    StepResult.ERROR: "Failed (simulated)",
    StepResult.SKIPPED: "Skipped",
    StepResult.NOT_EXECUTED: "Not executed",
}

_OK = StepResult.SUCCESSFUL
_NO_STEPS: Final = frozenset({ResultCode.NOT_SUPPORTED, ResultCode.ALREADY_IN_PROGRESS})
VARIABLE_OPERATIONS: Final = frozenset({"GET_DEVICE_PARAMETERS", "SET_DEVICE_PARAMETERS"})


def _cumulative(pairs: Sequence[tuple[Any, float]]) -> tuple[tuple[float, Any], ...]:
    total = 0.0
    out = []
    for item, weight in pairs:
        total += weight
        out.append((total, item))
    return tuple(out)


class Operation(Protocol):
    """What the device needs of a request: ``Operation`` or the handler's lean twin."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, Any]: ...
    @property
    def device_id(self) -> str | None: ...
    @property
    def path(self) -> tuple[str, ...] | None: ...


class Behaviour:
    """A ``Profile`` compiled for fast draws (and the fault table for its flow).

    The ``*_delay`` attributes are ``None`` for a delay that is always 0, so the engine skips
    both the draw and the sleep.
    """

    __slots__ = (
        "_faults",
        "_results",
        "ack_delay",
        "final_delay",
        "fixed_result",
        "has_faults",
        "is_async",
        "profile",
        "step_delay",
        "sync_delay",
    )

    def __init__(self, profile: Profile, faults: Faults) -> None:
        self.profile = profile
        self.is_async = profile.is_async
        delays = profile.delays
        self.sync_delay: Delay | None = None if delays.sync.is_zero else delays.sync
        self.ack_delay: Delay | None = None if delays.ack.is_zero else delays.ack
        self.step_delay: Delay | None = None if delays.step.is_zero else delays.step
        self.final_delay: Delay | None = None if delays.final.is_zero else delays.final
        results = [(code, w) for code, w in profile.results.items() if w > 0]
        self.fixed_result: ResultCode | None = results[0][0] if len(results) == 1 else None
        self._results = _cumulative(results)
        self._faults = _cumulative(faults.probabilities(is_async=profile.is_async))
        self.has_faults = bool(self._faults)

    def __repr__(self) -> str:
        return f"<Behaviour {self.profile.flow} results={self._results} faults={self._faults}>"

    def draw_result(self, rng: random.Random) -> ResultCode:
        """The operation's result code, from the profile's mix."""
        if self.fixed_result is not None:
            return self.fixed_result
        x = rng.random()
        for bound, code in self._results:
            if x < bound:
                return code  # type: ignore[no-any-return]
        return self._results[-1][1]  # type: ignore[no-any-return]  # rounding at 1.0

    def draw_fault(self, rng: random.Random) -> str | None:
        """A fault name, or None (most of the time); draws only if the profile has faults."""
        if not self._faults:
            return None
        x = rng.random()
        for bound, name in self._faults:
            if x < bound:
                return name  # type: ignore[no-any-return]
        return None

    def step_names(self, request: Operation) -> tuple[str, ...]:
        steps = self.profile.steps
        if steps is not None:
            return steps
        return default_steps(request.name, request.parameters)


def step_results(
    names: Sequence[str], result: ResultCode, rng: random.Random
) -> list[tuple[str, StepResult]]:
    """The (name, result) of each step, matching the operation's result (module docstring)."""
    if result is ResultCode.SUCCESSFUL:
        return [(name, _OK) for name in names]
    if result in _NO_STEPS or not names:
        return []
    # ERROR_PROCESSING fails at a drawn step; ERROR_IN_PARAM at the first (parameters first).
    failing = rng.randrange(len(names)) if result is ResultCode.ERROR_PROCESSING else 0
    return [
        (
            name,
            _OK if i < failing else StepResult.ERROR if i == failing else StepResult.NOT_EXECUTED,
        )
        for i, name in enumerate(names)
    ]


def _variables(request: Operation, result: StepResult) -> list[dict[str, Any]] | None:
    if request.name not in VARIABLE_OPERATIONS or result is not _OK:
        return None
    out = []
    for var in variable_results(request.name, request.parameters):
        item: dict[str, Any] = {"variableName": var.variable_name}
        if var.variable_value is not None:
            item["variableValue"] = var.variable_value
        item["resultCode"] = var.result_code
        if var.result_description is not None:
            item["resultDescription"] = var.result_description
        out.append(item)
    return out


def step_objects(
    request: Operation, steps: Sequence[tuple[str, StepResult]], now_ms: int
) -> list[dict[str, Any]]:
    """The JSON ``steps[]`` for ``steps``, all finished at ``now_ms``."""
    out = []
    for name, result in steps:
        step: dict[str, Any] = {
            "name": name,
            "timestamp": now_ms,
            "result": result,
            "description": STEP_DESCRIPTIONS[result],
        }
        variables = _variables(request, result)
        if variables is not None:
            step["response"] = variables
        out.append(step)
    return out


def response_body(
    request: Operation,
    device_id: str,
    *,
    version: str,
    now_ms: int,
    result: ResultCode | None,
    steps: list[dict[str, Any]],
    description: str | None = None,
    operation_id: str | None = None,
) -> bytes:
    """One response envelope (PROTOCOL.md §4); ``result=None`` makes a partial response.

    ``deviceId`` is the request's own (a gateway's sub-device) or else the device that ran it;
    ``path`` is echoed when the request had one; ``operation_id`` replaces the request's id
    (the ``wrong_id`` fault).
    """
    body: dict[str, Any] = {
        "id": request.id if operation_id is None else operation_id,
        "timestamp": now_ms,
        "deviceId": request.device_id or device_id,
        "name": request.name,
    }
    if result is not None:
        body["resultCode"] = result
        body["resultDescription"] = (
            RESULT_DESCRIPTIONS[result] if description is None else description
        )
    body["steps"] = steps
    if request.path is not None:
        body["path"] = request.path
    return orjson.dumps({"version": version, "operation": {"response": body}})


def malformed(body: bytes) -> bytes:
    """The ``malformed_json`` fault: the body cut off before its end (never valid JSON)."""
    return body[: max(1, len(body) // 2)]


def collect_body(device_id: str, now_ms: int, rng: random.Random) -> bytes:
    """Fresh data after REFRESH_INFO (PROTOCOL.md §8): a temperature and an uptime."""
    return orjson.dumps(
        {
            "version": "1.0.0",
            "datastreams": [
                {
                    "id": "temperature",
                    "feed": "default",
                    "datapoints": [{"at": now_ms, "value": round(rng.uniform(15.0, 30.0), 1)}],
                },
                {
                    "id": "device.identifier",
                    "datapoints": [{"at": now_ms, "value": device_id}],
                },
            ],
        }
    )


def other_id(rng: random.Random, last_id: str | None, current: str) -> str:
    """An id for the ``wrong_id`` fault: the previous operation's, else a random UUID."""
    if last_id is not None and last_id != current:
        return last_id
    n = rng.getrandbits(128)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
