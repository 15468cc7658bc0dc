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

Decoding: ``loadgen.protocol.lean.decode_request_lean`` accepts the common request shape with a
handful of exact type checks and builds a lean slotted record; anything else, including every
invalid body, goes to the protocol codec, which raises the precise error.

The key is compared with ``hmac.compare_digest`` (constant time) whether it came in the
``X-ApiKey`` header or as the ``X-ApiKey`` query parameter.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Awaitable
from typing import Final

from loadgen.device.engine import Engine
from loadgen.device.fleet import Device
from loadgen.errors import ProtocolError
from loadgen.http.parser import Request
from loadgen.http.server import Reply
from loadgen.protocol import Endpoint, PathTemplate, query_api_key
from loadgen.protocol.lean import decode_request_lean

__all__ = ["DeviceHandler"]

_TEXT: Final = b"text/plain; charset=utf-8"
NO_SUCH_PATH: Final = Reply(404, b"no such resource\n", content_type=_TEXT)
NO_SUCH_DEVICE: Final = Reply(404, b"no such device\n", content_type=_TEXT)
WRONG_METHOD: Final = Reply(
    405, b"method not allowed: use POST\n", content_type=_TEXT, headers=((b"Allow", b"POST"),)
)
BAD_KEY: Final = Reply(401, b"missing or wrong X-ApiKey\n", content_type=_TEXT)
_OPERATION_REQUEST = Endpoint.OPERATION_REQUEST


class DeviceHandler:
    """``Handler`` of the fleet's HTTP servers (``await handler(request) -> Reply``), with the
    synchronous face ``now`` that lets the server answer without a task per connection."""

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
        outcome = self.now(request)
        return outcome if isinstance(outcome, Reply) else await outcome

    def now(self, request: Request) -> Reply | Awaitable[Reply]:
        """The server's ``now`` face (``loadgen.http.server``): the ``Reply`` at once when no
        wait is needed (every check here, and the engine's common paths), else the awaitable of
        it, which the server awaits in a task of its own."""
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
            operation = decode_request_lean(request.body)
        except ProtocolError as exc:
            self._counters["device.http.400"] += 1
            return Reply(400, f"{exc}\n".encode(), content_type=_TEXT)
        return self.engine.handle_now(device, operation)

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
