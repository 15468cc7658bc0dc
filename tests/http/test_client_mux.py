"""``Mux``: connections written synchronously and read by one task, against tiny raw servers
(real loopback TCP, so these run in real time, each bounded by ``DEADLINE``). Every test runs
over plain HTTP and over TLS (the tiny server's handler then speaks through ``trio.SSLStream``
and ends with its close_notify); the TLS-only cases are in ``test_client_mux_tls.py``."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, cast

import pytest
import trio
from conftest import DEADLINE, TinyHandler, read_request, read_until_close, wait_for

from loadgen.errors import BadResponse, ReadTimeout, TransportError
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.mux import AVAILABLE, BATCH, Mux, MuxLine
from loadgen.http.parser import Response
from loadgen.http.tls import ServerTLS, client_context, server_context

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the mux needs epoll (Linux)")

TinyServer = Callable[[TinyHandler], Awaitable[Origin]]
OK = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"


class Calls:
    """What the mux told its caller, in order."""

    def __init__(self, mux: Mux) -> None:
        self.answers: list[tuple[Any, bytes]] = []
        self.failures: list[tuple[Any, TransportError]] = []
        self.dropped: list[MuxLine] = []
        mux.on_answer = self.answer
        mux.on_failure = self.failure
        mux.on_dropped = self.dropped.append

    def answer(self, line: MuxLine, token: Any, response: Response) -> None:
        self.answers.append((token, response.body))

    def failure(self, line: MuxLine, token: Any, error: TransportError) -> None:
        self.failures.append((token, error))

    @property
    def outcomes(self) -> int:
        return len(self.answers) + len(self.failures)


@pytest.fixture(scope="module")
def server_tls() -> ServerTLS:
    return server_context()


@pytest.fixture(params=["plain", "tls"])
def client_ssl(request: pytest.FixtureRequest, server_tls: ServerTLS) -> ssl.SSLContext | None:
    """None over plain HTTP; over TLS, the context trusting the tiny servers' certificate."""
    if request.param == "plain":
        return None
    assert server_tls.ca_pem is not None
    return client_context(ca_pem=server_tls.ca_pem)


def over_tls(handler: TinyHandler, context: ssl.SSLContext) -> TinyHandler:
    """``handler`` speaking TLS (trio's own stream), ending with close_notify; a client that
    rejects the handshake or goes away ends it quietly."""

    async def serve(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await tls.do_handshake()
            await handler(cast(trio.SocketStream, tls))
            await tls.aclose()

    return serve


@pytest.fixture
async def tiny_server(
    nursery: trio.Nursery, client_ssl: ssl.SSLContext | None, server_tls: ServerTLS
) -> TinyServer:
    """conftest's ``tiny_server``, over TLS when ``client_ssl`` is set."""

    async def start(handler: TinyHandler) -> Origin:
        if client_ssl is not None:
            handler = over_tls(handler, server_tls.context)
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        return Origin("http" if client_ssl is None else "https", host, port)

    return start


async def running(
    limits: ClientLimits | None = None, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[ConnectionPool, Mux, Calls]]:
    async with (
        open_pool(limits=limits, ssl_context=ssl_context) as pool,
        trio.open_nursery() as nursery,
    ):
        mux = Mux(pool)
        calls = Calls(mux)
        await nursery.start(mux.run)
        try:
            yield pool, mux, calls
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
async def muxed(
    client_ssl: ssl.SSLContext | None,
) -> AsyncIterator[tuple[ConnectionPool, Mux, Calls]]:
    async for running_mux in running(ssl_context=client_ssl):
        yield running_mux


def deadline() -> float:
    return trio.current_time() + DEADLINE


def answering(count: int, then: str = "keep", answer: bytes = OK) -> TinyHandler:
    """Answers ``count`` requests per connection with ``answer``, then keeps the connection
    open, closes it, or reads without answering (``then``: keep, close, silent)."""

    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        for _ in range(count):
            if await read_request(stream, buffer) is None:
                return
            await stream.send_all(answer)
        if then in ("keep", "silent"):
            await read_until_close(stream)

    return handler


async def test_answers_come_back_with_their_token_on_one_connection(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    pool, mux, calls = muxed
    origin = await tiny_server(answering(5))
    line = await mux.open(origin, deadline(), holder="lane")
    assert line.holder == "lane"
    assert len(mux) == 1
    for i in range(5):
        assert line.write(b"/x", b"{}", deadline(), token=i)
        await wait_for(lambda i=i: calls.outcomes == i + 1, "an answer")  # type: ignore[misc]
        assert line.token is None
        assert line.deadline == float("inf")
    assert calls.answers == [(i, b"ok") for i in range(5)]
    assert not calls.failures
    assert not calls.dropped
    assert pool.stats.connections_opened == 1
    assert pool.stats.requests == 5
    assert pool.stats.reused == 4


async def test_the_caller_may_write_again_from_the_answer(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    """The closed loop: the line is idle before ``on_answer`` runs."""
    pool, mux, _calls = muxed
    origin = await tiny_server(answering(10))
    line = await mux.open(origin, deadline(), holder=None)
    tokens: list[int] = []

    def again(line: MuxLine, token: Any, response: Response) -> None:
        tokens.append(token)
        if token < 9:
            assert line.write(b"/x", b"{}", deadline(), token=token + 1)

    mux.on_answer = again
    assert line.write(b"/x", b"{}", deadline(), token=0)
    await wait_for(lambda: len(tokens) == 10, "ten answers")
    assert tokens == list(range(10))
    assert pool.stats.connections_opened == 1


async def test_an_idle_connection_the_server_closes_is_dropped(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    pool, mux, calls = muxed
    origin = await tiny_server(answering(1, then="close"))
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", b"{}", deadline(), token="a")
    await wait_for(lambda: calls.dropped == [line], "the drop")
    assert calls.answers == [("a", b"ok")]
    assert not calls.failures
    assert not line.alive
    assert len(mux) == 0
    assert pool.stats.connections_open == 0


async def test_a_stale_connection_is_retried_once_on_a_new_one(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    """The server closes each connection after one answer; the second request, written on the
    first connection as its answer is read (before the close is), is sent again on a new one."""
    pool, mux, calls = muxed
    origin = await tiny_server(answering(1, then="close"))
    line = await mux.open(origin, deadline(), holder=None)
    record = calls.answer

    def again(line: MuxLine, token: Any, response: Response) -> None:
        record(line, token, response)
        if token == "first":
            assert line.alive  # its close is not read yet
            assert line.write(b"/x", b"{}", deadline(), token="second")

    mux.on_answer = again
    assert line.write(b"/x", b"{}", deadline(), token="first")
    await wait_for(lambda: calls.outcomes == 2, "both answers")
    assert calls.answers == [("first", b"ok"), ("second", b"ok")], calls.failures
    assert not calls.failures
    assert pool.stats.stale_retries == 1
    assert pool.stats.connections_opened == 2


async def test_an_answer_split_over_reads_is_finished_by_the_pool(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    pool, mux, calls = muxed

    async def split(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        await read_request(stream, buffer)
        await stream.send_all(OK[:20])
        await trio.sleep(0.05)
        await stream.send_all(OK[20:])
        await read_until_close(stream)

    origin = await tiny_server(split)
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", b"{}", deadline(), token=1)
    await wait_for(lambda: calls.outcomes == 1, "the answer")
    assert calls.answers == [(1, b"ok")]
    assert mux.handed_off == 1
    assert calls.dropped == [line]
    assert len(pool._origins[origin].idle) == 1  # the pool took the connection back


async def test_a_chunked_answer_falls_back_to_h11(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    pool, mux, calls = muxed
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    origin = await tiny_server(answering(1, answer=chunked))
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", b"{}", deadline(), token=1)
    await wait_for(lambda: calls.outcomes == 1, "the answer")
    assert calls.answers == [(1, b"ok")]
    assert pool.stats.h11_fallbacks == 1


async def test_a_malformed_answer_fails_the_exchange(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    pool, mux, calls = muxed
    origin = await tiny_server(
        answering(1, answer=b"HTTP/1.1 201 Created\r\nContent-Length: x\r\n\r\n")
    )
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", b"{}", deadline(), token=7)
    await wait_for(lambda: calls.outcomes == 1, "the failure")
    [(token, error)] = calls.failures
    assert token == 7
    assert isinstance(error, BadResponse)
    assert calls.dropped == [line]
    assert pool.stats.connections_open == 0


async def test_an_answer_with_connection_close_drops_the_line(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    pool, mux, calls = muxed
    closing = b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    origin = await tiny_server(answering(1, answer=closing))
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", b"{}", deadline(), token=1)
    await wait_for(lambda: calls.outcomes == 1, "the answer")
    assert calls.answers == [(1, b"ok")]
    assert calls.dropped == [line]
    assert not line.alive
    assert pool.stats.connections_open == 0


@pytest.mark.slow
async def test_a_request_is_given_up_at_its_deadline(
    tiny_server: TinyServer, client_ssl: ssl.SSLContext | None
) -> None:
    """Real time (the pool dials real TCP): the request is never answered; the watchdog ends
    it at its deadline (up to one resolution late) and closes the connection."""
    limits = ClientLimits(read_timeout=1.0, write_timeout=1.0, connect_timeout=1.0)
    async for pool, mux, calls in running(limits, client_ssl):
        origin = await tiny_server(answering(0, then="silent"))
        line = await mux.open(origin, deadline(), holder=None)
        start = trio.current_time()
        assert line.write(b"/x", b"{}", start + 0.2, token=1)
        await wait_for(lambda calls=calls: calls.outcomes == 1, "the time-out")  # type: ignore[misc]
        [(_token, error)] = calls.failures
        assert isinstance(error, ReadTimeout)
        assert "deadline" in str(error)
        assert 0.2 <= trio.current_time() - start < 1.0  # the deadline's, not the 1 s read timeout
        assert calls.dropped == [line]
        assert pool.stats.connections_open == 0
        assert pool.stats.errors == {"read_timeout": 1}


async def test_more_ready_sockets_than_a_batch_are_all_read_with_other_tasks_between(
    tiny_server: TinyServer, muxed: tuple[ConnectionPool, Mux, Calls]
) -> None:
    """``2 x BATCH + 1`` answers released at once: the mux reads them in passes of at most
    ``BATCH`` (after a full one, the next follows a checkpoint), every answer comes back, and
    another task runs while some are read and others wait (the pacer between passes)."""
    pool, mux, calls = muxed
    count = 2 * BATCH + 1
    arrived: list[int] = []
    gate = trio.Event()

    async def gated(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        if await read_request(stream, buffer) is None:
            return
        arrived.append(1)
        await gate.wait()
        await stream.send_all(OK)
        await read_until_close(stream)

    origin = await tiny_server(gated)
    lines = [await mux.open(origin, deadline(), holder=None) for _ in range(count)]
    for token, line in enumerate(lines):
        assert line.write(b"/x", b"{}", deadline(), token=token)
    await wait_for(lambda: len(arrived) == count, "every request at the server")
    seen: list[int] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            while True:
                seen.append(calls.outcomes)
                await trio.lowlevel.checkpoint()

        nursery.start_soon(watch)
        gate.set()
        await wait_for(lambda: calls.outcomes == count, "every answer")
        nursery.cancel_scope.cancel()
    assert sorted(token for token, _ in calls.answers) == list(range(count))
    assert not calls.failures
    assert any(0 < outcomes < count for outcomes in seen)  # the watcher ran between passes
    assert pool.stats.connections_opened == count


async def test_closing_the_mux_closes_its_lines(
    tiny_server: TinyServer, client_ssl: ssl.SSLContext | None
) -> None:
    origin = await tiny_server(answering(1))
    async with open_pool(ssl_context=client_ssl) as pool:
        async with trio.open_nursery() as nursery:
            mux = Mux(pool)
            Calls(mux)
            await nursery.start(mux.run)
            await mux.open(origin, deadline(), holder=None)
            await mux.open(origin, deadline(), holder=None)
            assert pool.stats.connections_open == 2
            nursery.cancel_scope.cancel()
        assert pool.stats.connections_open == 0
        assert len(pool.watchdog) == 0
