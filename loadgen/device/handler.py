"""The HTTP face of the fleet: route by the id in the path, check the key, decode, answer.

One ``DeviceHandler`` serves every listener of a fleet (HTTP, HTTPS, every address). The order
of checks is the order of cost and of disclosure: an unknown path is 404 before anything else;
the method (405, ``Allow: POST``) and the API key (401) are checked before the device id is
looked up, so a caller without the key cannot probe which devices exist; then an unknown device
is 404 and a body the codec refuses is 400 with the codec's precise reason
(``operation.request.name: expected a non-empty string, got nothing``).

Every error answer is a pre-rendered module-level ``Reply`` except the 400, whose text names
the field, and each is counted as ``device.http.<status>``. Framing errors (oversize head or
body, slow drip, garbage) never reach this code: the server answers them (400/408/413/431) and
the runner copies its counters into the same ``device.http.<status>`` names.

Decoding: ``decode_operation`` accepts the common request shape (object parameters, no
``path``) with a handful of exact type checks and builds a lean slotted record; anything else,
including every invalid body, goes to the protocol codec, which accepts the older forms and
raises the precise error. A differential test holds the two to the same result.

The key is compared with ``hmac.compare_digest`` (constant time) whether it came in the
``X-ApiKey`` header or as the ``X-ApiKey`` query parameter.
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Any, Final

import orjson

from loadgen.device.behaviour import Operation
from loadgen.device.engine import Engine
from loadgen.device.fleet import Device
from loadgen.errors import ProtocolError
from loadgen.http.parser import Request
from loadgen.http.server import Reply
from loadgen.protocol import (
    Endpoint,
    PathTemplate,
    decode_request,
    decode_request_obj,
    query_api_key,
)

__all__ = ["DeviceHandler", "LeanRequest", "decode_operation"]

_TEXT: Final = b"text/plain; charset=utf-8"
NO_SUCH_PATH: Final = Reply(404, b"no such resource\n", content_type=_TEXT)
NO_SUCH_DEVICE: Final = Reply(404, b"no such device\n", content_type=_TEXT)
WRONG_METHOD: Final = Reply(
    405, b"method not allowed: use POST\n", content_type=_TEXT, headers=((b"Allow", b"POST"),)
)
BAD_KEY: Final = Reply(401, b"missing or wrong X-ApiKey\n", content_type=_TEXT)
_OPERATION_REQUEST = Endpoint.OPERATION_REQUEST


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
        self.id = id
        self.timestamp = timestamp
        self.name = name
        self.parameters = parameters
        self.device_id = device_id
        self.path: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"LeanRequest(id={self.id!r} {self.name} at={self.timestamp})"


def decode_operation(body: bytes) -> Operation:
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


class DeviceHandler:
    """``Handler`` of the fleet's HTTP servers (``await handler(request) -> Reply``)."""

    __slots__ = ("_counters", "_key", "_parse", "devices", "engine")

    def __init__(
        self,
        devices: dict[str, Device],
        engine: Engine,
        *,
        base_path: str,
        api_key: str | None,
    ) -> None:
        self.devices = devices
        self.engine = engine
        self._parse = PathTemplate(base_path).parse
        self._key = None if api_key is None else api_key.encode("utf-8")
        self._counters: Counter[str] = engine.metrics.counters

    def __repr__(self) -> str:
        return f"<DeviceHandler devices={len(self.devices)} key={'yes' if self._key else 'no'}>"

    async def __call__(self, request: Request) -> Reply:
        route = self._parse(request.target)
        if route is None or route[1] is not _OPERATION_REQUEST:
            return self._error(NO_SUCH_PATH)
        if request.method != b"POST":
            return self._error(WRONG_METHOD)
        if self._key is not None and not self._authorised(request):
            return self._error(BAD_KEY)
        device = self.devices.get(route[0])
        if device is None:
            return self._error(NO_SUCH_DEVICE)
        try:
            operation = decode_operation(request.body)
        except ProtocolError as exc:
            self._counters["device.http.400"] += 1
            return Reply(400, f"{exc}\n".encode(), content_type=_TEXT)
        return await self.engine.handle(device, operation)

    def _authorised(self, request: Request) -> bool:
        expected = self._key
        assert expected is not None
        given = request.header(b"x-apikey")
        if given is None:
            query = query_api_key(request.target)
            if query is None:
                return False
            given = query.encode("utf-8")
        return hmac.compare_digest(given, expected)

    def _error(self, reply: Reply) -> Reply:
        self._counters[f"device.http.{reply.status}"] += 1
        return reply
