"""HTTP/1.1 client on trio: a keep-alive connection pool over the fast path, h11 for the rest.

Theory of operation
-------------------
``ConnectionPool.request`` takes a connection for the request's ``Origin`` (an idle one, most
recently used first, or a new one while the origin is under ``max_connections``; else it waits),
writes the pre-rendered request and reads the answer with a ``ResponseReader``. A response the fast
parser declines (HTTP/1.0, read-until-close, chunked, 1xx) is handed with its bytes to an
``h11.Connection`` that is told about the request already sent, and that connection is served by h11
from then on.

A connection goes back to the pool only when the exchange completed and both sides allow keep-alive;
anything else closes it. An answer that arrives whole with the same head as the previous one on
its connection is cut without re-parsing its head (``_SameHead``). The per-origin limit counts open connections, not requests: taking an
idle connection costs a list pop, and a request finding the origin full parks until a connection
is released. A request that fails on a *reused* connection before a single response byte
arrived (the server closed an idle keep-alive connection: the classic race) is retried once on a new
connection and counted as ``stale_retries``; any other failure is not retried here: retrying
operations is the caller's policy, not the transport's.

Timeouts: the watchdog closes the socket of an exchange past its deadline (see ``_Conn``). Every
failure leaves through ``translate_client_error`` as a ``TransportError`` subclass whose ``kind``
names a counter: connect, connect_timeout, read_timeout, write_timeout, closed, tls, bad_response.
A request may also carry its own ``deadline`` (an absolute time on the trio clock: the load
generator's operation deadline). It bounds every phase of that request: the wait for a
connection slot and the connect (``connect_timeout`` past it, exactly, by a cancel scope those
phases already have), the write and the read (``write_timeout`` / ``read_timeout``: the watchdog
closes the socket, up to one resolution late). A connection given up that way is closed, never
returned to the pool: its answer may still arrive and would be read as the next request's.
"""

from __future__ import annotations

import math
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

from loadgen.errors import (
    BadResponse,
    ConfigError,
    ConnectionClosed,
    ConnectTimeout,
    ReadTimeout,
    TransportError,
    WriteTimeout,
)
from loadgen.http.deadlines import Watchdog, resolution_for
from loadgen.http.errors import translate_client_error
from loadgen.http.parser import (
    DECLINED,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    Headers,
    Response,
    ResponseReader,
)
from loadgen.http.render import JSON, RequestTemplate
from loadgen.http.stream import RawStream, open_raw_stream
from loadgen.http.tlsstream import TLSStream

__all__ = ["ClientLimits", "ConnectionPool", "Held", "Origin", "PoolStats", "open_pool"]

RECEIVE_SIZE: Final = 65536
#: Request heads kept per origin (one per target: ~200 bytes each).
MAX_CACHED_TARGETS: Final = 100_000
_NO_BODY_TAIL: Final = b"0\r\n\r\n"  # how a rendered request without a body ends
USER_AGENT: Final = b"loadgen/0.1"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host and port (one pool of connections per origin)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> tuple[Origin, str]:
        """Split ``http(s)://host[:port][/prefix]`` into an origin and a path prefix."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"expected an http:// or https:// URL with a host, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigError(f"bad port in URL {url!r}") from exc
        return cls(parts.scheme, parts.hostname, port), parts.path.rstrip("/")

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    max_connections: int = 64  # per origin
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # from the end of the write to the end of the answer
    write_timeout: float = 10.0
    keep_alive: bool = True  # False: a new connection per request
    max_head: int = DEFAULT_MAX_HEAD
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ConfigError("expected max_connections >= 1", key="max_connections")
        for name in ("connect_timeout", "read_timeout", "write_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"expected {name} > 0 seconds", key=name)


@dataclass(slots=True)
class PoolStats:
    connections_opened: int = 0
    connections_open: int = 0
    requests: int = 0
    reused: int = 0
    stale_retries: int = 0
    h11_fallbacks: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # TransportError.kind -> count

    def snapshot(self) -> dict[str, object]:
        return {
            "connections_opened": self.connections_opened,
            "connections_open": self.connections_open,
            "requests": self.requests,
            "reused": self.reused,
            "stale_retries": self.stale_retries,
            "h11_fallbacks": self.h11_fallbacks,
            "errors": dict(sorted(self.errors.items())),
        }


class _SameHead:
    """The head of the last answer on a connection, to recognise the next one without parsing.

    Load traffic repeats itself: a target answers operation after operation with the same status
    line and headers, byte for byte, Content-Length included. The fast parser is a function of
    the bytes (and of the request method), so an answer that arrives whole in one read, whose
    head is byte-identical to that of an answer the parser accepted, whole, for the same method,
    and whose body has the length that head declares, gets the same status, reason, headers and
    keep-alive decision: ``cut`` makes that ``Response`` with two C-level comparisons instead of
    re-parsing the head. Any other read (split, longer, a different head) goes to the parser,
    which then teaches the next ``_SameHead``.
    """

    __slots__ = ("block", "head", "keep_alive", "method", "reason", "size", "status")

    def __init__(self, method: bytes, data: bytes | bytearray, response: Response) -> None:
        """``response`` is what the parser made of exactly ``data`` (nothing left over)."""
        self.method = method
        self.size = len(data)
        self.head = head = bytes(data[: len(data) - len(response.body)])
        end = len(head) - 4  # the CRLF CRLF
        first = head.find(b"\r\n")  # the end of the status line; the header block follows it
        self.block = head[first + 2 : end] if first < end else b""
        self.status = response.status
        self.reason = response.reason
        self.keep_alive = response.keep_alive

    def __repr__(self) -> str:
        return f"<_SameHead {self.status} head={len(self.head)} size={self.size}>"

    def cut(self, data: bytes | bytearray) -> Response | None:
        """The answer in ``data`` if it is one with this head, else None (ask the parser)."""
        if len(data) != self.size or not data.startswith(self.head):
            return None
        return Response(
            self.status, self.reason, self.block, bytes(data[len(self.head) :]), self.keep_alive
        )


class _Conn:
    """One connection: a stream plus either the fast reader or, after a decline, an h11 state.

    ``deadline`` bounds the exchange in progress (inf while idle in the pool). When it passes, the
    pool's watchdog calls ``expire()``, which closes the socket: the task blocked on it wakes with
    an error that the exchange reports as a timeout. No cancel scope per request.
    """

    __slots__ = (
        "answer_started",
        "deadline",
        "expired",
        "h11",
        "raw",
        "reader",
        "same_head",
        "served",
        "stream",
    )

    def __init__(
        self, raw: RawStream, stream: trio.abc.Stream, limits: ClientLimits, force_h11: bool
    ) -> None:
        self.raw = raw
        self.stream = stream
        self.reader = ResponseReader(max_head=limits.max_head, max_body=limits.max_body)
        self.same_head: _SameHead | None = None
        self.h11: h11.Connection | None = (
            h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_head)
            if force_h11
            else None
        )
        self.served = 0
        self.deadline = math.inf
        self.expired = False
        # An h11 exchange received bytes of its answer (the fast path's is ``reader.buffered``).
        self.answer_started = False

    def __repr__(self) -> str:
        return f"<_Conn served={self.served} deadline={self.deadline:.3f} expired={self.expired}>"

    def expire(self) -> None:
        self.expired = True
        self.deadline = math.inf
        self.raw.close_now()


class _OriginPool:
    """The connections of one origin: idle ones (most recent last) and a count of all open."""

    __slots__ = ("_heads", "idle", "lot", "open", "template")

    def __init__(self, origin: Origin, headers: Headers) -> None:
        self.idle: list[_Conn] = []
        self.open = 0  # idle + busy + connecting
        self.lot = trio.lowlevel.ParkingLot()  # requests waiting for a connection slot
        self.template = RequestTemplate(b"POST", origin.host_header, headers)
        self._heads: dict[bytes, bytes] = {}  # target -> head up to "Content-Length: "

    def post(self, target: bytes, body: bytes) -> bytes:
        """``template.render(target, body)``; each target's head is rendered (and its target
        checked) once: a load generator POSTs to the same few thousand targets over and over."""
        head = self._heads.get(target)
        if head is None:
            head = self.template.render(target)[: -len(_NO_BODY_TAIL)]
            if len(self._heads) >= MAX_CACHED_TARGETS:
                self._heads.clear()
            self._heads[target] = head
        return b"%s%d\r\n\r\n%s" % (head, len(body), body)


class ConnectionPool:
    """Keep-alive connections per origin, bounded, with timeouts and mapped errors.

    ``headers`` are sent with every request (e.g. ``X-ApiKey``); ``force_h11`` makes every
    exchange go through h11 (the in-run reference of the benchmark). Timeouts are enforced by the
    pool's watchdog task: open the pool with ``open_pool(...)``, or start ``pool.run`` in a nursery
    of your own and call ``aclose()`` at the end.
    """

    def __init__(
        self,
        *,
        limits: ClientLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
        force_h11: bool = False,
    ) -> None:
        self.limits = limits or ClientLimits()
        self.ssl_context = ssl_context
        self.headers: Headers = [(b"User-Agent", USER_AGENT), *headers]
        self.force_h11 = force_h11
        self.stats = PoolStats()
        self._origins: dict[Origin, _OriginPool] = {}
        self._templates: dict[tuple[Origin, bytes, bytes], RequestTemplate] = {}
        self._closed = False
        self._held: set[Held] = set()  # connections kept by their callers (see ``Held``)
        lim = self.limits
        self.watchdog = Watchdog(
            resolution_for(lim.connect_timeout, lim.read_timeout, lim.write_timeout)
        )
        self._write_span = self.watchdog.span(lim.write_timeout)
        self._read_span = self.watchdog.span(lim.read_timeout)

    def __repr__(self) -> str:
        idle = sum(len(p.idle) for p in self._origins.values())
        return (
            f"<ConnectionPool origins={len(self._origins)} open={self.stats.connections_open} "
            f"idle={idle} requests={self.stats.requests}>"
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Enforce the timeouts of exchanges in progress (runs until cancelled)."""
        await self.watchdog.run(task_status=task_status)

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._origins.values():
            while pool.idle:
                self._discard(pool, pool.idle.pop())
            pool.lot.unpark_all()
        for held in list(self._held):
            if held.conn is not None:
                held.conn.raw.close_now()  # its holder wakes, drops it
        await trio.lowlevel.checkpoint()

    def _origin_pool(self, origin: Origin) -> _OriginPool:
        pool = self._origins.get(origin)
        if pool is None:
            pool = self._origins[origin] = _OriginPool(origin, self.headers)
        return pool

    def _template(self, origin: Origin, method: bytes, content_type: bytes) -> RequestTemplate:
        key = (origin, method, content_type)
        template = self._templates.get(key)
        if template is None:
            template = RequestTemplate(
                method, origin.host_header, self.headers, content_type=content_type
            )
            self._templates[key] = template
        return template

    async def request(
        self,
        origin: Origin,
        target: bytes,
        body: bytes = b"",
        *,
        method: bytes = b"POST",
        content_type: bytes = JSON,
        deadline: float = math.inf,
    ) -> Response:
        """One exchange. Raises a ``TransportError`` subclass on any failure (counted by kind).

        ``deadline`` (trio clock) bounds the whole exchange on top of the pool's own timeouts.
        """
        return await self._request(origin, target, body, method, content_type, deadline, None)

    def hold(self, origin: Origin) -> Held:
        """A ``Held`` for ``origin``: a caller that keeps its connection between exchanges."""
        return Held(self, origin)

    async def _request(
        self,
        origin: Origin,
        target: bytes,
        body: bytes,
        method: bytes,
        content_type: bytes,
        deadline: float,
        held: Held | None,
    ) -> Response:
        pool = self._origin_pool(origin)
        if method == b"POST" and content_type == JSON:
            wire = pool.post(target, body)
        else:
            template = self._template(origin, method, content_type if body else b"")
            wire = template.render(target, body)
        self.stats.requests += 1
        try:
            conn = None if held is None else held.conn
            if conn is not None:
                self.stats.reused += 1
            else:
                conn = await self._checkout(origin, pool, deadline)
            if conn is None:
                conn = await self._connect(origin, pool, deadline)
            else:
                try:
                    return await self._exchange(
                        pool, conn, wire, method, target, body, deadline, held
                    )
                except ConnectionClosed:
                    if not _stale(conn):
                        raise  # the answer had started, or a new connection
                    # The server closed a keep-alive connection as we reused it: the request
                    # never reached it. Once, on a new connection.
                    self.stats.stale_retries += 1
                    pool.open += 1
                    conn = await self._connect(origin, pool, deadline)
            return await self._exchange(pool, conn, wire, method, target, body, deadline, held)
        except TransportError as exc:
            self.stats.errors[exc.kind] += 1
            raise

    async def _checkout(
        self, origin: Origin, pool: _OriginPool, deadline: float = math.inf
    ) -> _Conn | None:
        """An idle connection, or None after reserving a slot for a new one (waits when full,
        until ``deadline`` at most)."""
        while True:
            if self._closed:
                raise ConnectionClosed("the pool is closed")
            if pool.idle:
                self.stats.reused += 1
                return pool.idle.pop()
            if pool.open < self.limits.max_connections:
                pool.open += 1
                return None
            with trio.move_on_at(deadline) as scope:
                await pool.lot.park()
            if scope.cancelled_caught:
                raise ConnectTimeout(f"no free connection to {origin} by the request's deadline")

    def _release(self, pool: _OriginPool, conn: _Conn, reusable: bool) -> None:
        if reusable and not self._closed:
            pool.idle.append(conn)
        else:
            self._discard(pool, conn)
        if pool.lot:
            pool.lot.unpark()

    def _discard(self, pool: _OriginPool, conn: _Conn) -> None:
        pool.open -= 1
        self.stats.connections_open -= 1
        self.watchdog.unwatch(conn)
        if isinstance(conn.stream, TLSStream):
            conn.stream.close_now()  # close_notify first: the server sees a clean end
        else:
            conn.raw.close_now()

    async def _connect(
        self, origin: Origin, pool: _OriginPool, deadline: float = math.inf
    ) -> _Conn:
        """Open a connection for a slot already counted in ``pool.open``, by ``deadline``."""
        limits = self.limits
        give_up = trio.current_time() + limits.connect_timeout
        if deadline < give_up:
            give_up = deadline
        try:
            with trio.move_on_at(give_up) as scope:
                try:
                    raw = await open_raw_stream(origin.host, origin.port)
                    stream: trio.abc.Stream = raw
                    if origin.scheme == "https":
                        tls = TLSStream(
                            raw,
                            self.ssl_context or ssl.create_default_context(),
                            server_hostname=origin.host,
                        )
                        try:
                            await tls.do_handshake()
                        except BaseException:
                            raw.close_now()
                            raise
                        stream = tls
                except Exception as exc:
                    mapped = translate_client_error(exc, connecting=True)
                    if mapped is None:
                        raise
                    raise mapped from exc
            if scope.cancelled_caught:
                raise ConnectTimeout(
                    f"no connection to {origin} by the request's deadline"
                    if give_up == deadline
                    else f"no connection to {origin} within {limits.connect_timeout} s"
                )
        except BaseException:
            pool.open -= 1
            if pool.lot:
                pool.lot.unpark()
            raise
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        conn = _Conn(raw, stream, limits, self.force_h11)
        self.watchdog.watch(conn)
        return conn

    def _ends(self, deadline: float) -> tuple[float, float]:
        """When the write and the read of an exchange starting now are given up."""
        start = self.watchdog.now
        write_end = start + self._write_span
        read_end = start + self._read_span
        # The request's own deadline, when sooner (no min(): this runs per request).
        if deadline < write_end:
            write_end = deadline
        if deadline < read_end:
            read_end = deadline
        return write_end, read_end

    async def _exchange(
        self,
        pool: _OriginPool,
        conn: _Conn,
        wire: bytes,
        method: bytes,
        target: bytes,
        body: bytes,
        deadline: float = math.inf,
        held: Held | None = None,
    ) -> Response:
        write_end, read_end = self._ends(deadline)
        conn.deadline = write_end
        try:
            if conn.h11 is None:
                await conn.stream.send_all(wire)
            else:
                await conn.stream.send_all(_h11_events(conn.h11, wire, method, target, body))
        except BaseException as exc:
            error = self._failure(pool, conn, exc, held, write_end, deadline, writing=True)
            if error is exc:
                raise
            raise error from exc
        conn.deadline = read_end
        return await self._answer(pool, conn, wire, method, target, body, read_end, deadline, held)

    async def _answer(
        self,
        pool: _OriginPool,
        conn: _Conn,
        wire: bytes,
        method: bytes,
        target: bytes,
        body: bytes,
        read_end: float,
        deadline: float,
        held: Held | None,
    ) -> Response:
        """Read the answer to a request written on ``conn``; then the connection goes back to
        the pool, or stays with its holder (``held``), or is closed."""
        try:
            if conn.h11 is None:
                response = await self._read_fast(conn, method, target, body, wire)
            else:
                response = await self._read_h11(conn)
        except BaseException as exc:
            error = self._failure(pool, conn, exc, held, read_end, deadline, writing=False)
            if error is exc:
                raise
            raise error from exc
        conn.deadline = math.inf
        conn.served += 1
        # ``expired``: the watchdog closed the socket after the answer was read (while this task
        # waited at a checkpoint); the answer stands, the connection is gone.
        reusable = response.keep_alive and self.limits.keep_alive and not conn.expired
        if held is not None:
            if reusable and not self._closed:
                held.conn = conn  # it stays with its holder, out of the idle list
                return response
            held.conn = None
        self._release(pool, conn, reusable=reusable)
        return response

    def _failure(
        self,
        pool: _OriginPool,
        conn: _Conn,
        exc: BaseException,
        held: Held | None,
        end: float,
        deadline: float,
        *,
        writing: bool,
    ) -> BaseException:
        """Close the connection of a failed exchange; the exception to raise (``exc`` itself
        when it is not ours to map)."""
        if held is not None:
            held.conn = None
        self._release(pool, conn, reusable=False)
        if not isinstance(exc, Exception) or isinstance(exc, TransportError):
            return exc
        limits = self.limits
        if conn.expired:
            if writing:
                return WriteTimeout(
                    "request not written by the request's deadline"
                    if end == deadline
                    else f"request not written within {limits.write_timeout} s"
                )
            return ReadTimeout(
                "no complete answer by the request's deadline"
                if end == deadline
                else f"no complete answer within {limits.read_timeout} s"
            )
        mapped = translate_client_error(exc)
        return exc if mapped is None else mapped

    async def _read_fast(
        self, conn: _Conn, method: bytes, target: bytes, body: bytes, wire: bytes
    ) -> Response:
        reader = conn.reader
        receive = conn.stream.receive_some
        buffered = reader.buffered
        response = reader.next_response(method) if buffered else None
        while response is None:
            data = await receive(RECEIVE_SIZE)
            if not data:
                raise ConnectionClosed(
                    "server closed the connection before a complete answer"
                    if buffered
                    else "server closed the connection without answering"
                )
            starts = not buffered  # these bytes begin an answer
            if starts:
                # The common case: a whole answer in one read, with the same head as the last.
                same = conn.same_head
                if same is not None and same.method == method:
                    response = same.cut(data)
                    if response is not None:
                        return response
            reader.feed(data)
            response = reader.next_response(method)
            buffered = reader.buffered
            if starts and not buffered and isinstance(response, Response):
                conn.same_head = _SameHead(method, data, response)
        if response is DECLINED:
            self.stats.h11_fallbacks += 1
            conn.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.limits.max_head)
            _h11_events(conn.h11, wire, method, target, body)  # already sent: drop the bytes
            conn.h11.receive_data(reader.take_buffer())
            return await self._read_h11(conn)
        assert isinstance(response, Response)
        return response

    async def _read_h11(self, conn: _Conn) -> Response:
        state = conn.h11
        assert state is not None
        head: h11.Response | None = None
        body = bytearray()
        eof = False
        conn.answer_started = bool(state.trailing_data[0])  # bytes handed over by the fast path
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                if eof:  # h11's complaint is the end of stream mid-answer: same as the fast path
                    raise ConnectionClosed(
                        "server closed the connection before a complete answer"
                    ) from exc
                raise
            if event is h11.NEED_DATA:
                data = bytes(await conn.stream.receive_some(RECEIVE_SIZE))
                eof = not data
                conn.answer_started = conn.answer_started or not eof
                state.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body:
                    raise BadResponse(f"answer body over {self.limits.max_body} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed before the end
                raise ConnectionClosed("server closed the connection before a complete answer")
        assert head is not None
        keep_alive = state.our_state is h11.DONE and state.their_state is h11.DONE
        if keep_alive:
            state.start_next_cycle()
            conn.answer_started = False
        return Response(
            head.status_code,
            head.reason,
            [(name, value) for name, value in head.headers],
            bytes(body),
            keep_alive,
        )


class Held:
    """A connection of the pool kept by one caller between its exchanges, as wrk2's connections.

    Why: a load generator's worker that parks between operations costs a scheduler pass per
    operation just to be woken and write. A worker holding its connection instead waits on it
    (``answer``) while idle; whoever has the next request writes it synchronously on that
    connection (``write_now``, one non-blocking ``send``) and the waiting worker wakes once,
    when the answer arrives: one pass per operation, as in a closed loop.

    ``request`` is ``ConnectionPool.request`` on the held connection (a new one when none is
    held). ``ready``: a plain, idle fast-path connection is held, ``write_now`` may be used.
    After ``write_now`` returns True, ``answer`` returns (or raises, as ``request`` would) for
    that request; if ``unsent`` is true the socket took only part of it and ``finish_write``
    must run in a task of its own meanwhile (rare: an idle connection's send buffer is empty).
    An ``answer`` that wakes with nothing written (the server closed the idle connection) drops
    the connection and raises ``ConnectionClosed``. ``close`` gives the connection back.
    """

    __slots__ = ("_asked", "_pool", "conn", "origin", "unsent")

    def __init__(self, pool: ConnectionPool, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self.conn: _Conn | None = None
        self.unsent: memoryview | None = None
        # what write_now wrote: (wire, target, body, read_end, deadline)
        self._asked: tuple[bytes, bytes, bytes, float, float] | None = None
        pool._held.add(self)

    def __repr__(self) -> str:
        return f"<Held {self.origin} conn={self.conn!r} asked={self._asked is not None}>"

    @property
    def ready(self) -> bool:
        conn = self.conn
        return (
            conn is not None and conn.h11 is None and conn.stream is conn.raw and not conn.expired
        )

    async def request(self, target: bytes, body: bytes, *, deadline: float) -> Response:
        return await self._pool._request(self.origin, target, body, b"POST", JSON, deadline, self)

    def write_now(self, target: bytes, body: bytes, *, deadline: float) -> bool:
        """Write a request on the held connection now (requires ``ready``); False when the
        socket refused it (broken: nothing written, the waiting ``answer`` drops it)."""
        pool = self._pool
        conn = self.conn
        assert conn is not None
        assert self._asked is None
        opool = pool._origin_pool(self.origin)
        wire = opool.post(target, body)
        try:
            sent = conn.raw.socket.send(wire)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        pool.stats.requests += 1
        pool.stats.reused += 1
        write_end, read_end = pool._ends(deadline)
        self._asked = (wire, target, body, read_end, deadline)
        if sent < len(wire):
            self.unsent = memoryview(wire)[sent:]
            conn.deadline = write_end
        else:
            conn.deadline = read_end
        return True

    async def finish_write(self) -> None:
        """The rest of a request ``write_now`` could not write at once; a failure is left to
        ``answer`` (the watchdog closes a connection that stays unwritable past its deadline)."""
        conn, rest, asked = self.conn, self.unsent, self._asked
        if conn is None or rest is None or asked is None:
            return
        try:
            await conn.raw.send_all(rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.raw.close_now()  # the reader wakes and reports it
        else:
            if not conn.expired:
                conn.deadline = asked[3]
        finally:
            self.unsent = None

    async def answer(self) -> Response:
        """Wait on the held connection (see the class docstring)."""
        pool = self._pool
        conn = self.conn
        assert conn is not None
        opool = pool._origin_pool(self.origin)
        try:
            try:
                await conn.raw.wait_readable()
            except BaseException as exc:
                asked, self._asked = self._asked, None
                if asked is None:
                    self._drop(conn)
                    if isinstance(exc, Exception):
                        raise ConnectionClosed("the held connection was closed") from exc
                    raise
                error = pool._failure(
                    opool, conn, exc, self, asked[3], asked[4], writing=self.unsent is not None
                )
                if error is exc:
                    raise
                raise error from exc
            asked, self._asked = self._asked, None
            if asked is None:
                self._drop(conn)
                raise ConnectionClosed("the server closed an idle connection")
            wire, target, body, read_end, deadline = asked
            try:
                return await pool._answer(
                    opool, conn, wire, b"POST", target, body, read_end, deadline, self
                )
            except ConnectionClosed:
                if not _stale(conn):
                    raise
                # The server closed the idle connection as we wrote on it: as in ``request``,
                # once on a new connection.
                pool.stats.stale_retries += 1
                opool.open += 1
                conn = await pool._connect(self.origin, opool, deadline)
                return await pool._exchange(
                    opool, conn, wire, b"POST", target, body, deadline, self
                )
        except TransportError as exc:
            pool.stats.errors[exc.kind] += 1
            raise

    def _drop(self, conn: _Conn) -> None:
        self.conn = None
        self._pool._discard(self._pool._origin_pool(self.origin), conn)

    def close(self) -> None:
        """Give the connection back (to the idle list when nothing is pending on it)."""
        pool = self._pool
        pool._held.discard(self)
        conn, self.conn = self.conn, None
        if conn is None:
            return
        opool = pool._origin_pool(self.origin)
        if self._asked is None and self.unsent is None and not conn.expired:
            pool._release(opool, conn, reusable=True)
        else:
            pool._release(opool, conn, reusable=False)


def _stale(conn: _Conn) -> bool:
    """A reused keep-alive connection the server closed before any of the answer came: the
    request never reached it, so it may be sent once more on a new connection. Not when the
    answer had started (even if an h11 hand-over consumed it) or the connection was new."""
    return not (conn.reader.buffered or conn.answer_started or conn.served == 0)


@asynccontextmanager
async def open_pool(
    *,
    limits: ClientLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    force_h11: bool = False,
) -> AsyncIterator[ConnectionPool]:
    """A ``ConnectionPool`` with its watchdog running; closed (connections and all) on exit."""
    pool = ConnectionPool(
        limits=limits, ssl_context=ssl_context, headers=headers, force_h11=force_h11
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        try:
            yield pool
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


def _h11_events(
    state: h11.Connection, wire: bytes, method: bytes, target: bytes, body: bytes
) -> bytes:
    """Feed the request described by our rendered ``wire`` to an h11 client state.

    Returns the bytes h11 renders for it: what the pure-h11 path sends, and what the fallback path
    drops because the fast path already sent the same request.
    """
    head_end = wire.index(b"\r\n\r\n")
    headers = []
    for line in wire[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip()))
    out = state.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if body:
        out += state.send(h11.Data(data=body)) or b""
    return out + (state.send(h11.EndOfMessage()) or b"")
