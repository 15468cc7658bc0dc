"""``MuxClient`` for a caller that keeps its lanes (the platform's sender): ``put`` on a kept
``MuxLane``, ``fail_expired=False``, and the ``now`` given with an answer, the moment it was
read, taken before its freed line writes the next request (real loopback TCP against tiny
servers, each test bounded by ``DEADLINE``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from conftest import DEADLINE, TinyHandler, read_request, wait_for

from loadgen.errors import TransportError
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.mux import AVAILABLE, MuxLine
from loadgen.http.muxclient import MuxClient
from loadgen.http.parser import Response

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the mux needs epoll (Linux)")

TinyServer = Callable[[TinyHandler], Awaitable[Origin]]


class Seen:
    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.read_at: list[float] = []
        self.failures: list[tuple[Any, TransportError]] = []
        self.written: list[tuple[Any, float]] = []
        self.client: MuxClient | None = None

    def answer(self, token: Any, response: Response, now: float) -> None:
        self.answers.append(token)
        self.read_at.append(now)

    def failure(self, token: Any, error: TransportError) -> None:
        self.failures.append((token, error))

    def write(self, token: Any, now: float) -> None:
        self.written.append((token, now))


@asynccontextmanager
async def client(max_connections: int, seen: Seen, **options: Any) -> AsyncIterator[MuxClient]:
    limits = ClientLimits(max_connections=max_connections)
    async with open_pool(limits=limits) as pool, trio.open_nursery() as nursery:
        muxed = seen.client = MuxClient(
            pool, seen.answer, seen.failure, on_written=seen.write, **options
        )
        await nursery.start(muxed.run)
        try:
            yield muxed
        finally:
            nursery.cancel_scope.cancel()


def gated(gate: trio.Event) -> TinyHandler:
    """Answers each request with its own body once ``gate`` is set."""

    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while (request := await read_request(stream, buffer)) is not None:
            await gate.wait()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(request), request)
            )

    return handler


async def test_put_on_a_kept_lane_says_written_at_once_or_queued(tiny_server: TinyServer) -> None:
    """``put`` returns True for a request written at once, which the caller notes itself
    (``on_written`` is not told), and False for a queued one, whose write ``on_written`` tells
    when a freed line takes it."""
    gate = trio.Event()
    origin = await tiny_server(gated(gate))
    seen = Seen()
    async with client(1, seen) as muxed:
        lane = muxed.lane(origin)
        assert lane.muxed
        assert muxed.lane(origin) is lane
        assert muxed.lane(Origin("https", "127.0.0.1", 1)).muxed  # TLS too
        deadline = trio.current_time() + DEADLINE
        assert muxed.put(lane, b"/x", b"a", deadline, "a") is False  # no line yet: queued
        await wait_for(lambda: len(seen.written) == 1, "a written on the new line")
        gate.set()
        await wait_for(lambda: seen.answers == ["a"], "a answered")
        assert muxed.put(lane, b"/x", b"b", deadline, "b") is True  # the idle line
        await wait_for(lambda: seen.answers == ["a", "b"], "b answered")
    assert [token for token, _ in seen.written] == ["a"]  # b was noted by its caller
    assert seen.failures == []


async def test_without_fail_expired_a_queued_request_past_its_deadline_is_dropped_silently(
    tiny_server: TinyServer,
) -> None:
    gate = trio.Event()
    origin = await tiny_server(gated(gate))
    seen = Seen()
    async with client(1, seen, fail_expired=False) as muxed:
        muxed.send(origin, b"/x", b"first", trio.current_time() + DEADLINE, "first")
        muxed.send(origin, b"/x", b"late", trio.current_time() + 0.05, "late")
        await trio.sleep(0.1)  # the second one's deadline passes while the line is busy
        gate.set()
        await wait_for(lambda: seen.answers == ["first"], "the first answered")
        lane = muxed.lane(origin)
        await wait_for(lambda: len(lane.idle) == 1, "the freed line kept idle")
        assert not lane.queue
    assert seen.failures == []
    assert [token for token, _ in seen.written] == ["first"]


async def test_an_answer_is_timed_before_its_freed_line_writes_the_next_request(
    tiny_server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write advances the client's clock by a second (a slow ``send``, exaggerated): the
    first answer's ``now`` is the moment it was read, not after the queued request went out
    on its line; that request is noted written at the same moment (read once)."""
    clock = [0.0]
    write = MuxLine.write

    def slow_write(self: MuxLine, *args: Any) -> bool:
        written = write(self, *args)
        clock[0] += 1.0
        return written

    monkeypatch.setattr(MuxLine, "write", slow_write)
    gate = trio.Event()
    origin = await tiny_server(gated(gate))
    seen = Seen()
    async with client(1, seen) as muxed:
        muxed._now = lambda: clock[0]  # the client's clock only (the pool keeps trio's)
        deadline = trio.current_time() + DEADLINE
        muxed.send(origin, b"/x", b"a", deadline, "a")
        muxed.send(origin, b"/x", b"b", deadline, "b")
        await wait_for(lambda: len(seen.written) == 1, "a written")
        gate.set()
        await wait_for(lambda: seen.answers == ["a", "b"], "both answered")
    assert seen.written == [("a", 0.0), ("b", 1.0)]  # a at 0, then its write took a second
    assert seen.read_at == [1.0, 2.0]  # a read at 1, before b's write moved the clock to 2
