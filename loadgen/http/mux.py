"""Many keep-alive connections written synchronously and read by one task (Linux epoll).

Why
---
A load generator's exchange on trio costs a task step per answer: the task waiting on the socket
is woken, resumes through its coroutine chain, registers its next wait (an ``epoll_ctl`` per
wait) and parks again; with one wake-up per operation below saturation that is most of an
operation's CPU. Measured on loopback against a C epoll server (64 connections, one core):
11 µs of CPU per exchange with a task per connection, 4.3 µs with one task reading every ready
connection, like wrk's event loop. So the sender's plain connections live in a ``Mux``: one
``select.epoll`` of our own, its descriptor waited on by one trio task
(``trio.lowlevel.wait_readable`` on the epoll descriptor: readable when any of its sockets is),
which then takes every ready socket in one pass. Each socket is registered once, for as long as
its connection lives.

How a connection is used
------------------------
``Mux.open(origin, ...)`` takes a connection from the pool (an idle one, or a new one within the
origin's limit) and returns a ``MuxLine``. The caller writes one request on it at a time,
synchronously (``MuxLine.write``: one non-blocking ``send``; a request the socket does not take
whole is finished by a task). The mux's task reads the answer and calls
``on_answer(line, token, response)`` with the ``token`` given to ``write``; the line is idle again
before that call, so the caller may write its next request on it right there (the closed loop).
A failed exchange calls ``on_failure(line, token, error)`` with a ``TransportError``, counted in
the pool's stats as the pool's own exchanges are. Whenever a line leaves the mux (the server
closed it, an error, an answer that forbids keep-alive, a hand-off) ``on_dropped(line)`` is
called first, once: the caller stops using it (``alive`` is False).

Only the common case is handled in the task: a whole answer in one read, recognised by its head
(``_SameHead``) or parsed by the fast reader. Anything else is handed to a task of its own with
the connection (``ConnectionPool._answer``: an answer split over reads, an h11 fallback), or, on a
reused connection the server closed before answering (the keep-alive race), retried once on a new
connection as ``ConnectionPool.request`` does; their outcome comes through the same callbacks.

Deadlines: each line is watched by the pool's watchdog (its ``deadline`` set by ``write``, inf
while idle); past it, the line is closed and the exchange fails with a ``WriteTimeout`` or
``ReadTimeout``, exactly as the pool's exchanges do.

TLS: an https connection (the pool's ``TLSStream``, handshake done by ``ConnectionPool._connect``)
is held the same way, the mux reading and writing its socket itself and the stream only turning
bytes over (``TLSStream.encrypt`` / ``decrypt``, which never wait): ``write`` sends the request's
ciphertext (a partial send's rest is that ciphertext, never encrypted again), and the task feeds
what it reads to ``decrypt``. Measured with ``make bench`` [12], the sender's CPU per operation
over HTTPS was twice plain HTTP's with a task per TLS connection (``Held``), for the same reasons
as plain HTTP's 11 µs against 4.3 µs above. A read that completes no record (a record split over
reads, or records carrying no data: a TLS 1.3 server's session tickets, a key update) is as if
nothing had arrived: the line keeps waiting, idle or not. The peer's close_notify is an end of
stream; a TLS failure fails the exchange (``TLSError``, through ``translate_client_error``). A
hand-off gives the pool's code the stream as it is: the plaintext already decrypted is in
``conn.reader``, ciphertext not yet decrypted in the stream's own buffer.

Not for a pool forcing h11: ``Mux.serves`` says which origins it takes; the others use
``ConnectionPool.request`` as before.
"""

from __future__ import annotations

import contextlib
import math
import select
from collections.abc import Callable, Coroutine
from typing import Any, Final

import trio
from trio.lowlevel import wait_readable, wait_writable

from loadgen.errors import (
    BadResponse,
    ConnectionClosed,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
    WriteTimeout,
)
from loadgen.http.client import (
    RECEIVE_SIZE,
    ConnectionPool,
    Origin,
    _Conn,
    _OriginPool,
    _SameHead,
    _stale,
)
from loadgen.http.errors import translate_client_error
from loadgen.http.parser import Response
from loadgen.http.tlsstream import TLSStream

__all__ = ["AVAILABLE", "BATCH", "Mux", "MuxLine"]

#: Whether this platform has epoll (Linux); elsewhere the sender keeps a task per connection.
AVAILABLE: Final = hasattr(select, "epoll")
#: Ready sockets taken per step of the task; more wait for its next step, after the other
#: tasks that are ready (the pacer): ~20 µs each, a step stays well under a millisecond. After a
#: full batch the next step follows a plain checkpoint, not a wait on the epoll descriptor
#: (measured at the open model's ceiling, where every pass is full: -1 % CPU per operation).
BATCH: Final = 16
_POST: Final = b"POST"
_IN: Final = select.EPOLLIN if AVAILABLE else 1

OnAnswer = Callable[["MuxLine", Any, Response], None]
OnFailure = Callable[["MuxLine", Any, TransportError], None]
OnDropped = Callable[["MuxLine"], None]


class MuxLine:
    """One connection held by a ``Mux``: at most one request in flight on it.

    ``holder`` is the caller's (``MuxClient`` keeps the line's ``MuxLane`` there).
    """

    __slots__ = (
        "_post",
        "_read_span",
        "_recv",
        "_send",
        "_stats",
        "_watchdog",
        "_write_span",
        "alive",
        "begun",
        "body",
        "conn",
        "deadline",
        "fd",
        "holder",
        "limit",
        "mux",
        "opool",
        "origin",
        "read_end",
        "sock",
        "target",
        "tls",
        "token",
        "unsent",
        "wire",
    )

    def __init__(
        self, mux: Mux, origin: Origin, opool: _OriginPool, conn: _Conn, holder: Any
    ) -> None:
        self.mux = mux
        self.origin = origin
        self.opool = opool
        self.conn = conn
        self.sock = conn.raw.socket
        stream = conn.stream
        self.tls = stream if isinstance(stream, TLSStream) else None
        self.fd = self.sock.fileno()
        self.holder: Any = holder
        self.alive = True
        self.token: object | None = None  # the request in flight (None: idle)
        self.deadline = math.inf  # the watchdog's: the write's or the read's end
        self.read_end = math.inf
        self.limit = math.inf  # the request's own deadline
        self.wire = self.target = self.body = b""
        self.unsent: memoryview | None = None  # the rest of the request's bytes (ciphertext if TLS)
        # TLS: bytes of the exchange in flight read that completed no record yet (or only records
        # without data): the answer may have begun, so its connection's end is not the
        # keep-alive race (the request is not sent again)
        self.begun = False
        # bound once: ``write`` and the mux's read run once per operation
        pool = mux.pool
        self._post = opool.post
        self._send = self.sock.send
        self._recv = self.sock.recv
        self._stats = pool.stats
        self._watchdog = pool.watchdog
        self._read_span = pool._read_span
        self._write_span = pool._write_span

    def __repr__(self) -> str:
        return f"<MuxLine fd={self.fd} alive={self.alive} busy={self.token is not None}>"

    def write(self, target: bytes, body: bytes, deadline: float, token: object) -> bool:
        """Write a POST on this idle line now; ``token`` comes back with its answer. False when
        the socket refused it (nothing written: the line is dropped, try another)."""
        wire = self._post(target, body)
        tls = self.tls
        if tls is None:
            out = wire
        else:
            try:
                out = tls.encrypt(wire)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.mux._drop(self)
                return False
            self.begun = False
        try:
            sent = self._send(out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.mux._drop(self)
            return False
        stats = self._stats
        stats.requests += 1
        if self.conn.served:
            stats.reused += 1
        self.token = token
        self.wire = wire
        self.target = target
        self.body = body
        self.limit = deadline
        # ``ConnectionPool._ends`` inlined (this runs once per operation)
        start = self._watchdog.now
        read_end = start + self._read_span
        if deadline < read_end:
            read_end = deadline
        self.read_end = read_end
        if sent == len(out):
            self.deadline = read_end
            return True
        write_end = start + self._write_span
        self.deadline = deadline if deadline < write_end else write_end
        self.unsent = memoryview(out)[sent:]
        nursery = self.mux.nursery
        assert nursery is not None
        nursery.start_soon(self._finish_write)
        return True

    async def _finish_write(self) -> None:
        """The rest of a request the socket did not take at once (rare: an idle connection's
        send buffer is empty)."""
        sock, rest, token = self.sock, self.unsent, self.token
        try:
            while rest and self.alive:
                await wait_writable(sock)
                try:
                    sent = sock.send(rest)
                except BlockingIOError:
                    continue
                rest = rest[sent:]
        except (OSError, trio.ClosedResourceError) as exc:
            if self.alive and self.token is token:
                self.mux._fail(self, exc, writing=True)
            return
        finally:
            self.unsent = None
        if self.alive and self.token is token:
            self.deadline = self.read_end

    def expire(self) -> None:
        """The watchdog's: the exchange in flight is past its deadline."""
        self.conn.expired = True
        self.mux._fail(self, None, writing=self.unsent is not None)


class Mux:
    """The held connections of one ``ConnectionPool``, read by one task (``run``).

    Set ``on_answer``, ``on_failure`` and ``on_dropped`` before the first ``open``.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._epoll: Any = select.epoll() if AVAILABLE else None
        self._lines: dict[int, MuxLine] = {}
        self.nursery: trio.Nursery | None = None
        self.on_answer: OnAnswer | None = None
        self.on_failure: OnFailure | None = None
        self.on_dropped: OnDropped | None = None
        self.handed_off = 0  # exchanges finished by a task of their own (split answers, ...)

    def __repr__(self) -> str:
        return f"<Mux lines={len(self._lines)} handed_off={self.handed_off}>"

    def __len__(self) -> int:
        return len(self._lines)

    def serves(self, origin: Origin) -> bool:
        """Whether this mux can hold ``origin``'s connections (HTTP or HTTPS, on the fast path)."""
        return AVAILABLE and not self.pool.force_h11

    async def open(self, origin: Origin, deadline: float, holder: Any) -> MuxLine:
        """A line on a connection to ``origin`` (idle in the pool, or new), by ``deadline``.
        Raises a ``TransportError`` (counted) when none can be had."""
        pool = self.pool
        opool = pool._origin_pool(origin)
        try:
            while True:
                conn = await pool._checkout(origin, opool, deadline)
                if conn is None:
                    conn = await pool._connect(origin, opool, deadline)
                if (
                    conn.h11 is None
                    and not conn.expired
                    and (conn.stream is conn.raw or isinstance(conn.stream, TLSStream))
                ):
                    break
                pool._release(opool, conn, reusable=False)  # served by h11 once: not ours
        except TransportError as exc:
            pool.stats.errors[exc.kind] += 1
            raise
        if self._epoll is None or self.nursery is None:
            pool._release(opool, conn, reusable=True)
            raise ConnectionClosed("the mux is not running")
        pool.watchdog.unwatch(conn)  # the line is watched instead (its expiry tells the mux)
        line = MuxLine(self, origin, opool, conn, holder)
        self._lines[line.fd] = line
        self._epoll.register(line.fd, _IN)
        pool.watchdog.watch(line)
        return line

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the answers of every line (runs until cancelled; then closes them all)."""
        epoll = self._epoll
        lines = self._lines
        current_time = trio.lowlevel.current_clock().current_time
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            try:
                if epoll is None:
                    await trio.sleep_forever()
                full = False  # the last pass took BATCH sockets: more are likely ready
                while True:
                    if full:
                        # Let the other tasks run (the pacer), then take the next batch: no
                        # wait to register (an ``epoll_ctl``) for a descriptor already ready.
                        await trio.lowlevel.checkpoint()
                    else:
                        await wait_readable(epoll)
                    ready = epoll.poll(0, BATCH)
                    full = len(ready) == BATCH
                    for fd, _ in ready:
                        line = lines.get(fd)
                        if line is not None:
                            self._readable(line, current_time)
            finally:
                self.close()
                nursery.cancel_scope.cancel()

    def close(self) -> None:
        """Close every line, without callbacks (the run is over)."""
        self.on_dropped = None
        for line in list(self._lines.values()):
            line.alive = False
            self._forget(line)
            self.pool._discard(line.opool, line.conn)
        if self._epoll is not None:
            self._epoll.close()

    # --- the task's pass over one ready socket ---------------------------------------------

    def _readable(self, line: MuxLine, current_time: Callable[[], float]) -> None:
        try:
            data = line._recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            conn = line.conn
            if (
                line.token is not None and line.unsent is None and not line.begun and _stale(conn)
            ):  # reset as we wrote on a reused connection: the keep-alive race again
                self._hand_off(line, self._retry_stale)
                return
            self._fail(line, exc)
            return
        reusable = True
        tls = line.tls
        if tls is not None and data:
            try:
                plain = tls.decrypt(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._fail(line, exc)  # a TLS error (mapped to TLSError); idle: dropped
                return
            if plain is None:  # close_notify: the end of the stream
                data = b""
            elif not plain:  # no record complete, or none with data: as if nothing came
                if line.token is not None:
                    line.begun = True
                return
            else:
                data = plain
                # more plaintext than one decrypt returns: more than an answer in one read
                reusable = tls.mux_ready
        token = line.token
        if token is None or line.unsent is not None:
            # An idle connection is readable only when the server closed it (or sent what was
            # never asked for); an answer before the whole request was written is garbage.
            if token is None:
                self._drop(line)
            else:
                self._fail(line, ConnectionClosed("answer before the request was written"))
            return
        conn = line.conn
        reader = conn.reader
        if not data:
            if line.begun or not _stale(conn):
                self._fail(line, None)
            else:  # the server closed the idle connection as we wrote on it
                self._hand_off(line, self._retry_stale)
            return
        response = None
        starts = not reader.buffered  # these bytes begin the answer
        if starts and reusable:
            same = conn.same_head
            if same is not None:
                response = same.cut(data)
        if response is None:
            reader.feed(data)
            if not starts:
                self._hand_off(line, self._finish)
                return
            try:
                parsed = reader.next_response(_POST)
            except RemoteProtocolError as exc:
                self._fail(line, BadResponse(str(exc)))
                return
            if not isinstance(parsed, Response):
                # split over reads, or declined to h11: the pool's own path
                self._hand_off(line, self._finish)
                return
            response = parsed
            if reader.buffered:
                reusable = False  # bytes after the answer, never asked for: not reusable
            elif reusable:
                conn.same_head = _SameHead(_POST, data, response)
        conn.served += 1
        line.token = None
        line.deadline = math.inf
        if not (reusable and response.keep_alive and self.pool.limits.keep_alive):
            self._drop(line)
        on_answer = self.on_answer
        assert on_answer is not None
        on_answer(line, token, response)

    # --- leaving the mux ---------------------------------------------------------------------

    def _forget(self, line: MuxLine) -> None:
        del self._lines[line.fd]
        with contextlib.suppress(OSError, ValueError):  # already closed
            self._epoll.unregister(line.fd)
        self.pool.watchdog.unwatch(line)

    def _drop(self, line: MuxLine) -> None:
        """Close a line's connection (its slot is free again) and tell the caller."""
        if not line.alive:
            return
        line.alive = False
        self._forget(line)  # before the close: the descriptor may be reused at once
        if line.unsent is not None and line.tls is not None:
            # Part of a record is out: a close_notify after it would be garbage to the peer.
            line.conn.raw.close_now()
        self.pool._release(line.opool, line.conn, reusable=False)
        if self.on_dropped is not None:
            self.on_dropped(line)

    def _fail(self, line: MuxLine, exc: BaseException | None, *, writing: bool = False) -> None:
        """End the exchange in flight on ``line`` as failed and drop the line."""
        token = line.token
        line.token = None
        conn = line.conn
        limits = self.pool.limits
        self._drop(line)
        if token is None:
            return
        error: TransportError
        if conn.expired:
            own = line.deadline == line.limit
            if writing:
                error = WriteTimeout(
                    "request not written by the request's deadline"
                    if own
                    else f"request not written within {limits.write_timeout} s"
                )
            else:
                error = ReadTimeout(
                    "no complete answer by the request's deadline"
                    if own
                    else f"no complete answer within {limits.read_timeout} s"
                )
        elif isinstance(exc, TransportError):
            error = exc
        elif exc is None:
            error = ConnectionClosed(
                "server closed the connection before a complete answer"
                if conn.reader.buffered
                else "server closed the connection without answering"
            )
        else:
            mapped = translate_client_error(exc) if isinstance(exc, Exception) else None
            error = mapped or ConnectionClosed(str(exc))
        self._failed(line, token, error)

    def _failed(self, line: MuxLine, token: object, error: TransportError) -> None:
        """An exchange's failure: counted in the pool's stats, then told to the caller."""
        self.pool.stats.errors[error.kind] += 1
        on_failure = self.on_failure
        assert on_failure is not None
        on_failure(line, token, error)

    def _hand_off(self, line: MuxLine, finish: Callable[[MuxLine, object], Any]) -> None:
        """Take the connection out of the mux, still open, for a task that ends the exchange
        with the pool's own code (the connection then goes back to the pool, or is closed)."""
        token = line.token
        line.alive = False
        self._forget(line)
        conn = line.conn
        conn.deadline = line.deadline
        self.pool.watchdog.watch(conn)
        self.handed_off += 1
        if self.on_dropped is not None:
            self.on_dropped(line)
        assert self.nursery is not None
        self.nursery.start_soon(finish, line, token)

    async def _finish(self, line: MuxLine, token: object) -> None:
        pool = self.pool
        await self._outcome(line, token, pool._answer(
            line.opool, line.conn, line.wire, _POST, line.target, line.body,
            line.read_end, line.limit, None,
        ))  # fmt: skip

    async def _retry_stale(self, line: MuxLine, token: object) -> None:
        """As ``ConnectionPool.request``: once, on a new connection."""
        pool = self.pool
        pool._discard(line.opool, line.conn)
        pool.stats.stale_retries += 1
        await self._outcome(line, token, self._reconnected(line))

    async def _reconnected(self, line: MuxLine) -> Response:
        pool = self.pool
        opool = line.opool
        opool.open += 1
        conn = await pool._connect(line.origin, opool, line.limit)
        return await pool._exchange(
            opool, conn, line.wire, _POST, line.target, line.body, line.limit, None
        )

    async def _outcome(
        self, line: MuxLine, token: object, exchange: Coroutine[Any, Any, Response]
    ) -> None:
        """A hand-off task's end: the answer or the failure, through the mux's callbacks."""
        try:
            response = await exchange
        except TransportError as exc:
            self._failed(line, token, exc)
            return
        assert self.on_answer is not None
        self.on_answer(line, token, response)
