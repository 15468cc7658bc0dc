"""The platform's south API: where devices POST their asynchronous responses, poll for pending
operations and push IoT data (PROTOCOL.md §1 directions 2-4, §5 status codes).

``SouthCore.handle`` is the whole behaviour as a pure function of ``(method, target, api key,
body, now)`` returning ``(status, body)``; it correlates responses through the in-flight table.
Two thin shells serve it: ``SouthCore.http_handler`` on the project's fast HTTP server (the hot
path, with pre-rendered constant replies) and ``loadgen.platform.asgi`` for hypercorn (HTTP/2,
or mounting it elsewhere). The answers:

===============================  ======================================================
``POST .../operation/response``  201; partial accumulates steps, final completes; a late,
                                 duplicate or orphan id is still 201 and counted
                                 (``south.late`` / ``south.duplicate`` / ``south.orphan``);
                                 an oddity real agents send is 201 and counted
                                 (``south.odd.<kind>``); what the platform cannot use is 400
                                 (``south.malformed`` and ``south.malformed.<cause>``)
``GET .../operation/pending``    200 + JSON array of the request envelopes queued for that
                                 device (``south.pending_served``), 204 when none
``POST .../collect/iot``         201 (``south.collect``); malformed 400
                                 (``south.malformed``, ``south.malformed.iot``)
wrong method / unknown path      405 / 404 (``south.bad_method`` / ``south.not_found``); bad
                                 or missing API key (when one is set) 401
                                 (``south.unauthorized``)
===============================  ======================================================

A message for a live operation is judged (``misfits``): a ``name`` that is not the operation's,
or a ``deviceId`` or URL device that is not the device it was sent to, is counted
(``device.wrong_name`` / ``device.wrong_device``); under ``strict`` the operation then ends as
an error. (A wrong ``id`` cannot be told here: the id is what finds the operation, so a message
with another id is about that operation, or an orphan.)

A response is read by ``protocol.decode_response_lenient``: the south API is where a real
device's mistakes show up. What real agents were seen sending (a response without
``timestamp``, a step with ``"timestamp": null``, fields of their own) is accepted and counted
as ``south.odd.no_timestamp`` / ``south.odd.step_no_timestamp`` / ``south.odd.unknown_field``;
a response the platform cannot use (``south.malformed.not_json``, ``.no_response``, ``.no_id``,
``.result_code``) or with any other invalid field (``.invalid``, a malformed step, say) is a 400
naming the field path, never a silent pass. Refusals by the HTTP server itself, before this
code (an oversize body 413, ...), are counted by the runner (``south.too_large``, ...).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Final

import trio

from loadgen.errors import ProtocolError
from loadgen.http.parser import Request
from loadgen.http.server import Reply
from loadgen.metrics.registry import Metrics
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.protocol import (
    ODDITIES,
    REFUSAL_CAUSES,
    Endpoint,
    PathTemplate,
    decode_iot,
    decode_response_lenient,
    query_api_key,
    refusal_cause,
)

__all__ = [
    "SERVER_REFUSALS",
    "WRONG_DEVICE",
    "WRONG_ID",
    "WRONG_NAME",
    "PendingQueues",
    "SouthCore",
    "count_server_refusals",
    "misfits",
]

_TEXT: Final = b"text/plain; charset=utf-8"
_CREATED: Final = Reply(201)
_NO_CONTENT: Final = Reply(204)
_NOT_FOUND: Final = Reply(404, b"no such resource\n", content_type=_TEXT)
_BAD_METHOD: Final = Reply(405, b"method not allowed\n", content_type=_TEXT)
_UNAUTHORIZED: Final = Reply(401, b"missing or wrong X-ApiKey\n", content_type=_TEXT)
_CANNED: Final = {
    201: _CREATED,
    204: _NO_CONTENT,
    401: _UNAUTHORIZED,
    404: _NOT_FOUND,
    405: _BAD_METHOD,
}
#: Counter names, built once rather than per message.
_ODD_COUNTER: Final = {kind: f"south.odd.{kind}" for kind in ODDITIES}
_REFUSED_COUNTER: Final = {cause: f"south.malformed.{cause}" for cause in REFUSAL_CAUSES}
#: The HTTP server's own refusals (answered before ``SouthCore`` sees a request), by status.
SERVER_REFUSALS: Final = {
    400: "south.bad_http",
    408: "south.read_timeout",
    413: "south.too_large",
    431: "south.head_too_large",
    500: "south.handler_error",
}
_ALLOWED: Final = {
    Endpoint.OPERATION_RESPONSE: b"POST",
    Endpoint.OPERATION_PENDING: b"GET",
    Endpoint.COLLECT_IOT: b"POST",
}


WRONG_ID: Final = "device.wrong_id"
WRONG_NAME: Final = "device.wrong_name"
WRONG_DEVICE: Final = "device.wrong_device"


def misfits(
    op: Operation,
    device: str | None,
    id_: object,
    name: object,
    device_id: object,
    path_device: str | None = None,
) -> tuple[str, ...]:
    """The ``device.wrong_*`` counters a device's answer (or message) for ``op`` earns.

    ``id_`` and ``name`` (as sent: any JSON value, None when absent) must be the operation's
    (PROTOCOL.md §4: both are copied from the request; an absent one does not match either). ``device`` is the device ``op`` was sent to,
    when known; ``device_id`` (the body's ``deviceId``, optional) and ``path_device`` (the
    device in the URL of an async message) must be that device, or each other when it is not
    known. The platform puts no ``deviceId`` in its requests, so no sub-device is expected.
    """
    wrong: list[str] = []
    if id_ != op.id:
        wrong.append(WRONG_ID)
    if name != op.name:
        wrong.append(WRONG_NAME)
    expected = device if device is not None else path_device
    if expected is not None and (
        (device_id is not None and device_id != expected)
        or (path_device is not None and path_device != expected)
    ):
        wrong.append(WRONG_DEVICE)
    return tuple(wrong)


def count_server_refusals(errors: Mapping[int, int], counters: MutableMapping[str, int]) -> None:
    """Add the south server's refusals (``ServerStats.errors``: status -> count) to the run's
    counters under their ``SERVER_REFUSALS`` names (``south.http.<status>`` for any other)."""
    for status, count in errors.items():
        if count:
            counters[SERVER_REFUSALS.get(status) or f"south.http.{status}"] += count


class PendingQueues:
    """Operations addressed to sleepy devices, queued per device until it polls."""

    __slots__ = ("_queues", "queued")

    def __init__(self) -> None:
        self._queues: dict[str, deque[Operation]] = {}
        self.queued = 0

    def __repr__(self) -> str:
        return f"<PendingQueues devices={len(self._queues)} queued={self.queued}>"

    def __len__(self) -> int:
        return self.queued

    def put(self, device_id: str, op: Operation) -> None:
        queue = self._queues.get(device_id)
        if queue is None:
            queue = self._queues[device_id] = deque()
        queue.append(op)
        self.queued += 1

    def take(self, device_id: str) -> list[Operation]:
        """Every operation still waiting for ``device_id`` (ended ones are dropped)."""
        queue = self._queues.pop(device_id, None)
        if not queue:
            return []
        self.queued -= len(queue)
        return [op for op in queue if op.state is State.SENT]


class SouthCore:
    """The south API's behaviour, shared by the fast HTTP server and the ASGI app."""

    __slots__ = ("api_key", "counters", "device_ids", "heard", "paths", "pending", "table")

    def __init__(
        self,
        table: InflightTable,
        metrics: Metrics,
        *,
        paths: PathTemplate | None = None,
        api_key: str | None = None,
        pending: PendingQueues | None = None,
    ) -> None:
        self.table = table
        self.counters = metrics.counters
        self.paths = paths or PathTemplate()
        self.api_key = api_key.encode() if api_key is not None else None
        self.pending = pending if pending is not None else PendingQueues()
        self.heard = 0  # requests handled, whatever they were: has any device talked to us?
        # The id of the device each operation was sent to (``Operation.device`` indexes it),
        # when known: a message about it from another device is ``device.wrong_device``.
        self.device_ids: Sequence[str] | None = None

    def __repr__(self) -> str:
        return (
            f"<SouthCore {self.paths.base_path} key={'yes' if self.api_key else 'no'} "
            f"heard={self.heard}>"
        )

    def authorised(self, header_key: bytes | None, target: bytes) -> bool:
        if self.api_key is None:
            return True
        if header_key is not None:
            return header_key == self.api_key
        query = query_api_key(target)
        return query is not None and query.encode() == self.api_key

    def handle(
        self, method: bytes, target: bytes, header_key: bytes | None, body: bytes, now: float
    ) -> tuple[int, bytes]:
        """``(status, body)`` for one request; ``header_key`` is the ``X-ApiKey`` header."""
        counters = self.counters
        self.heard += 1
        route = self.paths.parse(target)
        if route is None:
            counters["south.not_found"] += 1
            return 404, b""
        device_id, endpoint = route
        allowed = _ALLOWED.get(endpoint)
        if allowed is None:
            counters["south.not_found"] += 1
            return 404, b""
        if method != allowed:
            counters["south.bad_method"] += 1
            return 405, b""
        if not self.authorised(header_key, target):
            counters["south.unauthorized"] += 1
            return 401, b""
        if endpoint is Endpoint.OPERATION_RESPONSE:
            try:
                response, oddities = decode_response_lenient(body)
            except ProtocolError as exc:
                counters["south.malformed"] += 1
                counters[_REFUSED_COUNTER[refusal_cause(exc)]] += 1
                return 400, f"malformed operation response: {exc}\n".encode()
            counters["south.responses"] += 1
            for kind in oddities:
                counters[_ODD_COUNTER[kind]] += 1
            op = self.table.live.get(response.id)
            if op is not None and (
                response.name != op.name
                or (response.device_id is not None and response.device_id != device_id)
                or (self.device_ids is not None and self.device_ids[op.device] != device_id)
            ):
                expected = None if self.device_ids is None else self.device_ids[op.device]
                wrong = misfits(
                    op, expected, response.id, response.name, response.device_id, device_id
                )
                if self.table.misfit(op, wrong, now):
                    return 201, b""  # strict: the operation has ended as an error
            code = response.result_code
            self.table.message(
                response.id, now, None if code is None else code.value, response.steps
            )
            return 201, b""
        if endpoint is Endpoint.OPERATION_PENDING:
            ops = self.pending.take(device_id)
            if not ops:
                counters["south.pending_empty"] += 1
                return 204, b""
            for op in ops:
                self.table.ack(op, now)
            counters["south.pending_served"] += len(ops)
            return 200, b"[" + b",".join(op.body for op in ops) + b"]"
        try:
            decode_iot(body)
        except ProtocolError as exc:
            counters["south.malformed"] += 1
            counters["south.malformed.iot"] += 1
            return 400, f"malformed IoT data: {exc}\n".encode()
        counters["south.collect"] += 1
        return 201, b""

    async def http_handler(self, request: Request) -> Reply:
        """The handler for ``loadgen.http.server.HTTPServer``."""
        return self.http_now(request)

    def http_now(self, request: Request) -> Reply:
        """``http_handler``'s synchronous face (``HTTPServer(now=...)``): nothing here waits."""
        header_key = request.header(b"x-apikey") if self.api_key is not None else None
        status, body = self.handle(
            request.method, request.target, header_key, request.body, trio.current_time()
        )
        if not body:
            return _CANNED.get(status) or Reply(status)
        if status == 200:
            return Reply(200, body)
        return Reply(status, body, content_type=_TEXT)
