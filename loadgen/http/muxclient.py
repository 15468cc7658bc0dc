"""Requests written at once on an idle connection, answers called back: a ``Mux`` with a queue.

For the sides that issue one request per event and judge each answer by itself (the north
side's job creation, N1; the stand-in's callback notifications): ``send(origin, target, body,
deadline, token)`` writes the POST synchronously on an idle line of ``origin`` (one
non-blocking ``send``), or queues it while every line is busy and opens another line while the
origin is under ``max_connections``. The mux's one task reads every ready answer in a pass and
calls ``on_answer(token, response, now)`` (``on_written(token, now)`` told the moment it was
written: the service time's anchor), after the freed line took the origin's next queued
request; a failed exchange calls ``on_failure(token, error)`` with a ``TransportError``. So a
request costs no task step of its own and no ``epoll_ctl`` per wait (see ``loadgen.http.mux``).

A queued request whose ``deadline`` passes before a line is free fails with ``WriteTimeout``
when its turn comes (with ``fail_expired=False`` it is dropped silently: the caller's own timer
ends it, as the platform's in-flight table does); ``wanted(token)`` (default: always) lets the
caller drop one it no longer needs (a job that timed out meanwhile) without a failure.

An answer is timed when it is read, before its freed line takes the next request (a write, a
system call): that moment is ``on_answer``'s ``now``, for a caller that measures. A caller
sending many requests keeps each origin's ``MuxLane`` (``lane(origin)``) and writes with
``put``: no look-up of the origin per request, and a request written at once is
noted by the caller itself (``put`` returns True; ``on_written`` is told of those written later,
from the queue). The platform's sender does: its HTTP and HTTPS lanes are these.

Origins the mux does not take (a pool forcing h11, not Linux) are served by
``ConnectionPool.request`` in a task per request, bounded by the pool's own limit: same
callbacks, same order of events for the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final

import trio

from loadgen.errors import TransportError, WriteTimeout
from loadgen.http.client import ConnectionPool, Origin
from loadgen.http.mux import Mux, MuxLine
from loadgen.http.parser import Response

__all__ = ["MuxClient", "MuxLane"]

_ALWAYS: Final[Callable[[Any], bool]] = lambda token: True  # noqa: E731


class MuxLane:
    """One origin's lines and the requests waiting for one (``muxed``: the mux serves the
    origin; else its requests go to the pool, and the lane stays empty)."""

    __slots__ = ("idle", "lines", "muxed", "origin", "queue")

    def __init__(self, origin: Origin, muxed: bool) -> None:
        self.origin = origin
        self.muxed = muxed
        self.idle: list[MuxLine] = []  # most recently freed last
        self.lines = 0  # open, or being opened
        self.queue: deque[tuple[bytes, bytes, float, Any]] = deque()

    def __repr__(self) -> str:
        return (
            f"<MuxLane {self.origin} lines={self.lines} idle={len(self.idle)} "
            f"queued={len(self.queue)}>"
        )


class MuxClient:
    """See the module docstring. ``run`` must be started before the first ``send``."""

    def __init__(
        self,
        pool: ConnectionPool,
        on_answer: Callable[[Any, Response, float], None],
        on_failure: Callable[[Any, TransportError], None],
        *,
        on_written: Callable[[Any, float], None] | None = None,
        wanted: Callable[[Any], bool] = _ALWAYS,
        fail_expired: bool = True,
    ) -> None:
        self.pool = pool
        self.mux = Mux(pool)
        self.mux.on_answer = self._answered
        self.mux.on_failure = self._failed
        self.mux.on_dropped = self._dropped
        self.on_answer = on_answer
        self.on_failure = on_failure
        self.on_written = on_written
        self.wanted = wanted
        self.fail_expired = fail_expired
        self.max_lines = pool.limits.max_connections
        self._origins: dict[Origin, MuxLane] = {}
        self._now = trio.lowlevel.current_clock().current_time
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<MuxClient {list(self._origins.values())} {self.mux!r}>"

    @property
    def queued(self) -> int:
        return sum(len(state.queue) for state in self._origins.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The mux's reader and the tasks that open lines (until cancelled)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.mux.run)
            task_status.started()

    def lane(self, origin: Origin) -> MuxLane:
        """``origin``'s lane (made on first use)."""
        state = self._origins.get(origin)
        if state is None:
            state = self._origins[origin] = MuxLane(origin, self.mux.serves(origin))
        return state

    def send(self, origin: Origin, target: bytes, body: bytes, deadline: float, token: Any) -> None:
        """POST ``body`` to ``target`` on ``origin`` now if a line is idle, else when one is."""
        state = self._origins.get(origin)
        if state is None:
            state = self.lane(origin)
        if not state.muxed:
            assert self._nursery is not None
            self._nursery.start_soon(self._via_pool, origin, target, body, deadline, token)
            return
        if self.put(state, target, body, deadline, token) and self.on_written is not None:
            self.on_written(token, self._now())

    def put(self, lane: MuxLane, target: bytes, body: bytes, deadline: float, token: Any) -> bool:
        """``send`` on the lane of an origin the mux serves (``lane.muxed``), kept by the
        caller. True: written at once, which the caller notes itself (``on_written`` is told
        only of the requests written later, from the queue: one call less per request on the
        caller's hot path); False: queued."""
        if not lane.queue:
            idle = lane.idle
            while idle:
                if idle.pop().write(target, body, deadline, token):
                    return True
        lane.queue.append((target, body, deadline, token))
        if lane.lines < self.max_lines:
            lane.lines += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._open_line, lane)
        return False

    # --- the mux's callbacks -----------------------------------------------------------------

    def _serve(self, state: MuxLane, line: MuxLine, now: float) -> None:
        """``line`` is free (at ``now``): write the origin's next queued request on it, else
        keep it idle."""
        queue = state.queue
        while queue:
            target, body, deadline, token = queue[0]
            if not self.wanted(token):
                queue.popleft()
                continue
            if now >= deadline:
                queue.popleft()
                if self.fail_expired:
                    self.on_failure(
                        token, WriteTimeout("no connection free by the request's deadline")
                    )
                continue
            # Taken off the queue only once written: a line that fails to write is dropped,
            # and its drop opens another for the request still at the head of the queue.
            if line.write(target, body, deadline, token):
                queue.popleft()
                if self.on_written is not None:
                    self.on_written(token, now)
            return
        state.idle.append(line)

    def _answered(self, line: MuxLine, token: Any, response: Response) -> None:
        # Timed as read, before the freed line's next write (see the module docstring).
        now = self._now()
        if line.alive:  # free before the answer is judged (the caller may send again at once)
            state: MuxLane = line.holder
            if state.queue:
                self._serve(state, line, now)
            else:  # (``_serve`` inlined: the common case, one call less per answer)
                state.idle.append(line)
        self.on_answer(token, response, now)

    def _failed(self, line: MuxLine, token: Any, error: TransportError) -> None:
        self.on_failure(token, error)

    def _dropped(self, line: MuxLine) -> None:
        state: MuxLane = line.holder
        state.lines -= 1
        if line in state.idle:  # the server closed an idle connection (a scan of <= max)
            state.idle.remove(line)
        if state.queue and state.lines < self.max_lines and self._nursery is not None:
            state.lines += 1
            self._nursery.start_soon(self._open_line, state)

    # --- opening lines, and the origins the mux does not take --------------------------------

    async def _open_line(self, state: MuxLane) -> None:
        """Open a line (already counted in ``state.lines``) and serve the queue with it; failing
        to connect fails the request at the head of the queue, as the pool's request would."""
        opened = False
        try:
            while state.queue and not opened:
                *_, deadline, token = state.queue[0]
                if not self.wanted(token):
                    state.queue.popleft()
                    continue
                try:
                    line = await self.mux.open(state.origin, deadline, state)
                except TransportError as exc:
                    # Only a request still waiting fails: one a freed line took meanwhile has
                    # its own outcome coming (one outcome per request).
                    if state.queue and state.queue[0][3] is token:
                        state.queue.popleft()
                        self.on_failure(token, exc)
                    continue
                opened = True  # the line holds the count now; its drop gives it back
                self._serve(state, line, self._now())
        finally:
            if not opened:
                state.lines -= 1

    async def _via_pool(
        self, origin: Origin, target: bytes, body: bytes, deadline: float, token: Any
    ) -> None:
        if self.on_written is not None:
            self.on_written(token, self._now())  # as it goes to the pool (its write is inside)
        try:
            response = await self.pool.request(origin, target, body, deadline=deadline)
        except TransportError as exc:
            self.on_failure(token, exc)
            return
        self.on_answer(token, response, self._now())
