"""A request's own ``deadline`` bounds every phase of its exchange, and a connection given up at
its deadline is closed, never reused.

The pool dials through ``open_raw_stream``; here that is replaced by one end of a
``socket.socketpair()`` per connection (the other end is the test's peer). No connect, no network
wait: the only thing that blocks is the read of an answer that never comes, so the mock clock can
run (``autojump_clock``) and the times are exact: the watchdog closes the socket at its first
wake-up at or after the deadline.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Callable
from typing import Final

import pytest
import trio
import trio.testing

from loadgen.errors import ConnectTimeout, ReadTimeout
from loadgen.http import client as client_module
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.stream import RawStream

ORIGIN: Final = Origin("http", "device.test", 80)
OK: Final = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
LIMITS: Final = ClientLimits(connect_timeout=10.0, read_timeout=30.0, write_timeout=30.0)


class Peers:
    """The device side of every connection the pool opens, in order. ``answers[i]`` is written
    to connection ``i`` before the pool uses it (None: that connection never answers)."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.sockets: list[socket.socket] = []

    async def open(self, host: str, port: int) -> RawStream:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        answer = self.answers[len(self.sockets)]
        if answer is not None:
            theirs.sendall(answer)  # waits in the kernel until the pool reads it
        self.sockets.append(theirs)
        await trio.lowlevel.checkpoint()
        return RawStream(ours)

    def received(self, index: int) -> tuple[bytes, bool]:
        """What connection ``index`` carried, and whether the pool has closed it."""
        data = bytearray()
        while True:
            try:
                chunk = self.sockets[index].recv(65536)
            except BlockingIOError:
                return bytes(data), False
            if not chunk:
                return bytes(data), True
            data += chunk

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
async def peers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Peers]]:
    made: list[Peers] = []

    def make(*answers: bytes | None) -> Peers:
        made.append(Peers(list(answers)))
        monkeypatch.setattr(client_module, "open_raw_stream", made[-1].open)
        return made[-1]

    yield make
    for each in made:
        each.close()


async def test_the_deadline_closes_the_connection_and_it_is_not_reused(
    autojump_clock: trio.testing.MockClock, peers: Callable[..., Peers]
) -> None:
    peer = peers(None, OK)
    async with open_pool(limits=LIMITS) as pool:
        start = trio.current_time()
        with pytest.raises(ReadTimeout, match="by the request's deadline"):
            await pool.request(ORIGIN, b"/op/1", b"{}", deadline=start + 2.0)
        waited = trio.current_time() - start
        # Closed by the watchdog at its first look after the deadline: not at the 30 s read
        # timeout (nor at an ack timeout the pool knows nothing about).
        assert 2.0 <= waited <= 2.0 + pool.watchdog.resolution
        request, closed = peer.received(0)
        assert request.startswith(b"POST /op/1 HTTP/1.1\r\n")
        assert closed
        assert pool.stats.connections_open == 0
        assert pool.stats.errors == {"read_timeout": 1}
        # The next request gets a new connection, not the one whose answer may still come.
        response = await pool.request(ORIGIN, b"/op/2", b"{}", deadline=trio.current_time() + 2.0)
        assert (response.status, response.body) == (201, b"ok")
        assert pool.stats.connections_opened == 2
        assert pool.stats.reused == 0
        request, closed = peer.received(1)
        assert request.startswith(b"POST /op/2 HTTP/1.1\r\n")
        assert not closed  # kept alive: answered in time
        assert pool.stats.connections_open == 1


async def test_without_a_deadline_the_read_timeout_still_applies(
    autojump_clock: trio.testing.MockClock, peers: Callable[..., Peers]
) -> None:
    peers(None)
    async with open_pool(limits=ClientLimits(read_timeout=3.0)) as pool:
        start = trio.current_time()
        with pytest.raises(ReadTimeout, match=r"within 3\.0 s"):
            await pool.request(ORIGIN, b"/op/1", b"{}")
        assert 3.0 <= trio.current_time() - start <= 3.0 + 2 * pool.watchdog.resolution


async def test_the_deadline_bounds_the_connect_exactly(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_connects(host: str, port: int) -> RawStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(client_module, "open_raw_stream", never_connects)
    async with open_pool(limits=LIMITS) as pool:
        start = trio.current_time()
        with pytest.raises(ConnectTimeout, match="by the request's deadline"):
            await pool.request(ORIGIN, b"/op/1", b"{}", deadline=start + 1.5)
        assert trio.current_time() - start == 1.5
        assert pool.stats.connections_open == 0
        with pytest.raises(ConnectTimeout, match=r"within 10\.0 s"):
            await pool.request(ORIGIN, b"/op/2", b"{}", deadline=math.inf)


async def test_the_deadline_bounds_the_wait_for_a_connection_slot(
    autojump_clock: trio.testing.MockClock, peers: Callable[..., Peers]
) -> None:
    peers(None)
    limits = ClientLimits(max_connections=1, read_timeout=30.0)
    async with open_pool(limits=limits) as pool, trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(_hold, pool, start + 20.0)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ConnectTimeout, match="no free connection"):
            await pool.request(ORIGIN, b"/op/2", b"{}", deadline=start + 1.0)
        assert trio.current_time() - start == 1.0
        nursery.cancel_scope.cancel()


async def _hold(pool: ConnectionPool, deadline: float) -> None:
    with pytest.raises(ReadTimeout):
        await pool.request(ORIGIN, b"/op/1", b"{}", deadline=deadline)
