"""``Held``: a connection kept by its caller, written on synchronously while the caller waits on
it (the sender's issuing path below saturation), against tiny raw servers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from conftest import TinyHandler, read_request, read_until_close

from loadgen.errors import ConnectionClosed, ReadTimeout
from loadgen.http.client import ConnectionPool, Origin, open_pool

TinyServer = Callable[[TinyHandler], Awaitable[Origin]]
OK = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"


def answering(count: int, then: str = "keep") -> TinyHandler:
    """Answers ``count`` requests on each connection, then keeps it open, closes it, or reads
    the next request without answering (``then``: keep, close, silent)."""

    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        for _ in range(count):
            if await read_request(stream, buffer) is None:
                return
            await stream.send_all(OK)
        if then == "keep" or then == "silent":
            await read_until_close(stream)

    return handler


async def test_written_now_answered_to_the_waiting_holder(tiny_server: TinyServer) -> None:
    origin = await tiny_server(answering(4))
    async with open_pool() as pool:
        held = pool.hold(origin)
        assert not held.ready  # nothing held yet: the first exchange opens a connection
        assert (await held.request(b"/x", b"{}", deadline=trio.current_time() + 10)).body == b"ok"
        for _ in range(3):
            assert held.ready
            answers: list[bytes] = []

            async def wait(answers: list[bytes] = answers) -> None:
                answers.append((await held.answer()).body)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                assert held.write_now(b"/x", b"{}", deadline=trio.current_time() + 10)
                assert held.unsent is None
            assert answers == [b"ok"]
        assert pool.stats.connections_opened == 1
        assert pool.stats.requests == pool.stats.reused + 1 == 4
        held.close()
        assert len(pool._origins[origin].idle) == 1  # given back to the pool, still open


async def test_an_idle_held_connection_the_server_closes_is_dropped(
    tiny_server: TinyServer,
) -> None:
    origin = await tiny_server(answering(1, then="close"))
    async with open_pool() as pool:
        held = pool.hold(origin)
        await held.request(b"/x", b"{}", deadline=trio.current_time() + 10)
        assert held.ready
        with pytest.raises(ConnectionClosed):
            await held.answer()  # nothing written: the server's close wakes the holder
        assert held.conn is None
        assert not held.ready
        assert pool.stats.connections_open == 0
        assert pool.stats.errors == {"closed": 1}


@pytest.mark.slow
async def test_a_request_written_now_is_given_up_at_its_deadline(
    tiny_server: TinyServer,
) -> None:
    """Real time (the pool dials real TCP): the second request is never answered."""
    origin = await tiny_server(answering(1, then="silent"))
    async with open_pool() as pool:
        held = pool.hold(origin)
        await held.request(b"/x", b"{}", deadline=trio.current_time() + 10)
        assert held.write_now(b"/x", b"{}", deadline=trio.current_time() + 0.2)
        start = trio.current_time()
        with pytest.raises(ReadTimeout, match="deadline"):
            await held.answer()
        assert 0.2 <= trio.current_time() - start < 5
        assert held.conn is None
        assert pool.stats.connections_open == 0


async def test_closing_the_pool_wakes_a_holder(tiny_server: TinyServer) -> None:
    origin = await tiny_server(answering(1))
    pool = ConnectionPool()
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        held = pool.hold(origin)
        await held.request(b"/x", b"{}", deadline=trio.current_time() + 10)
        with trio.fail_after(5):
            async with trio.open_nursery() as inner:

                async def wait() -> None:
                    with pytest.raises(ConnectionClosed):
                        await held.answer()

                inner.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                await pool.aclose()
        assert pool.stats.connections_open == 0
        nursery.cancel_scope.cancel()
