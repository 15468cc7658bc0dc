"""The server's mux (``HTTPServer(now=...)``): what it answers itself, what it hands to a task and
takes back, and its timeouts, on real loopback sockets.

Every test of ``test_server.py`` that uses the ``start_server`` fixture already runs with the mux
too; these are the mux's own paths. The timeouts run on the real clock (the mux waits on a real
epoll descriptor), with short limits and bounds that are never early and generous late.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable
from functools import partial

import pytest
import trio
from conftest import DEADLINE, StartServer, app, app_now, read_until, read_until_close, wait_for
from conftest import split_responses as split

from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply, ServerLimits
from loadgen.http.tls import client_context, server_context

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="Linux")

REQUEST = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok"
WAIT = b"POST /wait HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nlate"


def waiting_now(request: Request) -> Reply | Awaitable[Reply]:
    """``now`` of a server whose ``/wait`` needs a wait (a coroutine); the rest answers at once."""
    if request.target == b"/wait":
        return _later(request)
    return app_now(request)


async def _later(request: Request) -> Reply:
    await trio.sleep(0.01)
    return Reply(200, request.body)


async def _waiting(request: Request) -> Reply:
    outcome = waiting_now(request)
    return outcome if isinstance(outcome, Reply) else await outcome


async def start(
    nursery: trio.Nursery, limits: ServerLimits | None = None
) -> tuple[HTTPServer, tuple[str, int]]:
    srv = HTTPServer(_waiting, limits=limits, now=waiting_now)
    [address] = await nursery.start(srv.serve, "127.0.0.1", 0)
    assert srv.mux is not None
    return srv, address


async def connect(address: tuple[str, int]) -> trio.SocketStream:
    with trio.fail_after(DEADLINE):
        return await trio.open_tcp_stream(*address)


async def answers(stream: trio.abc.ReceiveStream, count: int) -> list[tuple[int, bytes]]:
    buffer = bytearray()
    with trio.fail_after(DEADLINE):
        return await _answers(stream, count, buffer)


async def _answers(
    stream: trio.abc.ReceiveStream, count: int, buffer: bytearray
) -> list[tuple[int, bytes]]:
    while True:
        await read_until(stream, b"\r\n\r\n", buffer)
        try:
            got = split(bytes(buffer))
        except AssertionError:  # a body still on its way
            got = []
        if len(got) >= count:
            return [(status, body) for status, _, body in got]
        buffer += await stream.receive_some(65536)


async def test_the_common_case_is_answered_by_the_mux_itself(nursery: trio.Nursery) -> None:
    srv, address = await start(nursery)
    stream = await connect(address)
    for _ in range(3):
        await stream.send_all(REQUEST)
        assert await answers(stream, 1) == [(200, b"ok")]
    assert srv.mux is not None
    assert srv.mux.handed_off == 0  # no task: every answer written by the mux's own pass
    assert len(srv.mux) == 1
    assert srv.stats.requests_fast == 3
    await stream.aclose()
    await wait_for(lambda: srv.stats.connections_open == 0, "the close is seen")
    assert len(srv.mux) == 0
    assert len(srv.watchdog) == 0
    assert not srv._connections


async def test_a_wait_goes_to_a_task_and_the_connection_comes_back(nursery: trio.Nursery) -> None:
    srv, address = await start(nursery)
    assert srv.mux is not None
    stream = await connect(address)
    await stream.send_all(WAIT)
    assert await answers(stream, 1) == [(200, b"late")]
    await wait_for(lambda: len(srv.mux or ()) == 1, "the mux holds it again")
    assert srv.mux.handed_off == 1
    await stream.send_all(REQUEST)
    assert await answers(stream, 1) == [(200, b"ok")]
    assert srv.mux.handed_off == 1  # the next one was the mux's again
    assert srv.stats.requests_fast == 2
    await stream.aclose()


async def test_pipelined_requests_keep_their_order_across_a_hand_off(
    nursery: trio.Nursery,
) -> None:
    srv, address = await start(nursery)
    stream = await connect(address)
    # answered at once, then one that waits, then two that would be at once: in order
    await stream.send_all(REQUEST + WAIT + REQUEST + REQUEST.replace(b"ok", b"ko"))
    got = await answers(stream, 4)
    assert got == [(200, b"ok"), (200, b"late"), (200, b"ok"), (200, b"ko")]
    assert srv.stats.requests_fast == 4
    await stream.aclose()


async def test_a_request_split_over_reads_is_assembled(nursery: trio.Nursery) -> None:
    srv, address = await start(nursery)
    stream = await connect(address)
    for cut in (5, 30, len(REQUEST) - 1):
        await stream.send_all(REQUEST[:cut])
        await trio.sleep(0.02)
        await stream.send_all(REQUEST[cut:])
        assert await answers(stream, 1) == [(200, b"ok")]
    assert srv.mux is not None
    assert srv.mux.handed_off == 0
    await stream.aclose()


async def test_bad_input_and_h11_go_to_the_task_code(nursery: trio.Nursery) -> None:
    srv, address = await start(nursery)
    stream = await connect(address)
    await stream.send_all(b"BROKEN\r\n\r\n")
    [(status, headers, _)] = split(await read_until_close(stream))
    assert (status, headers[b"connection"]) == (400, b"close")
    await stream.aclose()
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    )
    second = await connect(address)
    await second.send_all(chunked + REQUEST)
    assert await answers(second, 2) == [(200, b"hi"), (200, b"ok")]
    assert srv.stats.requests_h11 == 2  # the connection stays with h11 once declined
    assert srv.stats.errors == {400: 1}
    await second.aclose()


async def test_idle_timeout_closes_a_held_connection(nursery: trio.Nursery) -> None:
    limits = ServerLimits(idle_timeout=0.3, read_timeout=0.2)
    srv, address = await start(nursery, limits)
    stream = await connect(address)
    await stream.send_all(REQUEST)
    assert await answers(stream, 1) == [(200, b"ok")]
    idle_from = trio.current_time()
    assert await read_until_close(stream) == b""
    waited = trio.current_time() - idle_from
    assert 0.3 <= waited <= 0.3 + 2 * srv.watchdog.resolution + 1.0
    assert srv.stats.idle_closed == 1
    await stream.aclose()
    await wait_for(lambda: srv.stats.connections_open == 0, "closed in the books")


async def test_a_request_arriving_too_slowly_gets_408(nursery: trio.Nursery) -> None:
    limits = ServerLimits(idle_timeout=5.0, read_timeout=0.3)
    srv, address = await start(nursery, limits)
    stream = await connect(address)
    await stream.send_all(REQUEST[:10])  # and nothing more
    began = trio.current_time()
    [(status, headers, _)] = split(await read_until_close(stream))
    assert 0.3 <= trio.current_time() - began <= 0.3 + 2 * srv.watchdog.resolution + 1.0
    assert (status, headers[b"connection"]) == (408, b"close")
    assert srv.stats.errors == {408: 1}
    await stream.aclose()
    await wait_for(lambda: srv.stats.connections_open == 0, "closed in the books")


async def test_an_answer_the_socket_does_not_take_whole_is_finished_by_a_task(
    nursery: trio.Nursery,
) -> None:
    big = b"x" * (8 << 20)  # more than the socket buffers of both ends hold

    def big_now(request: Request) -> Reply:
        return Reply(200, big) if request.target == b"/big" else app_now(request)

    async def big_app(request: Request) -> Reply:
        return big_now(request)

    srv = HTTPServer(big_app, now=big_now)
    [address] = await nursery.start(srv.serve, "127.0.0.1", 0)
    stream = await connect(address)
    await stream.send_all(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n" + REQUEST)
    await trio.sleep(0.05)  # the mux writes what fits and hands the rest over
    assert srv.mux is not None
    assert srv.mux.handed_off == 1
    buffer = bytearray()
    with trio.fail_after(DEADLINE):
        while not buffer.endswith(b"\r\n\r\nok"):
            buffer += await stream.receive_some(1 << 20)
    assert [(status, body) for status, _, body in split(bytes(buffer))] == [
        (200, big),
        (200, b"ok"),
    ]
    await wait_for(lambda: len(srv.mux or ()) == 1, "back in the mux")
    await stream.aclose()


async def test_a_reader_that_never_reads_hits_the_write_timeout(nursery: trio.Nursery) -> None:
    big = b"x" * (8 << 20)

    def big_now(request: Request) -> Reply:
        return Reply(200, big)

    async def big_app(request: Request) -> Reply:
        return big_now(request)

    srv = HTTPServer(big_app, limits=ServerLimits(write_timeout=0.3), now=big_now)
    [address] = await nursery.start(srv.serve, "127.0.0.1", 0)
    stream = await connect(address)
    await stream.send_all(REQUEST)
    await wait_for(lambda: srv.stats.write_timeouts == 1, "the write times out")
    await wait_for(lambda: srv.stats.connections_open == 0, "and the connection is closed")
    await stream.aclose()


async def test_a_reset_from_an_idle_peer_is_counted(nursery: trio.Nursery) -> None:
    srv, address = await start(nursery)
    stream = await connect(address)
    await stream.send_all(REQUEST)
    assert await answers(stream, 1) == [(200, b"ok")]
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()  # a close with linger 0 sends RST
    await wait_for(lambda: srv.stats.connections_open == 0, "the reset is seen")
    assert srv.stats.peer_resets == 1
    assert srv.mux is not None
    assert len(srv.mux) == 0


async def test_shutdown_closes_held_connections_and_finishes_the_waiting_ones() -> None:
    srv = HTTPServer(_waiting, now=waiting_now)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as serving:
            [address] = await serving.start(srv.serve, "127.0.0.1", 0)
            idle = await connect(address)
            await idle.send_all(REQUEST)
            assert await answers(idle, 1) == [(200, b"ok")]
            busy = await connect(address)
            await busy.send_all(WAIT)
            await wait_for(lambda: srv.mux is not None and srv.mux.handed_off == 1, "waiting")
            srv.shutdown()
            assert await read_until_close(idle) == b""
            [(status, headers, body)] = split(await read_until_close(busy))
            assert (status, body, headers[b"connection"]) == (200, b"late", b"close")
            await idle.aclose()
            await busy.aclose()
        # serve() returned by itself: the mux ended once it held nothing
    assert srv.stats.connections_open == 0
    assert srv.stats.idle_closed == 0
    assert len(srv.watchdog) == 0


async def test_the_fixture_runs_the_shared_tests_through_the_mux(start_server: StartServer) -> None:
    srv, _ = await start_server(app)
    assert (srv.mux is not None) == (srv.now is app_now)


async def test_a_peer_pipelining_many_is_served_by_a_task_after_a_fair_share(
    nursery: trio.Nursery,
) -> None:
    srv, address = await start(nursery)
    assert srv.mux is not None
    stream = await connect(address)
    bodies = [b"%02d" % i for i in range(80)]  # (split_responses reads at most 100)
    await stream.send_all(b"".join(REQUEST.replace(b"\r\n\r\nok", b"\r\n\r\n" + b) for b in bodies))
    assert await answers(stream, 80) == [(200, b) for b in bodies]  # in order
    assert srv.mux.handed_off == 1  # the mux answered its share, a task the rest
    await wait_for(lambda: len(srv.mux or ()) == 1, "back in the mux")
    await stream.aclose()


async def test_a_slow_request_while_draining_is_closed_without_a_408() -> None:
    """As on the task path: a draining server's read timeout closes the connection and counts
    nothing (it is the shutdown, not the peer)."""
    srv = HTTPServer(_waiting, limits=ServerLimits(read_timeout=0.3), now=waiting_now)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as serving:
            [address] = await serving.start(srv.serve, "127.0.0.1", 0)
            stream = await connect(address)
            await stream.send_all(REQUEST[:10])
            await wait_for(lambda: srv.stats.requests_fast == 0 and len(srv.mux or ()) == 1, "")
            srv.shutdown()
            assert await read_until_close(stream) == b""
            await stream.aclose()
    assert srv.stats.errors == {}
    assert srv.stats.connections_open == 0


# --- over TLS: the handshake in a task, then the mux ----------------------------------------


async def _tls_server(nursery: trio.Nursery) -> tuple[HTTPServer, tuple[str, int]]:
    srv = HTTPServer(app, now=app_now)
    context = server_context().context
    [address] = await nursery.start(partial(srv.serve, "127.0.0.1", 0, ssl_context=context))
    return srv, address


async def _tls_connect(address: tuple[str, int]) -> trio.SSLStream[trio.SocketStream]:
    stream = trio.SSLStream(
        await connect(address), client_context(verify=False), server_hostname="localhost"
    )
    await stream.do_handshake()
    return stream


async def test_over_tls_the_mux_holds_the_connection_after_the_handshake(
    nursery: trio.Nursery,
) -> None:
    srv, address = await _tls_server(nursery)
    assert srv.mux is not None
    stream = await _tls_connect(address)
    for body in (b"ok", b"ko", b"ok"):
        await stream.send_all(REQUEST.replace(b"\r\n\r\nok", b"\r\n\r\n" + body))
        assert await answers(stream, 1) == [(200, body)]
    await wait_for(lambda: len(srv.mux or ()) == 1, "held by the mux")
    assert srv.mux.handed_off == 0
    await stream.send_all(REQUEST + REQUEST)  # pipelined, in one record
    assert await answers(stream, 2) == [(200, b"ok")] * 2
    await stream.aclose()  # close_notify
    await wait_for(lambda: srv.stats.connections_open == 0, "closed")
    assert srv.stats.requests_fast == 5
    assert srv.stats.tls_errors == 0


async def test_over_tls_a_broken_record_is_a_tls_error(nursery: trio.Nursery) -> None:
    srv, address = await _tls_server(nursery)
    stream = await _tls_connect(address)
    await stream.send_all(REQUEST)
    assert await answers(stream, 1) == [(200, b"ok")]
    await wait_for(lambda: len(srv.mux or ()) == 1, "held by the mux")
    raw = stream.transport_stream
    await raw.send_all(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # application data, bad MAC
    await wait_for(lambda: srv.stats.connections_open == 0, "closed")
    assert srv.stats.tls_errors == 1
    await trio.aclose_forcefully(stream)
