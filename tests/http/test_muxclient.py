"""``MuxClient``: requests written at once on an idle line or queued for the next free one, each
answer or failure called back with its token, at most ``max_connections`` lines per origin
(real loopback TCP against tiny servers, each test bounded by ``DEADLINE``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
from conftest import (
    DEADLINE,
    TinyHandler,
    closed_port,
    read_request,
    read_until_close,
    wait_for,
)

from loadgen.errors import TransportError, WriteTimeout
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.mux import AVAILABLE, MuxLine
from loadgen.http.muxclient import MuxClient
from loadgen.http.parser import Response

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the mux needs epoll (Linux)")

TinyServer = Callable[[TinyHandler], Awaitable[Origin]]


class Seen:
    """What the client told its caller, in order."""

    def __init__(self) -> None:
        self.answers: list[tuple[Any, int, bytes]] = []
        self.failures: list[tuple[Any, TransportError]] = []
        self.written: list[Any] = []

    def answer(self, token: Any, response: Response, now: float) -> None:
        self.answers.append((token, response.status, response.body))

    def failure(self, token: Any, error: TransportError) -> None:
        self.failures.append((token, error))

    def write(self, token: Any, now: float) -> None:
        self.written.append(token)


@asynccontextmanager
async def client(
    max_connections: int, seen: Seen, wanted: Callable[[Any], bool] | None = None
) -> AsyncIterator[MuxClient]:
    limits = ClientLimits(max_connections=max_connections)
    async with open_pool(limits=limits) as pool, trio.open_nursery() as nursery:
        extra = {} if wanted is None else {"wanted": wanted}
        muxed = MuxClient(pool, seen.answer, seen.failure, on_written=seen.write, **extra)
        await nursery.start(muxed.run)
        try:
            yield muxed
        finally:
            nursery.cancel_scope.cancel()


def echoing(gate: trio.Event | None = None, connections: list[int] | None = None) -> TinyHandler:
    """Answers each request with its own body (after ``gate`` is set, if given); counts the
    connections it accepted in ``connections``."""

    async def handler(stream: trio.SocketStream) -> None:
        if connections is not None:
            connections.append(1)
        buffer = bytearray()
        while True:
            request = await read_request(stream, buffer)
            if request is None:
                return
            if gate is not None:
                await gate.wait()
            body = request
            await stream.send_all(
                b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    return handler


async def test_each_answer_comes_back_with_its_token(tiny_server: TinyServer) -> None:
    origin = await tiny_server(echoing())
    seen = Seen()
    async with client(4, seen) as muxed:
        for i in range(20):
            muxed.send(origin, b"/x", b"job-%d" % i, trio.current_time() + DEADLINE, i)
        await wait_for(lambda: len(seen.answers) == 20, "every answer")
    assert sorted(seen.answers) == [(i, 201, b"job-%d" % i) for i in range(20)]
    assert sorted(seen.written) == list(range(20))
    assert seen.failures == []


async def test_busy_lines_queue_and_the_origin_never_gets_more_than_max_connections(
    tiny_server: TinyServer,
) -> None:
    gate = trio.Event()
    accepted: list[int] = []
    origin = await tiny_server(echoing(gate, accepted))
    seen = Seen()
    async with client(2, seen) as muxed:
        for i in range(6):
            muxed.send(origin, b"/x", b"%d" % i, trio.current_time() + DEADLINE, i)
        await wait_for(lambda: len(seen.written) == 2, "two written, four queued")
        assert muxed.queued == 4
        gate.set()
        await wait_for(lambda: len(seen.answers) == 6, "the queue served by the freed lines")
    assert len(accepted) == 2  # two connections carried all six
    assert seen.written == [0, 1, 2, 3, 4, 5]  # queued requests go out in order


async def test_a_queued_request_past_its_deadline_fails_unwritten(
    tiny_server: TinyServer,
) -> None:
    gate = trio.Event()
    origin = await tiny_server(echoing(gate))
    seen = Seen()
    async with client(1, seen) as muxed:
        muxed.send(origin, b"/x", b"first", trio.current_time() + DEADLINE, "first")
        muxed.send(origin, b"/x", b"late", trio.current_time() + 0.05, "late")
        await trio.sleep(0.1)  # the second one's deadline passes while the line is busy
        gate.set()
        await wait_for(lambda: len(seen.answers) + len(seen.failures) == 2, "both ended")
    assert [token for token, *_ in seen.answers] == ["first"]
    [(token, error)] = seen.failures
    assert token == "late"
    assert isinstance(error, WriteTimeout)
    assert seen.written == ["first"]  # never written


async def test_a_request_no_longer_wanted_is_dropped_from_the_queue_silently(
    tiny_server: TinyServer,
) -> None:
    gate = trio.Event()
    origin = await tiny_server(echoing(gate))
    seen = Seen()
    unwanted = {"b"}
    async with client(1, seen, wanted=lambda token: token not in unwanted) as muxed:
        for token in ("a", "b", "c"):
            muxed.send(origin, b"/x", token.encode(), trio.current_time() + DEADLINE, token)
        gate.set()
        await wait_for(lambda: len(seen.answers) == 2, "a and c answered")
    assert [token for token, *_ in seen.answers] == ["a", "c"]
    assert seen.failures == []
    assert seen.written == ["a", "c"]


async def test_a_server_that_closes_without_answering_is_a_failure_for_that_token(
    tiny_server: TinyServer,
) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await read_request(stream, bytearray())
        await stream.aclose()

    origin = await tiny_server(hang_up)
    seen = Seen()
    async with client(1, seen) as muxed:
        muxed.send(origin, b"/x", b"body", trio.current_time() + DEADLINE, "job")
        await wait_for(lambda: bool(seen.failures), "the failure")
    [(token, error)] = seen.failures
    assert token == "job"
    assert error.kind == "closed"
    assert seen.answers == []


async def test_an_unreachable_origin_fails_the_queued_request(tiny_server: TinyServer) -> None:
    origin = Origin("http", "127.0.0.1", closed_port())
    seen = Seen()
    async with client(1, seen) as muxed:
        muxed.send(origin, b"/x", b"body", trio.current_time() + DEADLINE, "job")
        await wait_for(lambda: bool(seen.failures), "the failure")
    [(token, error)] = seen.failures
    assert token == "job"
    assert error.kind == "connect"


async def test_an_idle_connection_the_server_closed_is_replaced(tiny_server: TinyServer) -> None:
    async def once(stream: trio.SocketStream) -> None:  # answers one request, then closes
        buffer = bytearray()
        if await read_request(stream, buffer) is not None:
            await stream.send_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()

    origin = await tiny_server(once)
    seen = Seen()
    async with client(1, seen) as muxed:
        for i in range(3):
            muxed.send(origin, b"/x", b"b", trio.current_time() + DEADLINE, i)
            await wait_for(lambda i=i: len(seen.answers) == i + 1, "the answer")
            await trio.sleep(0.05)  # the server's close reaches the idle line
    assert [token for token, *_ in seen.answers] == [0, 1, 2]
    assert seen.failures == []


async def test_no_answer_by_the_deadline_is_a_read_timeout(tiny_server: TinyServer) -> None:
    """A request written, the server reads and keeps the connection silent: the request's own
    deadline ends it as a read timeout (no answer is ever invented)."""

    async def silent(stream: trio.SocketStream) -> None:
        await read_request(stream, bytearray())
        await read_until_close(stream)

    origin = await tiny_server(silent)
    seen = Seen()
    async with client(1, seen) as muxed:
        muxed.send(origin, b"/x", b"b", trio.current_time() + 0.1, "job")
        await wait_for(lambda: bool(seen.failures), "the timeout")
    [(token, error)] = seen.failures
    assert token == "job"
    assert error.kind == "read_timeout"


async def test_a_failed_connect_fails_only_a_request_still_waiting(
    tiny_server: TinyServer,
) -> None:
    """While a line is being opened for the head of the queue, a freed line may take that
    request; if the connect then fails, the request already written is not failed too."""
    from loadgen.errors import ConnectError

    origin = await tiny_server(echoing())
    seen = Seen()
    async with client(2, seen) as muxed:

        async def open_failing(origin: Origin, deadline: float, holder: Any) -> Any:
            await trio.lowlevel.checkpoint()
            holder.queue.popleft()  # a freed line took it meanwhile (and will answer for it)
            raise ConnectError("refused")

        muxed.mux.open = open_failing  # type: ignore[method-assign]
        muxed.send(origin, b"/x", b"b", trio.current_time() + DEADLINE, "job")
        await wait_for(lambda: muxed._origins[origin].lines == 0, "the opener gave up")
    assert seen.failures == []


async def test_a_line_that_fails_to_write_a_queued_request_leaves_it_to_a_new_line(
    tiny_server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freed line whose write fails is dropped; the queued request it could not take must still
    be at the head of the queue then, so that the drop opens another line for it (taken off the
    queue first, it was put back after the drop and waited for an event that never came)."""
    accepted: list[int] = []
    origin = await tiny_server(echoing(connections=accepted))
    writes: list[int] = []
    real_write = MuxLine.write

    def failing_second(
        line: MuxLine, target: bytes, body: bytes, deadline: float, token: object
    ) -> bool:
        writes.append(1)
        if len(writes) == 2:  # the freed line's write of the queued request
            line.mux._drop(line)
            return False
        return real_write(line, target, body, deadline, token)

    monkeypatch.setattr(MuxLine, "write", failing_second)
    seen = Seen()
    async with client(1, seen) as muxed:
        for i in range(2):
            muxed.send(origin, b"/x", b"%d" % i, trio.current_time() + DEADLINE, i)
        await wait_for(lambda: len(seen.answers) == 2, "the queued request answered")
    assert sorted(seen.answers) == [(0, 201, b"0"), (1, 201, b"1")]
    assert seen.failures == []
    assert len(accepted) == 2  # the second on a line opened for it
