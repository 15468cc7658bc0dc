"""HTTP/1.1 server on trio: the fast path per connection, h11 for whatever it declines.

Theory of operation
-------------------
Each accepted connection runs ``_Connection.run`` in the server's handler nursery. It reads into a
``RequestReader``; complete requests go to the application ``Handler`` (an async function from
``Request`` to ``Reply``) and the rendered reply is written back. Pipelined requests already in the
buffer are served in order before the next read.

The mux: a server given the handler's synchronous face (``HTTPServer(handler, now=now)``: the
``Reply`` when it needs no wait, else an awaitable of it) holds its plain connections, while they
are between requests, in one ``select.epoll`` of its own read by one task (``_Mux``), as the
client's ``loadgen.http.mux`` does for answers: a task per connection costs a task step and an
``epoll_ctl`` per request, most of a small exchange's CPU (the device fleet: 34 -> 21 µs per
operation, ``make bench`` [3]). The mux answers the common case itself: a whole request read by
the fast parser, a ``SEND`` reply from ``now``, keep-alive, written whole by one ``send``. At the
first thing that is not (a wait, a misbehaviour, a close, HEAD or CONNECT, a declined or malformed
message, an answer the socket did not take whole, a request arriving too slowly) it hands the
connection to a task that goes on with the code below from exactly there, and takes it back when
it is idle again. A TLS connection does its handshake in a task, then is held the same way
(``TLSStream.decrypt``/``encrypt`` on the socket's bytes); ``force_h11`` runs a task each.

When the fast parser declines a message, the connection hands every unconsumed byte to an
``h11.Connection`` and is served by h11 from then on (chunked bodies, ``Expect: 100-continue``,
HTTP/1.0, and the exact error for malformed input). Both paths call the same handler.

Failures stay inside their connection: a reset or broken TLS stream from the peer is counted and the
connection ends; malformed input gets 400, an oversize head 431, an oversize body 413, a request not
completed within ``read_timeout`` 408 (slow-drip senders), each counted; a handler that raises gets a
500 and is counted. Nothing a peer does can end ``serve`` for the other connections.

Closing: a connection the server ends after writing an answer (an error answer, ``Connection:
close``, a draining server) is half-closed and its input drained for at most ``ServerLimits.linger``
seconds / ``linger_bytes`` before the close (``loadgen.http.stream.close_gracefully``): otherwise a
peer that pipelined more bytes would get a reset that destroys the tail of the answers before.
Idle, timed-out and reset connections close at once (there is no answer to protect).

Descriptor pressure: when ``accept`` fails for lack of file descriptors, the accept loop calls
``HTTPServer.on_descriptor_shortage``, which closes the connections that have been idle (waiting
for their next request) the longest, so that new clients are served; counted as ``shed_idle``
(and the failures as ``accept_failures``). A keep-alive client that finds its connection closed reconnects; one
that is never let in cannot.

Timeouts: each connection runs in one cancel scope and stores the deadline of its current phase
(waiting for a request, reading it, writing the answer) as a plain float; one ``Watchdog`` task per
server cancels the scopes whose deadline has passed (``loadgen.http.deadlines`` says why).

``Reply`` also carries the few misbehaviours a simulated device needs (close without answering,
never answer, drip the bytes slowly); they are executed here because only the connection can.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import logging
import math
import select
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import h11
import trio
from trio.lowlevel import wait_readable

from loadgen.errors import ListenError, RemoteProtocolError
from loadgen.http.deadlines import Watchdog, resolution_for
from loadgen.http.errors import PEER_GONE
from loadgen.http.parser import (
    DECLINED,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    Request,
    RequestReader,
)
from loadgen.http.render import JSON, reason_phrase, render_error, render_response
from loadgen.http.stream import (
    FAIR_SHARE,
    Layered,
    RawStream,
    accept_loop,
    close_gracefully,
)
from loadgen.http.tlsstream import TLSStream
from loadgen.units import Seconds

__all__ = [
    "DEFAULT_BACKLOG",
    "Action",
    "HTTPServer",
    "Handler",
    "Immediate",
    "Reply",
    "ServerLimits",
    "ServerStats",
    "awaiting",
]

log = logging.getLogger(__name__)

RECEIVE_SIZE: Final = 65536
#: Whether the server's mux can run here (Linux epoll); elsewhere a task per connection always.
MUX_AVAILABLE: Final = hasattr(select, "epoll")
#: Ready connections the mux serves per step; more wait for its next step, after the other
#: tasks that are ready (the senders, the outbox): ~15 µs each, a step stays well under 1 ms.
MUX_BATCH: Final = 32
_NOT_PLAIN: Final = frozenset({b"HEAD", b"CONNECT"})
#: Listen backlog of the config records (``backlog``): connections the kernel completes and
#: holds while the accept loop is busy. As high as a port number goes; Linux silently caps it at
#: ``net.core.somaxconn`` (4096 on most current systems). A burst of new connections beyond it
#: is refused or left unanswered (SYN dropped), which the connecting side sees as an error.
DEFAULT_BACKLOG: Final = 65535


class Action(enum.Enum):
    """How the connection delivers a ``Reply``."""

    SEND = "send"  # write it (the normal case)
    CLOSE = "close"  # close the connection without answering
    HANG = "hang"  # never answer; keep the connection until the peer gives up
    DRIP = "drip"  # write the answer a few bytes at a time


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler returns. ``wire`` renders once, so constant replies cost nothing per use."""

    status: int
    body: bytes = b""
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    action: Action = Action.SEND
    drip_bytes: int = 1
    drip_interval: float = 0.05
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def wire(self) -> bytes:
        """The keep-alive rendering, cached."""
        wire = self._wire
        if wire is None:
            wire = self.render(True)
            object.__setattr__(self, "_wire", wire)
        return wire

    def render(self, keep_alive: bool) -> bytes:
        return render_response(
            self.status,
            self.body,
            content_type=self.content_type,
            keep_alive=keep_alive,
            headers=self.headers,
        )


Handler = Callable[[Request], Awaitable[Reply]]
#: The handler's synchronous face (``HTTPServer(now=...)``): the ``Reply`` when it is ready
#: without a wait, else an awaitable of it (awaited in a task of its own, which must await it).
Immediate = Callable[[Request], "Reply | Awaitable[Reply]"]
#: What a task serving a connection runs: True/False as ``_Connection.run``, None: back to the mux.
Work = Callable[[], Awaitable["bool | None"]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    max_head: int = DEFAULT_MAX_HEAD  # bytes of request line + headers -> 431
    max_body: int = DEFAULT_MAX_BODY  # bytes of body -> 413
    idle_timeout: Seconds = 120.0  # keep-alive connection with no request in progress
    read_timeout: Seconds = 30.0  # from the first byte of a request to its last -> 408
    write_timeout: Seconds = 30.0  # to write one answer
    hang_limit: Seconds = 3600.0  # a HANG reply never holds a connection longer than this
    linger: Seconds = 2.0  # draining input before closing after an answer (see the header)
    linger_bytes: int = 4 << 20  # ... and at most this much of it


@dataclass(slots=True)
class ServerStats:
    """Live counters of one server. ``snapshot()`` gives a plain dict for results."""

    connections_accepted: int = 0
    connections_open: int = 0
    requests_fast: int = 0
    requests_h11: int = 0
    peer_resets: int = 0
    idle_closed: int = 0
    incomplete_requests: int = 0  # peer closed mid-request
    handler_errors: int = 0
    tls_errors: int = 0
    write_timeouts: int = 0
    lingering: int = 0  # connections answered and closing gracefully (no longer "open")
    linger_cut: int = 0  # graceful closes cut short: the peer kept its side open or kept sending
    accept_failures: int = 0  # accept failed for lack of descriptors (EMFILE/ENFILE)
    shed_idle: int = 0  # idle connections closed to let new ones in (see the header)
    errors: Counter[int] = field(
        default_factory=Counter
    )  # status -> count (400, 408, 413, 431, 500)

    def snapshot(self) -> dict[str, object]:
        return {
            "connections_accepted": self.connections_accepted,
            "connections_open": self.connections_open,
            "requests_fast": self.requests_fast,
            "requests_h11": self.requests_h11,
            "peer_resets": self.peer_resets,
            "idle_closed": self.idle_closed,
            "incomplete_requests": self.incomplete_requests,
            "handler_errors": self.handler_errors,
            "tls_errors": self.tls_errors,
            "write_timeouts": self.write_timeouts,
            "lingering": self.lingering,
            "linger_cut": self.linger_cut,
            "accept_failures": self.accept_failures,
            "shed_idle": self.shed_idle,
            "errors_by_status": {str(k): v for k, v in sorted(self.errors.items())},
        }


def awaiting(now: Immediate) -> Handler:
    """The ``Handler`` of a ``now`` face (what the h11 path and other callers await)."""

    async def handler(request: Request) -> Reply:
        outcome = now(request)
        return outcome if isinstance(outcome, Reply) else await outcome

    return handler


class _Timeout(Exception):
    pass


class HTTPServer:
    """Serves one ``Handler`` on any number of listeners.

    ``await nursery.start(server.serve, host, port)`` returns the bound (host, port) list;
    ``server.shutdown()`` stops accepting, lets requests in progress finish and closes idle
    connections; cancelling ``serve`` ends everything at once.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        limits: ServerLimits | None = None,
        force_h11: bool = False,
        now: Immediate | None = None,
    ) -> None:
        self.handler = handler
        self.now = now
        self.mux: _Mux | None = None
        self.limits = limits or ServerLimits()
        self.stats = ServerStats()
        self.force_h11 = force_h11
        self._draining = False
        self._accept_scope: trio.CancelScope | None = None
        self._connections: set[_Connection] = set()
        self._idle_order = 0  # bumped each time a connection turns idle: orders them by age
        lim = self.limits
        self.watchdog = Watchdog(
            resolution_for(lim.idle_timeout, lim.read_timeout, lim.write_timeout)
        )

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<HTTPServer open={s.connections_open} fast={s.requests_fast} h11={s.requests_h11} "
            f"draining={self._draining}>"
        )

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int | None = None,
        task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # trio picks the addresses and socket options; the sockets are then served by our lean
        # accept loop and RawStream (see loadgen.http.stream for why).
        try:
            tcp_listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
        except OSError as exc:  # in use, not ours, no right: the user's choice of address
            raise ListenError(host, port, exc.strerror or str(exc)) from exc
        sockets = [socket.socket(fileno=listener.socket.detach()) for listener in tcp_listeners]
        bound = [sock.getsockname()[:2] for sock in sockets]
        serve_one: Callable[[RawStream], Awaitable[None]] = self._serve_connection
        use_mux = self.now is not None and MUX_AVAILABLE and not self.force_h11
        if use_mux and self.mux is not None:
            raise RuntimeError("an HTTPServer with a now face serves one listener set")
        if ssl_context is not None:  # the handshake in a task; the mux holds it once idle
            serve_one = partial(self._serve_tls_connection, ssl_context)
        elif use_mux:
            serve_one = self._adopt
        async with trio.open_nursery() as outer:
            await outer.start(self.watchdog.run)
            async with trio.open_nursery() as handlers:
                if use_mux:
                    self.mux = _Mux(self)
                    await handlers.start(self.mux.run, handlers)
                with trio.CancelScope() as self._accept_scope:
                    async with trio.open_nursery() as acceptors:
                        for sock in sockets:
                            acceptors.start_soon(
                                accept_loop, sock, serve_one, handlers, self.on_descriptor_shortage
                            )
                        task_status.started(bound)
                # After shutdown(): listeners are closed; connection tasks finish and close.
            outer.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Stop accepting; idle keep-alive connections close, busy ones after their answer."""
        self._draining = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for conn in list(self._connections):
            if conn.phase is _Phase.IDLE:
                conn.end()
        if self.mux is not None:
            self.mux.end_if_drained()

    def on_descriptor_shortage(self, at_most: int) -> int:
        """The accept loop's call when accept failed for lack of descriptors: count it and close
        up to ``at_most`` of the connections idle the longest; returns how many were closed.

        Their descriptors are released now (not when their tasks next run), so the caller can
        accept again at once.
        """
        self.stats.accept_failures += 1
        idle = [c for c in self._connections if c.phase is _Phase.IDLE and not c.shed]
        oldest = heapq.nsmallest(at_most, idle, key=_idle_order)
        for conn in oldest:
            conn.shed = True
            conn.end()
            _release_descriptor(conn.stream)
        self.stats.shed_idle += len(oldest)
        return len(oldest)

    async def _serve_tls_connection(self, context: ssl.SSLContext, raw: RawStream) -> None:
        await self._serve_connection(TLSStream(raw, context, server_side=True))

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        """A connection served by a task of its own from start to end."""
        conn = self._connection(stream)
        await self._drive(conn, partial(conn._run_h11, b"") if self.force_h11 else conn._run_fast)

    async def _adopt(self, stream: RawStream) -> None:
        """A plain connection of a server with a ``now`` face: the mux holds it (see ``_Mux``)."""
        assert self.mux is not None
        self.mux.hold(self._connection(stream))
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _connection(self, stream: trio.abc.Stream) -> _Connection:
        conn = _Connection(self, stream)
        stats = self.stats
        stats.connections_accepted += 1
        stats.connections_open += 1
        self._connections.add(conn)
        self.watchdog.watch(conn)
        return conn

    def _gone(self, conn: _Connection) -> None:
        """The connection's end in the books (its stream is being closed by the caller)."""
        self.stats.connections_open -= 1
        self._connections.discard(conn)
        self.watchdog.unwatch(conn)

    async def _drive(self, conn: _Connection, work: Work) -> None:
        """Serve ``conn`` in this task with ``work`` until it ends, or until it is idle again
        and its mux takes it back; then close it (gracefully after an answer, see the header)."""
        stats = self.stats
        stream = conn.stream
        linger = False
        back = False
        try:
            outcome = await conn.run(work)
            back = outcome is None
            linger = outcome is True
        except PEER_GONE as exc:
            if conn.shed:
                pass  # our own doing: counted as shed_idle
            elif isinstance(exc.__cause__, ssl.SSLError) or isinstance(exc, ssl.SSLError):
                stats.tls_errors += 1
            else:
                stats.peer_resets += 1
        finally:
            if not back:
                self._gone(conn)
                if not linger:
                    await trio.aclose_forcefully(stream)
        if back:
            assert self.mux is not None
            self.mux.hold(conn)
            return
        if linger:
            lim = self.limits
            stats.lingering += 1
            try:
                closed = await close_gracefully(
                    stream, seconds=lim.linger, max_bytes=lim.linger_bytes
                )
            finally:
                stats.lingering -= 1
            if not closed:
                stats.linger_cut += 1


class _Phase(enum.Enum):
    IDLE = "idle"  # waiting for the first byte of a request
    READING = "reading"  # a request has started arriving
    BUSY = "busy"  # the handler runs; no deadline
    WRITING = "writing"  # writing the answer


def _idle_order(conn: _Connection) -> int:
    return conn.idle_order


def _release_descriptor(stream: trio.abc.Stream) -> None:
    """Close the socket under ``stream`` now (a task waiting on it wakes up)."""
    transport = stream
    if not isinstance(stream, RawStream) and isinstance(stream, Layered):
        transport = stream.transport_stream
    if isinstance(transport, RawStream):
        transport.close_now()


class _Connection:
    __slots__ = (
        "deadline",
        "idle_order",
        "owned",
        "phase",
        "reader",
        "request_deadline",
        "scope",
        "server",
        "shed",
        "stream",
    )

    def __init__(self, server: HTTPServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.phase = _Phase.IDLE
        self.deadline = math.inf  # of the current phase; enforced by the server's watchdog
        self.request_deadline = math.inf  # read_timeout of the request arriving (fast path)
        self.scope: trio.CancelScope | None = None  # while a task serves it
        self.owned = False  # while the server's mux holds it (between requests)
        server._idle_order += 1
        self.idle_order = server._idle_order  # when it last turned idle (for shedding)
        self.shed = False  # closed by on_descriptor_shortage
        limits = server.limits
        self.reader = RequestReader(max_head=limits.max_head, max_body=limits.max_body)

    def __repr__(self) -> str:
        return f"<_Connection {self.phase.value} deadline={self.deadline:.3f}>"

    def expire(self) -> None:
        self.deadline = math.inf
        if self.scope is not None:
            self.scope.cancel()
        elif self.owned:
            mux = self.server.mux
            assert mux is not None
            mux.expire(self)

    def end(self) -> None:
        """End the connection now, wherever it is served (an idle one when the server drains
        or sheds)."""
        if self.scope is not None:
            self.scope.cancel()
        elif self.owned:
            mux = self.server.mux
            assert mux is not None
            mux.close(self)

    async def run(self, work: Work) -> bool | None:
        """Serve the connection with ``work`` (the fast path, h11, or where the mux left it).
        True when it ends after an answer while the peer may still be sending (the caller then
        closes gracefully, see the module header); None when it is idle again and belongs to
        the mux."""
        outcome: bool | None = False
        scope = self.scope = trio.CancelScope()
        try:
            with scope:
                outcome = await work()
        finally:
            self.scope = None
        if self.shed:
            return False
        if scope.cancelled_caught and not self.server._draining:
            return await self._timed_out()
        return outcome

    async def _timed_out(self) -> bool:
        """The phase's deadline passed: count it, and say why when a request was arriving."""
        stats = self.server.stats
        if self.phase is _Phase.READING:
            stats.errors[408] += 1
            with trio.move_on_after(self.server.limits.write_timeout) as write:
                await self.stream.send_all(
                    render_error(408, "request not complete within the read timeout")
                )
            return not write.cancelled_caught
        if self.phase is _Phase.WRITING:
            stats.write_timeouts += 1
        else:
            stats.idle_closed += 1
        return False

    def begin(self, request: Request) -> Reply | Awaitable[Reply]:
        """The handler called for ``request``: through ``now`` when the server has it."""
        server = self.server
        try:
            now = server.now
            return server.handler(request) if now is None else now(request)
        except Exception:
            return self._handler_failed(request)

    async def _refuse_request(self, error: RemoteProtocolError) -> bool:
        await self._fail(error.status, str(error))
        return True

    async def _run_fast(
        self,
        event: Request | None = None,
        outcome: Reply | Awaitable[Reply] | None = None,
        unsent: memoryview | None = None,
    ) -> bool | None:
        """The fast path; from where the mux left the connection when it hands one over: a
        request whose answer needs a wait (``event`` and ``outcome``), or an answer the socket
        did not take whole (``unsent``)."""
        server = self.server
        limits = server.limits
        stats = server.stats
        watchdog = server.watchdog
        idle_span = watchdog.span(limits.idle_timeout)
        read_span = watchdog.span(limits.read_timeout)
        write_span = watchdog.span(limits.write_timeout)
        reader = self.reader
        receive = self.stream.receive_some
        send_all = self.stream.send_all
        request_deadline = self.request_deadline
        if unsent is not None:  # bytes the mux wrote in part: on the socket as they are
            await _transport(self).send_all(unsent)
        while True:
            if event is None:
                if reader.buffered:
                    try:
                        parsed = reader.next_request()
                    except RemoteProtocolError as exc:
                        await self._fail(exc.status, str(exc))
                        return True
                    if parsed is DECLINED:
                        return await self._run_h11(reader.take_buffer())
                    if isinstance(parsed, Request):
                        event = parsed
                if event is None:
                    if reader.buffered:
                        self.phase = _Phase.READING
                        if request_deadline == math.inf:
                            request_deadline = watchdog.now + read_span
                        self.deadline = request_deadline
                        data = await receive(RECEIVE_SIZE)
                    else:
                        if server._draining:
                            return False
                        if server.mux is not None and _mux_ready(self.stream):
                            return None  # idle: the mux reads it from here
                        self.phase = _Phase.IDLE
                        server._idle_order += 1
                        self.idle_order = server._idle_order
                        self.deadline = watchdog.now + idle_span
                        data = await receive(RECEIVE_SIZE)
                        request_deadline = watchdog.now + read_span
                    if not data:
                        if reader.buffered:
                            stats.incomplete_requests += 1
                        return False
                    reader.feed(data)
                    continue
            request = event
            event = None
            self.phase = _Phase.BUSY
            self.deadline = math.inf
            if outcome is None:
                stats.requests_fast += 1
                request_deadline = math.inf
                outcome = self.begin(request)
            try:
                reply = outcome if isinstance(outcome, Reply) else await outcome
            except Exception:
                reply = self._handler_failed(request)
            outcome = None
            if reply.status < 300 and request.method == b"CONNECT":
                reply = self._no_tunnel()
            keep_alive = request.keep_alive and not server._draining
            self.phase = _Phase.WRITING
            self.deadline = watchdog.now + write_span
            head_only = request.method == b"HEAD"
            if reply.action is Action.SEND:
                wire = reply.wire if keep_alive else reply.render(False)
                if head_only and reply.body:  # the head a GET would get, without the body
                    wire = wire[: -len(reply.body)]
                await send_all(wire)
            elif not await self._deliver(reply, keep_alive, head_only=head_only):
                return reply.action is Action.DRIP  # it was answered (CLOSE and HANG were not)
            if not keep_alive:
                return True

    def _handler_failed(self, request: Request) -> Reply:
        self.server.stats.handler_errors += 1
        self.server.stats.errors[500] += 1  # the 500 is an answered error like 400/413/431
        log.exception("handler failed on %r", request)
        return _INTERNAL_ERROR

    def _no_tunnel(self) -> Reply:
        """A 2xx to CONNECT would open a tunnel (h11 switches protocols and then refuses the body:
        the server would fail); this server does not tunnel, whatever the handler said."""
        self.server.stats.errors[501] += 1
        return _NO_TUNNEL

    async def _call(self, request: Request) -> Reply:
        outcome = self.begin(request)
        try:
            return outcome if isinstance(outcome, Reply) else await outcome
        except Exception:
            return self._handler_failed(request)

    async def _deliver(self, reply: Reply, keep_alive: bool, *, head_only: bool) -> bool:
        """Write (or misbehave as) the reply; ``head_only`` for a HEAD request. False when the
        connection must end."""
        action = reply.action
        if action is Action.CLOSE:
            return False
        if action is Action.HANG:
            await self._hang()
            return False
        wire = reply.render(keep_alive)
        if head_only and reply.body:
            wire = wire[: -len(reply.body)]
        if action is Action.SEND:
            await self.stream.send_all(wire)
            return True
        step = max(1, reply.drip_bytes)
        self.deadline = trio.current_time() + self.server.limits.hang_limit
        for start in range(0, len(wire), step):
            await self.stream.send_all(wire[start : start + step])
            await trio.sleep(reply.drip_interval)
        return keep_alive

    async def _hang(self) -> None:
        """Answer nothing; read and drop until the peer closes (or the hang limit passes)."""
        self.deadline = trio.current_time() + self.server.limits.hang_limit
        while await self.stream.receive_some(RECEIVE_SIZE):
            pass

    async def _fail(self, status: int, message: str) -> None:
        self.server.stats.errors[status] += 1
        self.deadline = trio.current_time() + self.server.limits.write_timeout
        await self.stream.send_all(render_error(status, message))

    async def _run_h11(self, initial: bytes) -> bool:
        """Serve the rest of the connection with h11 (the declined-message path)."""
        limits = self.server.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        if initial:
            conn.receive_data(initial)  # (b"" would mean end of stream to h11)
        while True:
            try:
                request = await self._h11_read_request(conn)
            except RemoteProtocolError as exc:
                await self._fail(exc.status, str(exc))
                return True
            except h11.RemoteProtocolError as exc:
                await self._fail(exc.error_status_hint, f"malformed request: {exc}")
                return True
            if request is None:
                return False
            self.server.stats.requests_h11 += 1
            self.phase = _Phase.BUSY
            self.deadline = math.inf
            reply = await self._call(request)
            if reply.status < 300 and request.method == b"CONNECT":
                reply = self._no_tunnel()
            keep_alive = request.keep_alive and not self.server._draining
            self.phase = _Phase.WRITING
            self.deadline = trio.current_time() + limits.write_timeout
            if reply.action is not Action.SEND:
                await self._deliver(reply, False, head_only=request.method == b"HEAD")
                return reply.action is Action.DRIP
            await self._h11_send(conn, reply, keep_alive, head_only=request.method == b"HEAD")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return True
            conn.start_next_cycle()

    async def _h11_next(self, conn: h11.Connection, deadline: float) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.phase is _Phase.IDLE and conn.trailing_data[0]:
                # A request has started arriving (as in the fast path): read_timeout bounds it.
                self.phase = _Phase.READING
                deadline = trio.current_time() + self.server.limits.read_timeout
            self.deadline = deadline
            data = await self.stream.receive_some(RECEIVE_SIZE)
            conn.receive_data(bytes(data))

    async def _h11_read_request(self, conn: h11.Connection) -> Request | None:
        limits = self.server.limits
        idle_deadline = trio.current_time() + limits.idle_timeout
        if self.server._draining and not conn.trailing_data[0]:
            return None
        self.phase = _Phase.IDLE
        self.server._idle_order += 1
        self.idle_order = self.server._idle_order
        event = await self._h11_next(conn, idle_deadline)
        if self.phase is _Phase.READING:  # the head came in pieces: its deadline holds
            deadline = self.deadline
        else:
            deadline = trio.current_time() + limits.read_timeout
        self.phase = _Phase.READING
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
        length = _declared_length(event)
        if length is not None and length > limits.max_body:
            raise RemoteProtocolError(
                f"body of {length} bytes exceeds the limit of {limits.max_body}", status=413
            )
        if conn.they_are_waiting_for_100_continue:
            await self.stream.send_all(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        body = bytearray()
        while True:
            part = await self._h11_next(conn, deadline)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > limits.max_body:
                    raise RemoteProtocolError(
                        f"body exceeds the limit of {limits.max_body} bytes", status=413
                    )
            elif isinstance(part, h11.EndOfMessage):
                break
            else:  # ConnectionClosed mid-body
                self.server.stats.incomplete_requests += 1
                return None
        keep_alive = conn.their_state is not h11.MUST_CLOSE and _h11_keep_alive(event)
        return Request(
            event.method,
            event.target,
            [(name, value) for name, value in event.headers],
            bytes(body),
            keep_alive,
        )

    async def _h11_send(
        self, conn: h11.Connection, reply: Reply, keep_alive: bool, *, head_only: bool
    ) -> None:
        headers = list(reply.headers)
        if reply.body and reply.content_type:
            headers.append((b"Content-Type", reply.content_type))
        if reply.status not in (204, 304):
            headers.append((b"Content-Length", b"%d" % len(reply.body)))
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        out = (
            conn.send(
                h11.Response(
                    status_code=reply.status, headers=headers, reason=reason_phrase(reply.status)
                )
            )
            or b""
        )
        if reply.body and not head_only:  # (h11 frames an answer to HEAD as bodiless)
            out += conn.send(h11.Data(data=reply.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(out)


class _Mux:
    """The plain connections of a server with a ``now`` face, while between requests: one epoll
    of our own, read by one task (see the module header)."""

    __slots__ = ("_conns", "_ended", "_epoll", "_handlers", "_scope", "handed_off", "server")

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self._epoll = select.epoll()
        self._conns: dict[int, _Connection] = {}
        self._handlers: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._ended = False  # the task has ended (drained, or cancelled with the server)
        self.handed_off = 0  # requests (or connections) given to a task: they needed a wait

    def __repr__(self) -> str:
        return f"<_Mux connections={len(self._conns)} handed_off={self.handed_off}>"

    def __len__(self) -> int:
        return len(self._conns)

    async def run(
        self,
        handlers: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read every held connection (until cancelled, or drained: see ``end_if_drained``);
        hand-offs run in ``handlers``."""
        self._handlers = handlers
        epoll = self._epoll
        conns = self._conns
        readable = self._readable
        try:
            with trio.CancelScope() as self._scope:
                task_status.started()
                while True:
                    await wait_readable(epoll)
                    for fd, _ in epoll.poll(0, MUX_BATCH):
                        conn = conns.get(fd)
                        if conn is not None:
                            readable(conn)
        finally:
            self._ended = True
            for conn in list(conns.values()):
                self.close(conn)
            epoll.close()

    @property
    def closed(self) -> bool:
        """Holds nothing more: the task has ended or is ending."""
        return self._ended or (self._scope is not None and self._scope.cancel_called)

    def end_if_drained(self) -> None:
        """After ``shutdown``: once no connection is held, the task ends (the server's handler
        nursery then closes when the last hand-off does)."""
        if self.server._draining and not self._conns and self._scope is not None:
            self._scope.cancel()

    # --- holding a connection ------------------------------------------------------------

    def hold(self, conn: _Connection) -> None:
        """Hold ``conn`` from now on: a new connection (counted by the server), or one a task
        has served until it was idle again (``_Connection._run_fast``); closed instead when the
        mux is ending or the server draining."""
        if self.closed or self.server._draining:
            self.close(conn)
            return
        conn.owned = True
        fd = _fileno(conn)
        self._conns[fd] = conn
        self._epoll.register(fd, select.EPOLLIN)
        self._idle(conn)

    def _idle(self, conn: _Connection) -> None:
        server = self.server
        conn.phase = _Phase.IDLE
        server._idle_order += 1
        conn.idle_order = server._idle_order
        conn.deadline = server.watchdog.now + server.watchdog.span(server.limits.idle_timeout)
        conn.request_deadline = math.inf

    def _release(self, conn: _Connection) -> None:
        """Out of the epoll (before a close: the descriptor may be reused at once)."""
        conn.owned = False
        fd = _fileno(conn)
        del self._conns[fd]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def close(self, conn: _Connection) -> None:
        """Close a held connection at once (nothing is owed to its peer)."""
        if conn.owned:
            self._release(conn)
        self.server._gone(conn)
        stream = conn.stream
        assert isinstance(stream, (RawStream, TLSStream))
        stream.close_now()
        self.end_if_drained()

    def expire(self, conn: _Connection) -> None:
        """The watchdog's: an idle connection closes; a request arriving too slowly gets 408."""
        if conn.phase is _Phase.READING and not self.server._draining:  # (as ``run``)
            self._hand_off(conn, conn._timed_out)
            return
        if not self.server._draining:
            self.server.stats.idle_closed += 1
        self.close(conn)

    def _hand_off(self, conn: _Connection, work: Work) -> None:
        """The connection leaves the mux for a task that goes on with ``work``: the server's
        own code for everything but the common case (``HTTPServer._drive``)."""
        self._release(conn)
        self.handed_off += 1
        assert self._handlers is not None
        self._handlers.start_soon(self.server._drive, conn, work)
        self.end_if_drained()

    # --- the task's pass over one ready connection -----------------------------------------

    def _readable(self, conn: _Connection) -> None:
        stream = conn.stream
        tls = stream if isinstance(stream, TLSStream) else None
        sock = _transport(conn).socket
        stats = self.server.stats
        try:
            data: bytes | None = sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError:
            stats.peer_resets += 1
            self.close(conn)
            return
        reader = conn.reader
        if data and tls is not None:
            try:
                data = tls.decrypt(data)
            except trio.BrokenResourceError:
                stats.tls_errors += 1
                self.close(conn)
                return
            if data == b"":  # a record not complete yet
                return
        if not data:  # the end (of the socket, or the peer's close_notify)
            if reader.buffered:
                stats.incomplete_requests += 1
            self.close(conn)
            return
        reader.feed(data)  # (a request left incomplete gets its read deadline in ``_serve``)
        self._serve(conn, sock.send, tls)

    def _serve(
        self, conn: _Connection, send: Callable[[bytes], int], tls: TLSStream | None
    ) -> None:
        """Answer every complete request buffered, as ``_Connection._run_fast`` would; hand the
        connection to a task at the first thing that is not the common case, or after
        ``FAIR_SHARE`` answers in one pass (a peer pipelining many must not hold up the rest)."""
        server = self.server
        stats = server.stats
        reader = conn.reader
        answered = 0
        while reader.buffered:
            if answered == FAIR_SHARE:  # a peer pipelining more: its task yields fairly
                self._hand_off(conn, conn._run_fast)
                return
            answered += 1
            try:
                event = reader.next_request()
            except RemoteProtocolError as exc:
                self._hand_off(conn, partial(conn._refuse_request, exc))
                return
            if event is None:  # the rest of a request is still on its way
                conn.phase = _Phase.READING
                if conn.request_deadline == math.inf:
                    watchdog = server.watchdog
                    conn.request_deadline = watchdog.now + watchdog.span(server.limits.read_timeout)
                conn.deadline = conn.request_deadline
                return
            if event is DECLINED:
                self._hand_off(conn, partial(conn._run_h11, reader.take_buffer()))
                return
            assert isinstance(event, Request)
            stats.requests_fast += 1
            conn.request_deadline = math.inf
            outcome = conn.begin(event)
            if (
                not isinstance(outcome, Reply)
                or outcome.action is not Action.SEND
                or not event.keep_alive
                or server._draining
                or event.method in _NOT_PLAIN
            ):  # a wait, a misbehaviour, a close, HEAD or CONNECT: the task's code does it
                conn.phase = _Phase.BUSY
                conn.deadline = math.inf
                self._hand_off(conn, partial(conn._run_fast, event, outcome))
                return
            wire = outcome.wire
            try:
                if tls is not None:
                    wire = tls.encrypt(wire)
                sent = send(wire)
            except BlockingIOError:
                sent = 0
            except trio.BrokenResourceError:
                stats.tls_errors += 1
                self.close(conn)
                return
            except OSError:
                stats.peer_resets += 1
                self.close(conn)
                return
            if sent != len(wire):  # the peer reads slowly: the rest is written by a task
                conn.phase = _Phase.WRITING
                watchdog = server.watchdog
                conn.deadline = watchdog.now + watchdog.span(server.limits.write_timeout)
                self._hand_off(conn, partial(conn._run_fast, unsent=memoryview(wire)[sent:]))
                return
        self._idle(conn)


def _transport(conn: _Connection) -> RawStream:
    """The socket's stream under a connection's (itself, or the one under its TLS)."""
    stream = conn.stream
    if isinstance(stream, TLSStream):
        return stream.transport_stream
    assert isinstance(stream, RawStream)
    return stream


def _mux_ready(stream: trio.abc.Stream) -> bool:
    """Whether the mux can hold the stream now (a TLS one: handshaken, no plaintext held)."""
    return not isinstance(stream, TLSStream) or stream.mux_ready


def _fileno(conn: _Connection) -> int:
    return _transport(conn).socket.fileno()


def _declared_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)
    return None


def _h11_keep_alive(event: h11.Request) -> bool:
    if event.http_version < b"1.1":
        return False
    return all(
        token.strip().lower() != b"close"
        for name, value in event.headers
        if name == b"connection"
        for token in value.split(b",")
    )


_INTERNAL_ERROR: Final = Reply(500, b"internal error\n", content_type=b"text/plain")
_NO_TUNNEL: Final = Reply(501, b"CONNECT is not supported\n", content_type=b"text/plain")
