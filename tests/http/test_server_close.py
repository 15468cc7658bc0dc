"""How the server closes a connection it ends: no answer it wrote may be lost on the way out.

Closing a TCP socket whose receive buffer still holds unread bytes makes the kernel send RST
instead of FIN and throw away whatever of the answers is still unsent in the send buffer. A
peer that pipelines a good request and then garbage is answered 201 then 400; if the server then
closed at once, the tail of the 201 would die with the reset. The server half-closes, drains the
input for a bounded time, then closes (``loadgen.http.stream.close_gracefully``).

These use real loopback sockets (the reset is the kernel's) and real time, bounded by DEADLINE.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Final

import pytest
import trio
import trio.testing
from conftest import (
    DEADLINE,
    RawResponse,
    StartServer,
    app,
    read_until_close,
    split_responses,
    wait_for,
)

from loadgen.http.client import Origin
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply, ServerLimits
from loadgen.http.tls import client_context, server_context

BIG: Final = b'{"blob":"' + b"x" * 900_000 + b'"}'
GOOD: Final = b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
GOOD_CLOSE: Final = GOOD.replace(b"Host: t", b"Host: t\r\nConnection: close")
GARBAGE: Final = b"NOT HTTP AT ALL\r\n\r\n"
TAIL: Final = b"z" * 500_000  # more input the server will never parse
TRIES: Final = 6
CLIENT_RCVBUF: Final = 16384  # a slow reader: most of the answer waits in the server's buffer


async def big(request: Request) -> Reply:
    if request.target == b"/big":
        return Reply(201, BIG)
    return await app(request)


async def _pipeline(
    origin: Origin, wire: bytes, tls: ssl.SSLContext | None = None
) -> tuple[bytes, str]:
    """Send ``wire`` while reading everything back; returns the bytes and how the stream ended
    ("eof" or "reset")."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    await sock.connect((origin.host, origin.port))
    stream: trio.abc.Stream = trio.SocketStream(sock)
    if tls is not None:
        stream = trio.SSLStream(stream, tls, server_hostname="localhost", https_compatible=True)
    received = bytearray()
    ended = "eof"

    async def send() -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # the reader reports a reset
            await stream.send_all(wire)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    ended = "reset"
                    break
                if not chunk:
                    break
                received += chunk
            nursery.cancel_scope.cancel()
        await trio.aclose_forcefully(stream)
    return bytes(received), ended


@pytest.mark.parametrize(
    ("wire", "statuses"),
    [
        pytest.param(GOOD + GARBAGE + TAIL, [201, 400], id="then-garbage"),
        pytest.param(GOOD_CLOSE + TAIL, [201], id="connection-close-then-more"),
    ],
)
@pytest.mark.parametrize("mode", ["fast", "h11", "tls"])
async def test_answers_before_the_close_arrive_whole(
    start_server: StartServer, wire: bytes, statuses: list[int], mode: str
) -> None:
    """Fails before the fix (lingering close): the 201 is cut after ~24 KB by a reset."""
    tls = server_context() if mode == "tls" else None
    srv, origin = await start_server(
        big, force_h11=mode == "h11", ssl_context=None if tls is None else tls.context
    )
    client_tls = None if tls is None else client_context(verify=False)
    outcomes = []
    for _ in range(TRIES):
        data, ended = await _pipeline(origin, wire, client_tls)
        answers, cut = _responses(data)
        got = [(status, len(body) if status == 201 else "-") for status, _, body in answers]
        outcomes.append((got, f"{cut} bytes cut off", ended))
    expected = [(201, len(BIG)), *((status, "-") for status in statuses[1:])]
    assert outcomes == [(expected, "0 bytes cut off", "eof")] * TRIES
    assert srv.stats.errors == ({400: TRIES} if 400 in statuses else {})
    await wait_for(lambda: srv.stats.lingering == 0, "the client's close ends the lingering")
    assert srv.stats.linger_cut == 0


def _responses(data: bytes) -> tuple[list[RawResponse], int]:
    """The complete answers at the start of ``data`` and the length of a cut-off tail."""
    out: list[RawResponse] = []
    rest = data
    while b"\r\n\r\n" in rest:
        head, _, body = rest.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        if len(body) < length:
            break
        out.extend(split_responses(head + b"\r\n\r\n" + body[:length]))
        rest = body[length:]
    return out, len(rest)


# --- the bounds, on the mock clock over in-memory streams ----------------------------------------


async def test_lingering_is_bounded_in_time(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that never closes and keeps trickling bytes is cut ``linger`` after the 400."""
    srv = HTTPServer(app, limits=ServerLimits(linger=1.5))
    client, server_end = trio.testing.memory_stream_pair()
    trickled = 0

    async def trickle() -> None:
        nonlocal trickled
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await trio.sleep(0.4)
                await client.send_all(b"z")
                trickled += 1

    async with trio.open_nursery() as nursery:
        await client.send_all(GARBAGE)
        nursery.start_soon(trickle)
        await srv._serve_connection(server_end)
        assert trio.current_time() == 1.5
        assert [r[0] for r in split_responses(await read_until_close(client))] == [400]
        nursery.cancel_scope.cancel()
    assert trickled == 3  # at 0.4, 0.8, 1.2 s: read and dropped; the one at 1.6 s finds it closed
    assert (srv.stats.linger_cut, srv.stats.lingering, srv.stats.errors) == (1, 0, {400: 1})


async def test_lingering_is_bounded_in_bytes(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that floods is cut after ``linger_bytes`` without waiting."""
    srv = HTTPServer(app, limits=ServerLimits(linger_bytes=100_000))
    client, server_end = trio.testing.memory_stream_pair()
    await client.send_all(GARBAGE + TAIL)
    await srv._serve_connection(server_end)
    assert trio.current_time() == 0
    assert [r[0] for r in split_responses(await read_until_close(client))] == [400]
    assert (srv.stats.linger_cut, srv.stats.lingering) == (1, 0)


async def test_a_peer_that_closes_ends_the_lingering_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    srv = HTTPServer(app)
    client, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await client.send_all(GOOD_CLOSE.replace(b"/big", b"/echo") + TAIL[:1000])
        nursery.start_soon(srv._serve_connection, server_end)
        await trio.sleep(0.5)
        assert srv.stats.lingering == 1  # the answer is out; the server waits for our close
        [(status, _, body)] = split_responses(await read_until_close(client))
        assert (status, body) == (200, b"{}")
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == 0.5
        assert srv.stats.lingering == 0
    assert srv.stats.linger_cut == 0
