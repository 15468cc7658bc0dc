"""Shared fixtures of the trio-layer HTTP tests.

``start_server`` runs ``HTTPServer``s on 127.0.0.1 port 0 in a nursery owned by the fixture and, at
teardown, cancels them and checks that nothing is left behind (no open connection, nothing watched).
The raw helpers talk to a server through ``trio.open_tcp_stream`` (trio's own ``SocketStream``, not
our ``RawStream``), so the bytes on the wire are exactly what the test wrote.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Final, Protocol

import pytest
import trio

from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import Action, Handler, HTTPServer, Reply, ServerLimits

DEADLINE: Final = 10.0  # upper bound of any single network step in these tests (real seconds)
DRIP_BODY: Final = b'{"drip":"' + b"0123456789" * 5 + b'"}'


async def app(request: Request) -> Reply:
    """The route table every server test uses."""
    return app_now(request)


def app_now(request: Request) -> Reply:
    """``app``'s synchronous face (``HTTPServer(now=...)``): every route answers at once."""
    target = request.target
    if target == b"/echo":
        return Reply(
            200,
            request.body,
            headers=(
                (b"X-Method", request.method),
                (b"X-Echo", request.header(b"x-test") or b"-"),
            ),
        )
    if target == b"/empty":
        return Reply(204)
    if target == b"/accepted":
        return Reply(202, b'{"accepted":true}')
    if target == b"/close":
        return Reply(200, b"never sent", action=Action.CLOSE)
    if target == b"/hang":
        return Reply(200, b"never sent", action=Action.HANG)
    if target == b"/drip":
        return Reply(200, DRIP_BODY, action=Action.DRIP, drip_bytes=7, drip_interval=0.001)
    if target == b"/boom":
        raise RuntimeError("handler bug (on purpose)")
    return Reply(404, b"no such route\n", content_type=b"text/plain")


class StartServer(Protocol):
    def __call__(
        self,
        handler: Handler = ...,
        *,
        limits: ServerLimits | None = ...,
        force_h11: bool = ...,
        ssl_context: ssl.SSLContext | None = ...,
    ) -> Awaitable[tuple[HTTPServer, Origin]]: ...


@pytest.fixture(params=["tasks", "mux"])
async def start_server(request: pytest.FixtureRequest) -> AsyncIterator[StartServer]:
    """Every server test runs twice: with a task per connection, and with the server's mux
    (a ``now`` face: ``app``'s own, or any other handler's coroutine, which the mux hands to a
    task and takes back when the connection is idle again)."""
    servers: list[HTTPServer] = []
    mux = request.param == "mux"
    async with trio.open_nursery() as nursery:

        async def start(
            handler: Handler = app,
            *,
            limits: ServerLimits | None = None,
            force_h11: bool = False,
            ssl_context: ssl.SSLContext | None = None,
        ) -> tuple[HTTPServer, Origin]:
            now = None
            if mux:
                now = app_now if handler is app else handler
            server = HTTPServer(handler, limits=limits, force_h11=force_h11, now=now)
            bound = await nursery.start(
                partial(server.serve, "127.0.0.1", 0, ssl_context=ssl_context)
            )
            servers.append(server)
            assert (server.mux is not None) == (mux and not force_h11)
            [(host, port)] = bound
            return server, Origin("https" if ssl_context else "http", host, port)

        yield start
        nursery.cancel_scope.cancel()
    for server in servers:  # cancelling serve() ended every connection task and closed it
        assert server.stats.connections_open == 0
        assert server.stats.lingering == 0
        assert len(server.watchdog) == 0
        assert not server._connections
        assert server.mux is None or not server.mux


@pytest.fixture
async def server(start_server: StartServer) -> tuple[HTTPServer, Origin]:
    return await start_server()


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    async with open_pool(limits=ClientLimits(read_timeout=DEADLINE)) as pool:
        yield pool


# --- raw peers ------------------------------------------------------------------------------------


async def read_until_close(stream: trio.abc.ReceiveStream, limit: int = 1 << 20) -> bytes:
    """Everything the peer sends until it closes (a reset after some bytes ends it too)."""
    data = bytearray()
    with trio.fail_after(DEADLINE):
        while len(data) <= limit:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, buffer: bytearray) -> None:
    """Receive into ``buffer`` until it contains ``marker``."""
    with trio.fail_after(DEADLINE):
        while marker not in buffer:
            chunk = await stream.receive_some(65536)
            assert chunk, f"peer closed before sending {marker!r}; got {bytes(buffer)!r}"
            buffer += chunk


async def exchange(origin: Origin, data: bytes) -> bytes:
    """Write ``data`` on a new connection and return every byte received until the server closes."""
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream(origin.host, origin.port)
    async with stream:
        await stream.send_all(data)
        return await read_until_close(stream)


RawResponse = tuple[int, dict[bytes, bytes], bytes]


def split_responses(data: bytes) -> list[RawResponse]:
    """Parse a run of Content-Length framed responses (what our server writes) into a list."""
    out: list[RawResponse] = []
    rest = data
    for _ in range(100):
        if not rest:
            return out
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete head {head!r}"
        status_line, *lines = head.split(b"\r\n")
        version, status, *_ = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1", status_line
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        assert len(rest) >= length, f"short body after {head!r}"
        out.append((int(status), headers, rest[:length]))
        rest = rest[length:]
    raise AssertionError("more than 100 responses")


async def read_request(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes | None:
    """One Content-Length framed request from ``stream`` (for tiny test servers): its body.

    None when the peer closed before a request started.
    """
    with trio.fail_after(DEADLINE):
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                assert not buffer, f"peer closed mid-request: {bytes(buffer)!r}"
                return None
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        length = 0
        for line in bytes(buffer[:end]).lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(buffer) < end + length:
            chunk = await stream.receive_some(65536)
            assert chunk, "peer closed mid-body"
            buffer += chunk
        body = bytes(buffer[end : end + length])
        del buffer[: end + length]
        return body


TinyHandler = Callable[[trio.SocketStream], Awaitable[None]]


@pytest.fixture
async def tiny_server(nursery: trio.Nursery) -> Callable[[TinyHandler], Awaitable[Origin]]:
    """A throw-away trio TCP server running ``handler(stream)`` per connection (a fake peer)."""

    async def start(handler: TinyHandler) -> Origin:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        return Origin("http", host, port)

    return start


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition that another task or the kernel makes true (bounded).

    The servers' counters and phases have no events to wait on, and the tests must not add any.
    """
    with trio.fail_after(DEADLINE):
        while not predicate():  # noqa: ASYNC110 (nothing to wait on: see above)
            await trio.sleep(0.002)
    assert predicate(), what
