"""Lean decoders for the two hot paths: a request at the device, a sync answer at the platform.

Theory of operation. ``loadgen.protocol.codec`` builds frozen, fully validated records and names
the JSON path of any mistake; that is the contract, and every message can go through it. But two
messages arrive once per operation on the hot path, where only a few fields matter and almost
every message has the common shape: the request a virtual device receives, and the response a
device puts in its synchronous HTTP answer. For those, ``orjson.loads`` plus a handful of exact
``type()`` checks and a small slotted object (no dataclass machinery, positional ``__init__``)
cost a fraction of the full decode.

- ``decode_request_lean``: the common request shape (object parameters, no ``path``) becomes a
  ``LeanRequest``; anything else, including every invalid body, goes to the codec, which accepts
  the older forms and raises the precise ``ProtocolError``. A differential test holds the two to
  the same result.
- ``decode_response_lean``: the sync answer is correlated by its connection, so the platform only
  needs the envelope, a known ``resultCode``, the ``steps`` array, and the ``id``, ``name`` and
  ``deviceId`` it judges against the operation (``device.wrong_*`` counters). ``None`` says "not
  a response envelope"; the south API, which correlates by id, validates fully instead.

Pure like the rest of ``loadgen.protocol``: bytes in, objects out, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from loadgen.protocol.codec import decode_request, decode_request_obj
from loadgen.protocol.enums import RESULT_CODE_BY_VALUE
from loadgen.protocol.records import OperationRequest

__all__ = ["LeanRequest", "LeanResponse", "decode_request_lean", "decode_response_lean"]


class LeanRequest:
    """An operation request of the common shape, as ``OperationRequest`` would hold it."""

    __slots__ = ("device_id", "id", "name", "parameters", "path", "timestamp")

    def __init__(
        self,
        id: str,
        timestamp: int,
        name: str,
        parameters: dict[str, Any],
        device_id: str | None,
    ) -> None:
        # Positional on purpose: one is built per request on the device's hot path.
        self.id = id
        self.timestamp = timestamp
        self.name = name
        self.parameters = parameters
        self.device_id = device_id
        self.path: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"LeanRequest(id={self.id!r} {self.name} at={self.timestamp})"


def decode_request_lean(body: bytes) -> LeanRequest | OperationRequest:
    """``decode_request`` for the common shape, cheaper; anything else goes to the codec."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return decode_request(body)  # raises the codec's ProtocolError
    if type(obj) is dict:
        operation = obj.get("operation")
        if type(operation) is dict:
            request = operation.get("request")
            if type(request) is dict:
                id_ = request.get("id")
                name = request.get("name")
                timestamp = request.get("timestamp")
                parameters = request.get("parameters")
                device_id = request.get("deviceId")
                if (
                    type(id_) is str
                    and id_
                    and type(name) is str
                    and name
                    and type(timestamp) is int
                    and (parameters is None or type(parameters) is dict)
                    and (device_id is None or type(device_id) is str)
                    and request.get("path") is None
                ):
                    return LeanRequest(id_, timestamp, name, parameters or {}, device_id)
    return decode_request_obj(obj)


class LeanResponse:
    """What the platform takes from a sync answer: ``result_code`` (None for a partial), the
    ``steps`` as sent, and the ``id``/``name``/``deviceId`` for judging, as sent (any JSON
    value; None when absent): they are only compared with the operation's strings."""

    __slots__ = ("device_id", "id", "name", "result_code", "steps")

    def __init__(
        self,
        result_code: str | None,
        steps: list[Any],
        id: object,
        name: object,
        device_id: object,
    ) -> None:
        # Positional on purpose, as LeanRequest: one per sync answer.
        self.result_code = result_code
        self.steps = steps
        self.id = id
        self.name = name
        self.device_id = device_id

    def __repr__(self) -> str:
        outcome = "partial" if self.result_code is None else self.result_code
        return f"LeanResponse(id={self.id!r} {self.name} {outcome} steps={len(self.steps)})"


def decode_response_lean(body: bytes) -> LeanResponse | None:
    """The response in a sync answer, or None if ``body`` is not a response envelope.

    Checked: the envelope, a known ``resultCode`` (or none: a partial), ``steps`` an array (or
    absent). Not checked: the steps themselves and the other fields, which are only carried.
    """
    try:
        response = orjson.loads(body)["operation"]["response"]
        code = response.get("resultCode")
        steps = response.get("steps")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    if code is not None and (type(code) is not str or code not in RESULT_CODE_BY_VALUE):
        return None  # (the type check first: a list is not hashable)
    if steps is None:
        steps = []
    elif type(steps) is not list:
        return None
    return LeanResponse(
        code, steps, response.get("id"), response.get("name"), response.get("deviceId")
    )
