"""HTTPServer over real loopback sockets (and over in-memory streams for the timeouts)."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.lowlevel
import trio.testing
from conftest import (
    DEADLINE,
    DRIP_BODY,
    StartServer,
    app,
    exchange,
    read_until,
    read_until_close,
    split_responses,
    wait_for,
)

from loadgen.errors import ConnectError, ConnectionClosed, ReadTimeout
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply, ServerLimits

# --- fast path round trips ----------------------------------------------------------------------


async def test_round_trip_reuses_the_connection(
    server: tuple[HTTPServer, Origin], pool: ConnectionPool
) -> None:
    srv, origin = server
    for i in range(3):
        response = await pool.request(origin, b"/echo", b'{"n":%d}' % i)
        assert response.status == 200
        assert response.reason == b"OK"
        assert response.body == b'{"n":%d}' % i
        assert response.header(b"content-type") == b"application/json"
        assert response.header(b"x-method") == b"POST"
        assert response.keep_alive
    assert pool.stats.connections_opened == 1
    assert pool.stats.reused == 2
    assert pool.stats.h11_fallbacks == 0
    assert srv.stats.connections_accepted == 1
    assert srv.stats.requests_fast == 3
    assert srv.stats.requests_h11 == 0
    assert not srv.stats.errors


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        (b"/echo", 200, b"{}"),
        (b"/accepted", 202, b'{"accepted":true}'),
        (b"/empty", 204, b""),
        (b"/nowhere", 404, b"no such route\n"),
    ],
)
async def test_status_replies(
    server: tuple[HTTPServer, Origin],
    pool: ConnectionPool,
    target: bytes,
    status: int,
    body: bytes,
) -> None:
    _, origin = server
    for _ in range(2):  # the second one on the kept-alive connection: the framing was right
        response = await pool.request(origin, target, b"{}")
        assert (response.status, response.body) == (status, body)
    assert pool.stats.reused == 1
    if status == 204:
        assert response.header(b"content-length") is None


async def test_request_headers_reach_the_handler(start_server: StartServer) -> None:
    _, origin = await start_server()
    async with open_pool(headers=[(b"X-Test", b"hello")]) as pool:
        response = await pool.request(origin, b"/echo", method=b"PUT", content_type=b"")
    assert response.header(b"x-echo") == b"hello"
    assert response.header(b"x-method") == b"PUT"


async def test_many_concurrent_requests_over_a_bounded_pool(start_server: StartServer) -> None:
    in_flight = 0
    peak = 0

    async def counting(request: Request) -> Reply:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.lowlevel.checkpoint()
        in_flight -= 1
        return await app(request)

    srv, origin = await start_server(counting)
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        response = await pool.request(origin, b"/echo", b"%d" % i)
        assert response.status == 200
        results[i] = response.body

    async with open_pool(limits=ClientLimits(max_connections=4)) as pool:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
    assert results == {i: b"%d" % i for i in range(200)}
    assert 1 <= pool.stats.connections_opened <= 4
    assert srv.stats.connections_accepted == pool.stats.connections_opened
    assert pool.stats.reused == 200 - pool.stats.connections_opened
    assert srv.stats.requests_fast == 200
    assert peak <= 4


async def test_pipelined_requests_are_answered_in_order(server: tuple[HTTPServer, Origin]) -> None:
    srv, origin = server
    wire = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
        b"POST /empty HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        b"POST /accepted HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast"
    )
    responses = split_responses(await exchange(origin, wire))
    assert [(status, body) for status, _, body in responses] == [
        (200, b"first"),
        (204, b""),
        (202, b'{"accepted":true}'),
        (200, b"last"),
    ]
    assert responses[-1][1][b"connection"] == b"close"
    assert srv.stats.requests_fast == 4
    assert srv.stats.connections_accepted == 1


async def test_pipelined_requests_split_across_writes(server: tuple[HTTPServer, Origin]) -> None:
    srv, origin = server
    wire = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" * 3
    stream = await trio.open_tcp_stream(origin.host, origin.port)
    async with stream:
        for start in range(0, len(wire), 17):
            await stream.send_all(wire[start : start + 17])
        received = bytearray()
        with trio.fail_after(DEADLINE):
            while received.count(b"abc") < 3:
                received += await stream.receive_some(65536)
    assert [r[0::2] for r in split_responses(bytes(received))] == [(200, b"abc")] * 3
    assert srv.stats.requests_fast == 3


# --- fallback to h11 ------------------------------------------------------------------------------

CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        pytest.param(
            CHUNKED.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"),
            b"hello world",
            id="chunked",
        ),
        pytest.param(b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", b"abc", id="http1.0"),
        pytest.param(b"GET /echo HTTP/1.0\r\n\r\n", b"", id="http1.0-no-host"),
        pytest.param(
            b"POST /echo HTTP/1.1\nHost: t\nContent-Length: 2\nConnection: close\n\nhi",
            b"hi",
            id="bare-lf",
        ),
    ],
)
async def test_declined_requests_are_served_by_h11(
    server: tuple[HTTPServer, Origin], wire: bytes, body: bytes
) -> None:
    srv, origin = server
    [(status, headers, got)] = split_responses(await exchange(origin, wire))
    assert (status, got) == (200, body)
    assert headers[b"connection"] == b"close"
    assert srv.stats.requests_h11 == 1
    assert srv.stats.requests_fast == 0


async def test_after_a_fallback_the_connection_keeps_serving(
    server: tuple[HTTPServer, Origin],
) -> None:
    srv, origin = server
    wire = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nf1"
        + CHUNKED
        + b"POST /empty HTTP/1.1\r\nHost: t\r\n\r\n"
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nh3"
    )
    responses = split_responses(await exchange(origin, wire))
    assert [r[0::2] for r in responses] == [
        (200, b"f1"),
        (200, b"hello world"),
        (204, b""),
        (200, b"h3"),
    ]
    assert srv.stats.requests_fast == 1
    assert srv.stats.requests_h11 == 3


async def test_expect_100_continue(server: tuple[HTTPServer, Origin]) -> None:
    srv, origin = server
    stream = await trio.open_tcp_stream(origin.host, origin.port)
    async with stream:
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        received = bytearray()
        await read_until(stream, b"\r\n\r\n", received)
        assert bytes(received).startswith(b"HTTP/1.1 100 ")
        assert received.endswith(b"\r\n\r\n")  # nothing else before the body is sent
        await stream.send_all(b"payload")
        rest = await read_until_close(stream)
    [(status, _, body)] = split_responses(rest)
    assert (status, body) == (200, b"payload")
    assert srv.stats.requests_h11 == 1


# --- bad input ------------------------------------------------------------------------------------

SMALL = ServerLimits(max_head=1024, max_body=1000)


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="garbage-start-line"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", 400, id="tls-hello"),
        pytest.param(b" POST /echo HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="leading-space"),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400, id="bad-length"
        ),
        pytest.param(b"POST /echo HTTP/1.1\r\n\r\n", 400, id="no-host"),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
            431,
            id="oversize-head",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2000,
            431,
            id="oversize-unfinished-head",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
            413,
            id="oversize-length",
        ),
        pytest.param(
            b"POST /echo HTTP/1.0\r\nContent-Length: 5000\r\n\r\n", 413, id="oversize-length-h11"
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"100\r\n" + b"z" * 256 + b"\r\n") * 5,
            413,
            id="oversize-chunked-body",
        ),
    ],
)
async def test_bad_input_gets_an_error_and_the_server_lives_on(
    start_server: StartServer, pool: ConnectionPool, wire: bytes, status: int
) -> None:
    srv, origin = await start_server(limits=SMALL)
    [(got, headers, _)] = split_responses(await exchange(origin, wire))
    assert got == status
    assert headers[b"connection"] == b"close"
    assert srv.stats.errors == {status: 1}
    response = await pool.request(origin, b"/echo", b"still alive")
    assert (response.status, response.body) == (200, b"still alive")


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"CONNECT /echo HTTP/1.1\r\nHost: t\r\n\r\n", id="fast"),
        pytest.param(b"CONNECT /echo HTTP/1.0\r\n\r\n", id="h11"),
    ],
)
async def test_connect_is_refused_whatever_the_handler_says(
    server: tuple[HTTPServer, Origin], pool: ConnectionPool, wire: bytes
) -> None:
    """The test app answers 200 to anything on /echo; a 200 to CONNECT would open a tunnel (and
    made h11 fail the whole server). The server says 501 instead and lives on."""
    srv, origin = server
    stream = await trio.open_tcp_stream(origin.host, origin.port)
    async with stream:
        await stream.send_all(wire)
        received = bytearray()
        await read_until(stream, b"supported\n", received)
    [(status, _, body)] = split_responses(bytes(received))
    assert (status, body) == (501, b"CONNECT is not supported\n")
    assert srv.stats.errors == {501: 1}
    response = await pool.request(origin, b"/echo", b"still alive")
    assert (response.status, response.body) == (200, b"still alive")


async def test_errors_are_counted_by_status(start_server: StartServer) -> None:
    srv, origin = await start_server(limits=SMALL)
    for wire in (
        b"BAD\r\n\r\n",
        b"WORSE\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9999\r\n\r\n",
    ):
        await exchange(origin, wire)
    assert srv.stats.errors == {400: 2, 413: 1}
    assert srv.stats.snapshot()["errors_by_status"] == {"400": 2, "413": 1}


async def test_handler_error_gives_500_and_keeps_the_connection(
    server: tuple[HTTPServer, Origin], pool: ConnectionPool
) -> None:
    srv, origin = server
    response = await pool.request(origin, b"/boom")
    assert response.status == 500
    response = await pool.request(origin, b"/echo", b"ok")
    assert (response.status, response.body) == (200, b"ok")
    assert pool.stats.reused == 1
    assert srv.stats.handler_errors == 1
    assert srv.stats.errors == {500: 1}


def _server_connection_reading(srv: HTTPServer) -> bool:
    return any(conn.phase.value == "reading" for conn in srv._connections)


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
async def test_peer_gone_mid_request(
    server: tuple[HTTPServer, Origin], pool: ConnectionPool, reset: bool
) -> None:
    srv, origin = server
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with sock:
        await sock.connect((origin.host, origin.port))
        await sock.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
        await wait_for(lambda: _server_connection_reading(srv), "the server reads the request")
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await wait_for(lambda: srv.stats.connections_open == 0, "the server drops the connection")
    assert srv.stats.peer_resets == (1 if reset else 0)
    assert srv.stats.incomplete_requests == (0 if reset else 1)
    assert not srv.stats.errors
    response = await pool.request(origin, b"/echo", b"next")
    assert (response.status, response.body) == (200, b"next")


# --- timeouts, on the mock clock over in-memory streams ------------------------------------------

REQUEST = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok"
TIMED = ServerLimits(read_timeout=1.25, idle_timeout=2.5, write_timeout=5.0)  # watchdog: 0.125 s


async def _check_serves_a_new_connection(srv: HTTPServer) -> None:
    client, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(srv._serve_connection, server_end)
        await client.send_all(REQUEST.replace(b"Host: t", b"Host: t\r\nConnection: close"))
        [(status, _, body)] = split_responses(await read_until_close(client))
    assert (status, body) == (200, b"ok")


@pytest.mark.parametrize("force_h11", [False, True], ids=["fast", "h11"])
async def test_slow_drip_request_gets_408(
    autojump_clock: trio.testing.MockClock, force_h11: bool
) -> None:
    srv = HTTPServer(app, limits=TIMED, force_h11=force_h11)
    client, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.watchdog.run)
        nursery.start_soon(srv._serve_connection, server_end)

        async def drip() -> None:
            for i in range(len(REQUEST)):  # one byte every 0.5 s: 27 s for the whole request
                try:
                    await client.send_all(REQUEST[i : i + 1])
                except trio.BrokenResourceError:
                    return
                await trio.sleep(0.5)

        nursery.start_soon(drip)
        answer = await read_until_close(client)
        # first byte at 0, read_timeout 1.25: never early, at most two watchdog periods late
        assert 1.25 <= trio.current_time() <= 1.25 + 2 * srv.watchdog.resolution
        [(status, headers, _)] = split_responses(answer)
        assert status == 408
        assert headers[b"connection"] == b"close"
        assert srv.stats.errors == {408: 1}
        assert srv.stats.connections_open == 0
        await _check_serves_a_new_connection(srv)
        nursery.cancel_scope.cancel()


async def test_idle_connection_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    srv = HTTPServer(app, limits=TIMED)
    client, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.watchdog.run)
        nursery.start_soon(srv._serve_connection, server_end)
        await trio.sleep(1)
        await client.send_all(REQUEST)  # served at t=1; idle from then on
        answer = await read_until_close(client)
        assert 1 + 2.5 <= trio.current_time() <= 1 + 2.5 + 2 * srv.watchdog.resolution
        assert [r[0::2] for r in split_responses(answer)] == [(200, b"ok")]
        assert srv.stats.idle_closed == 1
        assert not srv.stats.errors
        nursery.cancel_scope.cancel()


async def test_reader_that_never_reads_hits_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    srv = HTTPServer(app, limits=TIMED)
    client, server_end = trio.testing.lockstep_stream_pair()  # send_all waits for the reader
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.watchdog.run)
        nursery.start_soon(srv._serve_connection, server_end)
        await client.send_all(REQUEST)
        await wait_for_closed(srv)
        assert 5.0 <= trio.current_time() <= 5.0 + 2 * srv.watchdog.resolution
        assert srv.stats.write_timeouts == 1
        nursery.cancel_scope.cancel()


async def wait_for_closed(srv: HTTPServer) -> None:
    with trio.fail_after(60):  # virtual seconds
        while srv.stats.connections_open:
            await trio.testing.wait_all_tasks_blocked()
            if srv.stats.connections_open:
                await trio.sleep(0.125)


# --- Reply actions --------------------------------------------------------------------------------


async def test_close_action(server: tuple[HTTPServer, Origin], pool: ConnectionPool) -> None:
    _, origin = server
    with pytest.raises(ConnectionClosed):
        await pool.request(origin, b"/close")
    assert pool.stats.errors == {"closed": 1}
    assert (await pool.request(origin, b"/echo", b"x")).body == b"x"


@pytest.mark.slow
async def test_hang_action(server: tuple[HTTPServer, Origin]) -> None:
    """Real time: the pool only dials real TCP, so its read timeout runs on the real clock."""
    srv, origin = server
    async with open_pool(limits=ClientLimits(read_timeout=0.2)) as pool:
        start = trio.current_time()
        with pytest.raises(ReadTimeout):
            await pool.request(origin, b"/hang")
        assert 0.2 <= trio.current_time() - start < DEADLINE
        assert pool.stats.errors == {"read_timeout": 1}
        assert (await pool.request(origin, b"/echo", b"x")).body == b"x"
    await wait_for(lambda: srv.stats.connections_open == 0, "the hung connection ends")


async def test_drip_action(server: tuple[HTTPServer, Origin], pool: ConnectionPool) -> None:
    _, origin = server
    for _ in range(2):
        response = await pool.request(origin, b"/drip")
        assert (response.status, response.body) == (200, DRIP_BODY)
    assert pool.stats.reused == 1


# --- graceful shutdown ----------------------------------------------------------------------------


async def test_shutdown_finishes_in_flight_and_closes_idle() -> None:
    entered = trio.Event()
    release = trio.Event()

    async def slow(request: Request) -> Reply:
        if request.target == b"/slow":
            entered.set()
            await release.wait()
            return Reply(200, request.body)
        return await app(request)

    srv = HTTPServer(slow)
    answers: list[tuple[int, bytes, bool]] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as serving:  # exits only when serve() returns
                [(host, port)] = await serving.start(srv.serve, "127.0.0.1", 0)
                origin = Origin("http", host, port)
                async with open_pool() as idle_pool, open_pool() as busy_pool:
                    await idle_pool.request(origin, b"/echo")  # leaves an idle keep-alive conn
                    idle_raw = await trio.open_tcp_stream(host, port)  # never sends anything
                    await wait_for(lambda: srv.stats.connections_open == 2, "both accepted")

                    async def in_flight() -> None:
                        r = await busy_pool.request(origin, b"/slow", b"late")
                        answers.append((r.status, r.body, r.keep_alive))

                    outer.start_soon(in_flight)
                    await entered.wait()
                    srv.shutdown()
                    assert await read_until_close(idle_raw) == b""
                    await idle_raw.aclose()
                    with pytest.raises(ConnectError):
                        await busy_pool.request(origin, b"/echo")
                    release.set()
            assert answers == [(200, b"late", False)]
    assert srv.stats.connections_open == 0
    assert srv.stats.idle_closed == 0  # closed by the shutdown, not by a timeout
    assert len(srv.watchdog) == 0


async def test_shutdown_with_nothing_open() -> None:
    srv = HTTPServer(app)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(srv.serve, "127.0.0.1", 0)
            srv.shutdown()
    assert "draining=True" in repr(srv)
