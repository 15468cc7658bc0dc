"""The stand-in's north API: jobs in, operations out through the sender, callbacks back.

``NorthCore.handle`` is the behaviour as a function of ``(method, target, api key, body,
now)`` returning ``(status, body, headers)``; ``http_handler`` serves it on the project's HTTP
server. The answers (PROTOCOL.md §9; error bodies ``{"errors": [{"code", "message"}]}``):

=====================================================  ============================================
``POST {base}/operation/jobs`` (N1)                    201, ``Location: .../jobs/{id}`` and
                                                       ``{"id": ...}``; a body that is not a job,
                                                       an unknown device, an inactive job or a
                                                       result code nobody knows: 400
                                                       (``platform.north.bad_request``); before
                                                       the load or after the drain: 503
``GET .../jobs/{id}`` (N2)                             200 ``{"job": {"id", "status", ...}}``
``GET .../jobs/{id}/operations?start=&size=`` (N3)     200 ``{"operations": [record, ...]}``
``PUT .../jobs/{id}/operations/{op}?state=`` (N4)      200 + the record; 409 when the state table
                                                       forbids the move; 400 without ``state``
unknown job or operation                               404 (``platform.north.not_found``)
wrong method / other path / bad key                    405 / 404 / 401
=====================================================  ============================================

A job becomes one in-flight ``Operation`` per target, opened in the platform's table (so its
deadlines, retries, recording and ``ops.*`` counters are the platform's own) and queued on the
sender's lanes. ``operationParameters`` become the operation's ``Timeouts``: ``ackTimeout`` 0
(none) means the final ``timeout`` bounds the acknowledgement too. Each operation's end reaches
the ``JobBook`` through ``Operation.on_done``; the finished record goes to the job's callback
URL, POSTed at once on an idle keep-alive connection, or queued until one of the
``callback_connections`` is free (``loadgen.http.muxclient``: no task per notification)
(``platform.north.callbacks_sent`` / ``callbacks_failed``, the first failure noted), never
blocking the operations: past ``OUTBOX`` notifications pending, one is dropped and counted
(``callbacks_dropped``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import trio

from loadgen.errors import ConfigError, ProtocolError, TransportError
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.muxclient import MuxClient
from loadgen.http.parser import Request, Response
from loadgen.http.server import Reply
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import NorthAPI, Timeouts
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.platform.jobs import FinishedJob, JobBook, JobOperation, OperationState
from loadgen.platform.mix import BodyTemplate, OperationIds
from loadgen.platform.sender import DeviceRoute, Sender
from loadgen.protocol.north import (
    JobRequest,
    NorthEndpoint,
    NorthPaths,
    decode_job_request,
    encode_error,
    encode_job_status,
    encode_operation_record,
    encode_operations_page,
)

__all__ = ["NorthCore"]

#: Notifications waiting for a callback worker, at most (then dropped and counted).
OUTBOX: Final = 100_000
MAX_PAGE: Final = 1000
_METHODS: Final = {
    NorthEndpoint.JOBS: b"POST",
    NorthEndpoint.JOB: b"GET",
    NorthEndpoint.OPERATIONS: b"GET",
    NorthEndpoint.OPERATION: b"PUT",
}
_RESULT_OF_STATE: Final = {State.TIMED_OUT: "ERROR_TIMEOUT", State.ERROR: "ERROR_PROCESSING"}

Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]


def _error(status: int, message: str) -> Answer:
    return status, encode_error(status, message), ()


class NorthCore:
    """The north API's behaviour; ``attach`` hands it the sender once the load begins."""

    def __init__(self, config: NorthAPI, table: InflightTable, metrics: Metrics) -> None:
        self.config = config
        self.table = table
        self.metrics = metrics
        self.counters = metrics.counters
        self.paths = NorthPaths(config.base_path)
        self.api_key = config.api_key.encode() if config.api_key is not None else None
        self.book = JobBook(
            metrics.counters,
            keep_count=config.keep_finished,
            keep_seconds=config.keep_seconds,
            on_finished=self._finished,
        )
        self.sender: Sender | None = None
        self.routes: Sequence[DeviceRoute] = ()
        self.device_index: dict[str, int] = {}
        self.closed = False
        self._ids = OperationIds()
        self._job_ids = OperationIds()
        self._t0 = 0.0
        self._wall0_ms = 0
        self._timeouts: dict[tuple[Any, ...], Timeouts] = {}
        self._callbacks: MuxClient | None = None
        self._posting = 0  # notifications written or queued, not yet answered
        self._idle = trio.Event()
        self._idle.set()
        self._origins: dict[str, tuple[Origin, bytes]] = {}

    def __repr__(self) -> str:
        return f"<NorthCore {self.paths.base} {self.book!r} closed={self.closed}>"

    # --- the load's life ---------------------------------------------------------------------

    def attach(
        self, sender: Sender, routes: Sequence[DeviceRoute], t0: float, wall0_ms: int
    ) -> None:
        self.sender = sender
        self.routes = routes
        self.device_index = {route.device_id: i for i, route in enumerate(routes)}
        self._t0, self._wall0_ms = t0, wall0_ms

    def close(self) -> None:
        """After the drain: N1 answers 503 (an operation opened now would never be run)."""
        self.closed = True

    def _ms(self, now: float) -> int:
        return self._wall0_ms + int((now - self._t0) * 1000)

    # --- HTTP ----------------------------------------------------------------------------------

    async def http_handler(self, request: Request) -> Reply:
        return self.http_now(request)

    def http_now(self, request: Request) -> Reply:
        """``http_handler``'s synchronous face (``HTTPServer(now=...)``): nothing here waits."""
        header_key = request.header(b"x-apikey") if self.api_key is not None else None
        status, body, headers = self.handle(
            request.method, request.target, header_key, request.body, trio.current_time()
        )
        return Reply(status, body, headers=headers)

    def handle(
        self, method: bytes, target: bytes, header_key: bytes | None, body: bytes, now: float
    ) -> Answer:
        counters = self.counters
        counters["platform.north.requests"] += 1
        route = self.paths.parse(target)
        if route is None:
            counters["platform.north.not_found"] += 1
            return _error(404, "no such resource")
        if method != _METHODS[route.endpoint]:
            counters["platform.north.bad_method"] += 1
            return _error(405, f"use {_METHODS[route.endpoint].decode()}")
        if self.api_key is not None and header_key != self.api_key:
            counters["platform.north.unauthorized"] += 1
            return _error(401, "missing or wrong X-ApiKey")
        if route.endpoint is NorthEndpoint.JOBS:
            return self._create(body, now)
        assert route.job_id is not None
        job = self.book.get(route.job_id)
        if job is None:
            counters["platform.north.not_found"] += 1
            return _error(404, f"no job {route.job_id}")
        if route.endpoint is NorthEndpoint.JOB:
            counters["platform.north.n2"] += 1
            if isinstance(job, FinishedJob):
                return 200, job.status, ()
            return 200, encode_job_status(job.status(), created_ms=job.created_ms), ()
        if route.endpoint is NorthEndpoint.OPERATIONS:
            counters["platform.north.n3"] += 1
            start, size = _page(route.query)
            if start is None or size is None:
                return self._bad("start and size: expected integers >= 1")
            if isinstance(job, FinishedJob):
                return 200, job.page(start, size), ()
            chosen = job.operations[start - 1 : start - 1 + size]
            for op in chosen:
                self._sync_sent(op)
            return 200, encode_operations_page([op.record() for op in chosen]), ()
        counters["platform.north.n4"] += 1
        state = route.query.get("state")
        if not state:
            return self._bad("state: expected a query parameter ?state=IN_PROGRESS or FINISHED")
        assert route.operation_id is not None
        outcome = self.book.set_state(route.job_id, route.operation_id, state, now, self._ms(now))
        if outcome in ("no_job", "no_operation"):
            counters["platform.north.not_found"] += 1
            return _error(404, f"no operation {route.operation_id} in job {route.job_id}")
        if outcome == "illegal":
            counters["platform.north.conflict"] += 1
            return _error(409, f"cannot move the operation to {state}")
        found = self.book.operation(route.operation_id)
        if found is None:  # an N4 move is "ok" only on a live job
            assert not isinstance(job, FinishedJob)
            found = next(o for o in job.operations if o.id == route.operation_id)
        return 200, found.wire or encode_operation_record(found.record()), ()

    def _bad(self, message: str) -> Answer:
        self.counters["platform.north.bad_request"] += 1
        self.metrics.note("platform.north.bad_request", message)
        return _error(400, message)

    # --- N1 --------------------------------------------------------------------------------------

    def _create(self, body: bytes, now: float) -> Answer:
        sender = self.sender
        if sender is None or self.closed:
            self.counters["platform.north.unavailable"] += 1
            return _error(503, "the stand-in is not running a load now")
        try:
            request = decode_job_request(body)
        except ProtocolError as exc:
            return self._bad(str(exc))
        if not request.active:
            return self._bad("job.request.active: the stand-in runs active jobs only")
        index = self.device_index
        unknown = [entity for entity in request.entities if entity not in index]
        if unknown:
            return self._bad(f"job.request.target.append.entities: unknown device {unknown[0]!r}")
        try:
            timeouts = self._timeouts_of(request)
        except ConfigError as exc:
            return self._bad(f"job.request.operationParameters: {exc}")
        job_id = self._job_ids.next()
        op_ids = [self._ids.next() for _ in request.entities]
        now_ms = self._ms(now)
        self.book.create(job_id, request, op_ids, now, now_ms)
        template = BodyTemplate(request.name, request.parameters)
        table = self.table
        for op_id, entity in zip(op_ids, request.entities, strict=True):
            op = Operation(
                op_id, index[entity], request.name, now, timeouts,
                template.render(op_id.encode(), now_ms),
            )  # fmt: skip
            op.on_done = self._operation_ended
            table.open(op)
            sender.dispatch(op)
        location = f"{self.paths.job(job_id)}".encode()
        return 201, b'{"id":"' + job_id.encode() + b'"}', ((b"Location", location),)

    def _timeouts_of(self, request: JobRequest) -> Timeouts:
        p = request.operation_parameters
        key = (p.timeout, p.ack_timeout, p.retries, p.retries_delay, p.retry_result_list)
        found = self._timeouts.get(key)
        if found is None:
            ack = p.ack_timeout if p.ack_timeout > 0 else p.timeout
            found = Timeouts(
                ack_timeout=min(ack, p.timeout), timeout=p.timeout, retries=p.retries,
                retries_delay=p.retries_delay, retry_result_list=p.retry_result_list,
            )  # fmt: skip
            if len(self._timeouts) < 1024:
                self._timeouts[key] = found
        return found

    # --- operations end, callbacks go out ------------------------------------------------------

    def _sync_sent(self, op: JobOperation) -> None:
        """Mark a job's operation ``IN_PROGRESS`` once its request has been written."""
        if op.state is not OperationState.WAITING_FOR_CONNECTION:
            return
        live = self.table.live.get(op.id)
        if live is not None and live.t_sent is not None:
            self.book.sent(op.id, self._ms(live.t_sent))

    def _operation_ended(self, op: Operation) -> None:
        job_op = self.book.operation(op.id)
        if job_op is None:
            return
        if op.t_sent is not None and job_op.state is OperationState.WAITING_FOR_CONNECTION:
            self.book.sent(op.id, self._ms(op.t_sent))
        job_op.attempts = op.timeouts.retries - op.retries_left + 1
        result = op.result if op.state is State.COMPLETED else None
        result = result or _RESULT_OF_STATE.get(op.state) or op.result or "ERROR_PROCESSING"
        now = trio.current_time()
        self.book.ended(op.id, result, op.steps or (), now, self._ms(now))

    def _finished(self, op: JobOperation) -> None:
        url = op.job.request.callback
        if url is None:
            return
        client = self._callbacks
        if client is None or self._posting >= OUTBOX:
            self.counters["platform.north.callbacks_dropped"] += 1
            return
        target = self._target(url)
        if target is None:
            return
        origin, path = target
        if self._idle.is_set():
            self._idle = trio.Event()
        self._posting += 1
        deadline = trio.current_time() + self.config.callback_timeout
        client.send(origin, path, op.wire, deadline, url)

    def _target(self, url: str) -> tuple[Origin, bytes] | None:
        found = self._origins.get(url)
        if found is None:
            try:
                origin, path = Origin.parse(url)
            except ConfigError as exc:
                self.counters["platform.north.callbacks_failed"] += 1
                self.metrics.note("platform.north.callbacks_failed", f"{url}: {exc}")
                return None
            found = (origin, (path or "/").encode())
            if len(self._origins) < 10_000:
                self._origins[url] = found
        return found

    async def run_callbacks(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """POST the notifications (runs until cancelled)."""
        timeout = self.config.callback_timeout
        limits = ClientLimits(
            max_connections=self.config.callback_connections,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )
        async with open_pool(limits=limits) as pool:
            client = MuxClient(pool, self._posted, self._not_posted)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(client.run)
                    self._callbacks = client
                    task_status.started()
            finally:
                self._callbacks = None

    def _done_posting(self) -> None:
        self._posting -= 1
        if not self._posting:
            self._idle.set()

    def _posted(self, url: str, answer: Response, now: float) -> None:
        self._done_posting()
        if 200 <= answer.status < 300:
            self.counters["platform.north.callbacks_sent"] += 1
        else:
            self.counters["platform.north.callbacks_failed"] += 1
            self.metrics.note(
                "platform.north.callbacks_failed", f"{url}: {answer.status} {answer.body[:80]!r}"
            )

    def _not_posted(self, url: str, exc: TransportError) -> None:
        self._done_posting()
        self.counters["platform.north.callbacks_failed"] += 1
        self.metrics.note("platform.north.callbacks_failed", f"{url}: {exc}")

    async def flush(self, seconds: float) -> None:
        """Wait (at most ``seconds``) until every notification queued so far has been POSTed."""
        with trio.move_on_after(seconds):
            await self._idle.wait()


def _page(query: dict[str, str] | Any) -> tuple[int | None, int | None]:
    def integer(key: str, default: int) -> int | None:
        text = query.get(key)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            return None
        return value if value >= 1 else None

    size = integer("size", MAX_PAGE)
    return integer("start", 1), None if size is None else min(size, MAX_PAGE)
