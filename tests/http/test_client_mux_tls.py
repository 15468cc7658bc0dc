"""``Mux`` over TLS only: what plain HTTP has no counterpart for (a failed handshake, a bad
record, close_notify without the TCP close, a record split over reads, records carrying no data
while a line is idle, a request's ciphertext finished by a task). Real loopback TCP, real time,
each bounded by ``DEADLINE``; the servers are trio's ``SSLStream`` or an ``SSLObject`` by hand."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from conftest import DEADLINE, read_request, read_until_close, wait_for
from test_client_mux import OK, Calls, running

from loadgen.errors import ConnectionClosed, TLSError
from loadgen.http.client import ConnectionPool, Origin, open_pool
from loadgen.http.mux import AVAILABLE, Mux
from loadgen.http.tls import ServerTLS, client_context, server_context

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the mux needs epoll (Linux)")

TLSHandler = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]


@pytest.fixture(scope="module")
def tls() -> ServerTLS:
    return server_context()


@pytest.fixture
async def muxed(tls: ServerTLS) -> AsyncIterator[tuple[ConnectionPool, Mux, Calls]]:
    assert tls.ca_pem is not None
    async for running_mux in running(ssl_context=client_context(ca_pem=tls.ca_pem)):
        yield running_mux


@pytest.fixture
def serve(nursery: trio.Nursery) -> Callable[[Any], Awaitable[Origin]]:
    """Start a loopback server running ``handler(stream)`` on each plain TCP connection."""

    async def start(handler: Any) -> Origin:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        return Origin("https", host, port)

    return start


def tls_server(tls: ServerTLS, handler: TLSHandler) -> Callable[[trio.SocketStream], Any]:
    async def run(stream: trio.SocketStream) -> None:
        wrapped = trio.SSLStream(stream, tls.context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await wrapped.do_handshake()
            await handler(wrapped)

    return run


def deadline() -> float:
    return trio.current_time() + DEADLINE


async def test_the_mux_serves_https_but_not_a_pool_forcing_h11() -> None:
    origin = Origin("https", "127.0.0.1", 1)
    async with open_pool() as pool:
        assert Mux(pool).serves(origin)
    async with open_pool(force_h11=True) as pool:
        assert not Mux(pool).serves(origin)


async def test_a_certificate_from_another_ca_is_a_tls_error(
    serve: Callable[[Any], Awaitable[Origin]], tls: ServerTLS
) -> None:
    async def answer(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.send_all(OK)

    origin = await serve(tls_server(tls, answer))
    other = client_context(ca_pem=trustme.CA().cert_pem.bytes())
    async for pool, mux, _calls in running(ssl_context=other):
        with pytest.raises(TLSError):
            await mux.open(origin, deadline(), holder=None)
        assert pool.stats.errors == {"tls": 1}
        assert pool.stats.connections_open == 0
        assert len(mux) == 0


async def test_a_bad_record_fails_the_exchange_as_a_tls_error(
    serve: Callable[[Any], Awaitable[Origin]],
    tls: ServerTLS,
    muxed: tuple[ConnectionPool, Mux, Calls],
) -> None:
    pool, mux, calls = muxed

    async def garbage(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await read_request(stream, bytearray())
        # an application-data record whose authentication cannot succeed
        await stream.transport_stream.send_all(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        await read_until_close(stream.transport_stream)

    origin = await serve(tls_server(tls, garbage))
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", b"{}", deadline(), token=1)
    await wait_for(lambda: calls.outcomes == 1, "the failure")
    [(token, error)] = calls.failures
    assert token == 1
    assert isinstance(error, TLSError)
    assert pool.stats.errors == {"tls": 1}
    assert calls.dropped == [line]
    assert pool.stats.connections_open == 0


@pytest.mark.parametrize("when", ["idle", "asked"])
async def test_close_notify_without_the_tcp_close_ends_the_line(
    serve: Callable[[Any], Awaitable[Origin]],
    tls: ServerTLS,
    muxed: tuple[ConnectionPool, Mux, Calls],
    when: str,
) -> None:
    """The server's close_notify alone (its TCP connection stays open): an idle line is
    dropped; an exchange on a new connection fails as closed without an answer."""
    pool, mux, calls = muxed
    asked = trio.Event()

    async def notify(stream: trio.SSLStream[trio.SocketStream]) -> None:
        if when == "asked":
            await read_request(stream, bytearray())
            asked.set()
        raw = await stream.unwrap()  # close_notify; then waits for the client's
        await read_until_close(raw[0])

    origin = await serve(tls_server(tls, notify))
    line = await mux.open(origin, deadline(), holder=None)
    if when == "asked":
        assert line.write(b"/x", b"{}", deadline(), token=1)
    await wait_for(lambda: calls.dropped == [line], "the drop")
    assert calls.answers == []
    if when == "asked":
        assert asked.is_set()
        [(token, error)] = calls.failures
        assert token == 1
        assert isinstance(error, ConnectionClosed)
        assert pool.stats.errors == {"closed": 1}
    else:
        assert not calls.failures
        assert not pool.stats.errors
    assert pool.stats.connections_open == 0


class Dribble(trio.abc.Stream):
    """A transport sending each write in two halves 50 ms apart: every TLS record the server
    writes reaches the client over two reads."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        half = len(data) // 2
        await self.inner.send_all(data[:half])
        await trio.sleep(0.05)
        await self.inner.send_all(data[half:])

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_record_split_over_reads_is_waited_for_in_the_mux(
    serve: Callable[[Any], Awaitable[Origin]],
    tls: ServerTLS,
    muxed: tuple[ConnectionPool, Mux, Calls],
) -> None:
    pool, mux, calls = muxed

    async def dribbling(stream: trio.SocketStream) -> None:
        wrapped = trio.SSLStream(Dribble(stream), tls.context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            buffer = bytearray()
            for _ in range(3):
                await read_request(wrapped, buffer)
                await wrapped.send_all(OK)
            await read_until_close(wrapped)

    origin = await serve(dribbling)
    line = await mux.open(origin, deadline(), holder=None)
    for i in range(3):
        assert line.write(b"/x", b"{}", deadline(), token=i)
        await wait_for(lambda i=i: calls.outcomes == i + 1, "an answer")  # type: ignore[misc]
    assert calls.answers == [(i, b"ok") for i in range(3)]
    assert mux.handed_off == 0  # each answer read by the mux, its record in two reads
    assert line.alive
    assert pool.stats.connections_opened == 1


async def test_records_without_data_on_an_idle_line_keep_it(
    serve: Callable[[Any], Awaitable[Origin]],
    tls: ServerTLS,
    muxed: tuple[ConnectionPool, Mux, Calls],
) -> None:
    """A server that sends its TLS 1.3 session tickets as soon as its handshake ends (OpenSSL's
    own way; trio and loadgen hold them back): they reach an idle line, which stays."""
    pool, mux, calls = muxed
    tickets: list[int] = []

    async def by_hand(stream: trio.SocketStream) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = tls.context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    await stream.send_all(outgoing.read())
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                incoming.write(chunk)
        after = outgoing.read()
        tickets.append(len(after))
        await stream.send_all(after)
        text = bytearray()
        while b"\r\n\r\n{}" not in text:
            try:
                text += obj.read(65536)
            except ssl.SSLWantReadError:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                incoming.write(chunk)
        obj.write(OK)
        await stream.send_all(outgoing.read())
        await read_until_close(stream)

    origin = await serve(by_hand)
    line = await mux.open(origin, deadline(), holder=None)
    await wait_for(lambda: bool(tickets), "the tickets sent")
    assert tickets[0] > 0
    await trio.sleep(0.1)  # the mux reads them meanwhile
    assert line.alive
    assert not calls.dropped
    assert line.write(b"/x", b"{}", deadline(), token="a")
    await wait_for(lambda: calls.outcomes == 1, "the answer")
    assert calls.answers == [("a", b"ok")]
    assert pool.stats.connections_opened == 1


async def test_a_request_the_socket_takes_in_part_is_finished_in_ciphertext(
    serve: Callable[[Any], Awaitable[Origin]],
    tls: ServerTLS,
    muxed: tuple[ConnectionPool, Mux, Calls],
) -> None:
    """A body larger than the socket's send buffer: the rest of its records go out from a task
    (encrypted once); the server reads the whole body and answers with its length."""
    pool, mux, calls = muxed
    body = b'"' + b"x" * (8 << 20) + b'"'
    got: list[int] = []

    async def measure(stream: trio.SSLStream[trio.SocketStream]) -> None:
        received = await read_request(stream, bytearray())
        assert received is not None
        got.append(len(received))
        await stream.send_all(OK)
        await read_until_close(stream)

    origin = await serve(tls_server(tls, measure))
    line = await mux.open(origin, deadline(), holder=None)
    assert line.write(b"/x", body, deadline(), token="big")
    assert line.unsent is not None  # the socket took only part of it
    await wait_for(lambda: calls.outcomes == 1, "the answer")
    assert calls.answers == [("big", b"ok")]
    assert got == [len(body)]
    assert line.alive
    assert not pool.stats.errors
