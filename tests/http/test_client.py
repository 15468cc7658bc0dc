"""ConnectionPool against tiny raw trio servers that misbehave on purpose, and against HTTPServer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from conftest import (
    DEADLINE,
    StartServer,
    TinyHandler,
    closed_port,
    read_request,
    read_until_close,
)

from loadgen.errors import (
    BadResponse,
    ConnectError,
    ConnectionClosed,
    ReadTimeout,
    TransportError,
)
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, _Conn, open_pool

TinyServer = Callable[[TinyHandler], Awaitable[Origin]]


def answering(*responses: bytes, then_close: bool = False) -> TinyHandler:
    """A connection handler that answers the n-th request on a connection with responses[n]."""

    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        for response in responses:
            if await read_request(stream, buffer) is None:
                return
            await stream.send_all(response)
        if not then_close:
            await read_until_close(stream)

    return handler


# --- errors mapped to TransportError kinds --------------------------------------------------------


async def test_connect_to_a_closed_port(pool: ConnectionPool) -> None:
    with pytest.raises(ConnectError) as info:
        await pool.request(Origin("http", "127.0.0.1", closed_port()), b"/")
    assert info.value.kind == "connect"
    assert pool.stats.errors == {"connect": 1}
    assert pool.stats.connections_open == 0


async def _close_without_answering(stream: trio.SocketStream) -> None:
    await read_request(stream, bytearray())


async def _garbage(stream: trio.SocketStream) -> None:
    await read_request(stream, bytearray())
    await stream.send_all(b"SSH-2.0-OpenSSH_9.2 hello\r\n\r\n")


async def _bad_status(stream: trio.SocketStream) -> None:
    await read_request(stream, bytearray())
    await stream.send_all(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")


async def _half_an_answer(stream: trio.SocketStream) -> None:
    await read_request(stream, bytearray())
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")


async def _half_a_chunked_answer(stream: trio.SocketStream) -> None:
    await read_request(stream, bytearray())
    await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")


@pytest.mark.parametrize(
    ("peer", "error"),
    [
        (_close_without_answering, ConnectionClosed),
        (_half_an_answer, ConnectionClosed),
        (_half_a_chunked_answer, ConnectionClosed),
        (_garbage, BadResponse),
        (_bad_status, BadResponse),
    ],
)
async def test_misbehaving_peers_map_to_transport_errors(
    tiny_server: TinyServer,
    pool: ConnectionPool,
    peer: TinyHandler,
    error: type[TransportError],
) -> None:
    origin = await tiny_server(peer)
    with pytest.raises(error):
        await pool.request(origin, b"/x", b"{}")
    assert pool.stats.errors == {error.kind: 1}
    assert pool.stats.stale_retries == 0  # a fresh connection is never retried
    assert pool.stats.connections_open == 0


@pytest.mark.slow
async def test_read_timeout(tiny_server: TinyServer) -> None:
    """Real time: the pool only dials real TCP, so its read timeout runs on the real clock."""

    async def silent(stream: trio.SocketStream) -> None:
        await read_until_close(stream)  # reads the request, never answers

    origin = await tiny_server(silent)
    async with open_pool(limits=ClientLimits(read_timeout=0.2)) as pool:
        start = trio.current_time()
        with pytest.raises(ReadTimeout):
            await pool.request(origin, b"/x")
        assert 0.2 <= trio.current_time() - start < DEADLINE
        assert pool.stats.errors == {"read_timeout": 1}
        assert pool.stats.connections_open == 0


async def test_errors_are_counted_by_kind(tiny_server: TinyServer, pool: ConnectionPool) -> None:
    closing = await tiny_server(_close_without_answering)
    garbage = await tiny_server(_garbage)
    nowhere = Origin("http", "127.0.0.1", closed_port())
    for origin in (closing, garbage, closing, nowhere):
        with pytest.raises(TransportError):
            await pool.request(origin, b"/")
    assert pool.stats.errors == {"closed": 2, "bad_response": 1, "connect": 1}
    assert pool.stats.snapshot()["errors"] == {"bad_response": 1, "closed": 2, "connect": 1}
    assert pool.stats.requests == 4


# --- keep-alive and the stale-connection retry ----------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("force_h11", [False, True], ids=["fast", "h11"])
async def test_stale_keep_alive_connection_is_retried_once(
    tiny_server: TinyServer, force_h11: bool
) -> None:
    closed = trio.Event()

    async def one_per_connection(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        await read_request(stream, buffer)
        await stream.send_all(OK)  # says keep-alive, then closes while idle: the classic race
        await stream.aclose()
        closed.set()

    origin = await tiny_server(one_per_connection)
    async with open_pool(force_h11=force_h11) as pool:
        assert (await pool.request(origin, b"/a")).body == b"ok"
        with trio.fail_after(DEADLINE):
            await closed.wait()
        response = await pool.request(origin, b"/b")
        assert (response.status, response.body) == (200, b"ok")
        assert pool.stats.stale_retries == 1
        assert pool.stats.reused == 1
        assert pool.stats.connections_opened == 2
        assert not pool.stats.errors


@pytest.mark.parametrize("force_h11", [False, True], ids=["fast", "h11"])
@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ncut",
        b"HTTP/1.1 200 OK\r\nContent-",
    ],
    ids=["length", "chunked", "head"],
)
async def test_answer_started_on_a_reused_connection_is_not_retried(
    tiny_server: TinyServer, force_h11: bool, cut: bytes
) -> None:
    """A retry would send the (non-idempotent) POST twice: only a silent close is stale."""
    origin = await tiny_server(answering(OK, cut, then_close=True))
    async with open_pool(force_h11=force_h11) as pool:
        await pool.request(origin, b"/a")
        with pytest.raises(ConnectionClosed):
            await pool.request(origin, b"/b")
        assert pool.stats.stale_retries == 0
        assert pool.stats.connections_opened == 1
        assert pool.stats.errors == {"closed": 1}


async def test_keep_alive_off_opens_a_connection_per_request(start_server: StartServer) -> None:
    srv, origin = await start_server()
    async with open_pool(limits=ClientLimits(keep_alive=False)) as pool:
        for _ in range(3):
            assert (await pool.request(origin, b"/echo", b"x")).body == b"x"
        assert pool.stats.connections_opened == 3
        assert pool.stats.reused == 0
    assert srv.stats.connections_accepted == 3


async def test_closed_pool_refuses_requests(start_server: StartServer) -> None:
    _, origin = await start_server()
    async with open_pool() as pool:
        await pool.request(origin, b"/echo")
        assert pool.stats.connections_open == 1
    assert pool.stats.connections_open == 0
    with pytest.raises(ConnectionClosed):
        await pool.request(origin, b"/echo")


# --- responses the fast path declines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reusable"),
    [
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, id="http1.0"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", False, id="no-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
            True,
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            True,
            id="100-continue-first",
        ),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", True, id="bare-lf"),
    ],
)
async def test_declined_responses_are_read_by_h11(
    tiny_server: TinyServer, pool: ConnectionPool, answer: bytes, reusable: bool
) -> None:
    # a connection that cannot be reused gets one answer, then the server closes it
    responses = (answer, answer) if reusable else (answer,)
    origin = await tiny_server(answering(*responses, then_close=not reusable))
    for _ in range(2):
        response = await pool.request(origin, b"/x", b"{}")
        assert (response.status, response.body) == (200, b"hello")
        assert response.keep_alive is reusable
    if reusable:  # h11 keeps serving the connection: one fallback, one connection
        assert (pool.stats.h11_fallbacks, pool.stats.connections_opened, pool.stats.reused) == (
            1,
            1,
            1,
        )
    else:
        assert (pool.stats.h11_fallbacks, pool.stats.connections_opened, pool.stats.reused) == (
            2,
            2,
            0,
        )


async def test_204_without_body_then_keep_alive(
    tiny_server: TinyServer, pool: ConnectionPool
) -> None:
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    origin = await tiny_server(answering(no_content, OK))
    assert (await pool.request(origin, b"/x")).status == 204
    assert (await pool.request(origin, b"/x")).body == b"ok"
    assert pool.stats.reused == 1


# --- force_h11 on either side ---------------------------------------------------------------------


@pytest.mark.parametrize("server_h11", [False, True], ids=["server-fast", "server-h11"])
@pytest.mark.parametrize("pool_h11", [False, True], ids=["pool-fast", "pool-h11"])
async def test_force_h11_end_to_end(
    start_server: StartServer, server_h11: bool, pool_h11: bool
) -> None:
    srv, origin = await start_server(force_h11=server_h11)
    async with open_pool(force_h11=pool_h11) as pool:
        for i in range(3):
            response = await pool.request(origin, b"/echo", b"[%d]" % i)
            assert (response.status, response.body) == (200, b"[%d]" % i)
            assert response.header(b"content-type") == b"application/json"
        assert (await pool.request(origin, b"/empty")).status == 204
        assert (await pool.request(origin, b"/accepted")).body == b'{"accepted":true}'
        assert (await pool.request(origin, b"/boom")).status == 500
        assert pool.stats.connections_opened == 1
        assert pool.stats.reused == 5
        assert pool.stats.h11_fallbacks == 0
    assert (srv.stats.requests_h11, srv.stats.requests_fast) == ((6, 0) if server_h11 else (0, 6))


async def test_a_connection_expired_as_its_answer_completes_is_not_reused(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog may close the socket while the task that has just read the whole answer
    waits at a checkpoint: the answer stands, but the closed connection must not go back to the
    pool (the next request would fail on it with a bogus write timeout)."""
    _, origin = await start_server()
    async with open_pool() as pool:
        connect = pool._connect

        async def connect_expiring_after_read(*args: Any) -> _Conn:
            conn = await connect(*args)
            stream = conn.stream

            class ExpiringAfterRead(trio.abc.Stream):
                async def send_all(self, data: bytes | bytearray | memoryview) -> None:
                    await stream.send_all(data)

                async def wait_send_all_might_not_block(self) -> None:
                    await stream.wait_send_all_might_not_block()

                async def receive_some(self, max_bytes: int | None = None) -> bytes:
                    data = await stream.receive_some(max_bytes)
                    conn.expire()  # what the watchdog does at the deadline
                    return bytes(data)

                async def aclose(self) -> None:
                    await stream.aclose()

            conn.stream = ExpiringAfterRead()
            return conn

        monkeypatch.setattr(pool, "_connect", connect_expiring_after_read)
        assert (await pool.request(origin, b"/echo", b"a")).body == b"a"
        monkeypatch.setattr(pool, "_connect", connect)
        assert (await pool.request(origin, b"/echo", b"b")).body == b"b"
        assert pool.stats.connections_opened == 2
        assert pool.stats.reused == 0
        assert not pool.stats.errors
        assert pool.stats.connections_open == 1
