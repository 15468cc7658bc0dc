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
                                 malformed JSON 400 (``south.malformed``)
``GET .../operation/pending``    200 + JSON array of the request envelopes queued for that
                                 device (``south.pending_served``), 204 when none
``POST .../collect/iot``         201 (``south.collect``); malformed 400
wrong method / unknown path      405 / 404; bad or missing API key (when one is set) 401
===============================  ======================================================

A response is fully validated (``protocol.decode_response``): the south API is where a real
device's mistakes show up, so a malformed step is a 400 with its field path, not a silent pass.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import trio

from loadgen.errors import ProtocolError
from loadgen.http.parser import Request
from loadgen.http.server import Reply
from loadgen.metrics.registry import Metrics
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.protocol import Endpoint, PathTemplate, decode_iot, decode_response, query_api_key

__all__ = ["PendingQueues", "SouthCore"]

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
_ALLOWED: Final = {
    Endpoint.OPERATION_RESPONSE: b"POST",
    Endpoint.OPERATION_PENDING: b"GET",
    Endpoint.COLLECT_IOT: b"POST",
}


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

    __slots__ = ("api_key", "counters", "paths", "pending", "table")

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

    def __repr__(self) -> str:
        return f"<SouthCore {self.paths.base_path} key={'yes' if self.api_key else 'no'}>"

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
                response = decode_response(body)
            except ProtocolError as exc:
                counters["south.malformed"] += 1
                return 400, f"malformed operation response: {exc}\n".encode()
            counters["south.responses"] += 1
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
            return 400, f"malformed IoT data: {exc}\n".encode()
        counters["south.collect"] += 1
        return 201, b""

    async def http_handler(self, request: Request) -> Reply:
        """The handler for ``loadgen.http.server.HTTPServer``."""
        header_key = request.header(b"x-apikey") if self.api_key is not None else None
        status, body = self.handle(
            request.method, request.target, header_key, request.body, trio.current_time()
        )
        if not body:
            return _CANNED.get(status) or Reply(status)
        if status == 200:
            return Reply(200, body)
        return Reply(status, body, content_type=_TEXT)
