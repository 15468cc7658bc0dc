"""TLSStream, the lean TLS stream: against trio.SSLStream, the blocking ssl module and a hand-driven
SSLObject peer whose ciphertext the test cuts where it likes (every split point of a message, a
close in the middle of a record), plus the HTTP server and pool on top of it."""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
import trustme
from conftest import DEADLINE, StartServer, read_request, wait_for

from loadgen.errors import ConnectionClosed, TLSError
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply
from loadgen.http.stream import RawStream, close_gracefully
from loadgen.http.tls import ServerTLS, client_context, server_context
from loadgen.http.tlsstream import TLSStream

HOST = "localhost"  # the generated certificate names it (and 127.0.0.1)


@pytest.fixture(scope="module")
def tls() -> ServerTLS:
    return server_context()


@pytest.fixture
def client_ctx(tls: ServerTLS) -> ssl.SSLContext:
    assert tls.ca_pem is not None
    return client_context(ca_pem=tls.ca_pem)


def _socketpair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class HandPeer:
    """The other end driven by hand: an SSLObject over memory BIOs on a trio socket, so the test
    decides exactly which ciphertext bytes go out and when."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool) -> None:
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side,
            server_hostname=None if server_side else HOST,
        )  # fmt: skip

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                data = await self.sock.recv(65536)
                assert data, "the stream closed during the handshake"
                self.incoming.write(data)
            else:
                await self.flush()
                return

    async def flush(self) -> None:
        out = self.outgoing.read()
        if out:
            await self.send(out)

    async def send(self, data: bytes) -> None:
        with memoryview(data) as view:
            while view:
                view = view[await self.sock.send(view) :]

    def encrypt(self, *messages: bytes) -> bytes:
        """The ciphertext of ``messages``, one TLS record (or more) each, not sent."""
        for message in messages:
            self.obj.write(message)
        return self.outgoing.read()

    async def read_some(self) -> bytes:
        """Plaintext from the stream; b"" after its close_notify (the ssl module's way), and
        ``SSLEOFError`` when the transport ends without one."""
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                chunk = await self.sock.recv(65536)
                if chunk:
                    self.incoming.write(chunk)
                else:
                    self.incoming.write_eof()

    async def read(self, size: int) -> bytes:
        """Exactly ``size`` plaintext bytes from the stream."""
        data = bytearray()
        while len(data) < size:
            chunk = await self.read_some()
            assert chunk, f"close_notify after {len(data)} of {size} bytes"
            data += chunk
        return bytes(data)


@pytest.fixture(params=["TLSv1.3", "TLSv1.2"])
async def client_and_hand(
    tls: ServerTLS, client_ctx: ssl.SSLContext, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[TLSStream, HandPeer]]:
    """Our stream as the client, a hand-driven server on the other end, handshake done; in
    both TLS versions (their records differ: 1.2 carries an explicit nonce, 1.3 a type byte)."""
    if request.param == "TLSv1.2":
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    a, b = _socketpair()
    ours = TLSStream(RawStream(a), client_ctx, server_hostname=HOST)
    peer = HandPeer(b, tls.context, server_side=True)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.handshake)
            await ours.do_handshake()
    assert ours.ssl_object.version() == request.param
    yield ours, peer
    await ours.aclose()
    peer.sock.close()


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    with trio.fail_after(DEADLINE):
        while len(data) < size:
            chunk = await stream.receive_some()
            assert chunk, f"end of stream after {len(data)} of {size} bytes"
            data += chunk
    return bytes(data)


# --- against trio.SSLStream -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
@pytest.mark.parametrize("ours_is", ["client", "server"])
async def test_against_trio_ssl_stream(tls: ServerTLS, ours_is: str, version: str) -> None:
    assert tls.ca_pem is not None
    client_ctx = client_context(ca_pem=tls.ca_pem)
    if version == "TLSv1.2":  # the client's limit decides (devices in the field still use 1.2)
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    a, b = _socketpair()
    theirs_transport = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    if ours_is == "client":
        ours = TLSStream(RawStream(a), client_ctx, server_hostname=HOST)
        theirs = trio.SSLStream(theirs_transport, tls.context, server_side=True)
    else:
        ours = TLSStream(RawStream(a), tls.context, server_side=True)
        theirs = trio.SSLStream(theirs_transport, client_ctx, server_hostname=HOST)
    big = bytes(range(256)) * 4096  # 1 MiB: many records, many socket buffers
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(theirs.do_handshake)
            await ours.do_handshake()
        assert ours.ssl_object.version() == version
        # Both directions at once: each side sends while the other receives.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.send_all, big)
            assert await _receive_exactly(theirs, len(big)) == big
        async with trio.open_nursery() as nursery:
            nursery.start_soon(theirs.send_all, big)
            assert await _receive_exactly(ours, len(big)) == big
        for i in range(50):  # small request/response turns
            await ours.send_all(b"ping %d" % i)
            assert await _receive_exactly(theirs, len(b"ping %d" % i)) == b"ping %d" % i
            await theirs.send_all(b"pong %d" % i)
            assert await _receive_exactly(ours, len(b"pong %d" % i)) == b"pong %d" % i
        # Our close sends close_notify: the peer sees a clean end, not a truncation.
        await ours.aclose()
        assert await theirs.receive_some() == b""
        await theirs.aclose()


async def test_end_of_stream_from_trio_ssl_stream(
    tls: ServerTLS, client_ctx: ssl.SSLContext
) -> None:
    """The peer's close_notify (spec-compliant trio.SSLStream) is an end of stream, once and
    every time after."""
    a, b = _socketpair()
    ours = TLSStream(RawStream(a), client_ctx, server_hostname=HOST)
    theirs = trio.SSLStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(b)), tls.context, server_side=True
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(theirs.do_handshake)
            await ours.do_handshake()
        await theirs.send_all(b"last words")
        await theirs.aclose()  # close_notify, then the socket closes
        assert await _receive_exactly(ours, 10) == b"last words"
        assert await ours.receive_some() == b""
        assert await ours.receive_some() == b""
    await ours.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await ours.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await ours.send_all(b"x")


# --- against the blocking ssl module ----------------------------------------------------------------


async def test_against_blocking_ssl_server(tls: ServerTLS, client_ctx: ssl.SSLContext) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)

    def serve() -> bytes:
        with tls.context.wrap_socket(b, server_side=True) as conn:
            got = b""
            while not got.endswith(b"\n"):
                got += conn.recv(65536)
            conn.sendall(got.upper() * 1000)
            return got

    ours = TLSStream(RawStream(a), client_ctx, server_hostname=HOST)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:

            async def peer() -> None:
                assert await trio.to_thread.run_sync(serve) == b"hello ssl\n"

            nursery.start_soon(peer)
            await ours.do_handshake()
            await ours.send_all(b"hello ssl\n")
            assert await _receive_exactly(ours, 10_000) == b"HELLO SSL\n" * 1000
        # the blocking side's close (unwrap not called: a plain socket close) is an end
        assert await ours.receive_some() == b""
    await ours.aclose()


async def test_http_client_module_against_our_server(
    start_server: StartServer, tls: ServerTLS
) -> None:
    """The standard library's HTTPS client (blocking ssl) against the HTTP server over TLS."""
    srv, origin = await start_server(ssl_context=tls.context)
    assert tls.ca_pem is not None
    ctx = ssl.create_default_context(cadata=tls.ca_pem.decode())
    body = b"x" * 300_000

    def call() -> list[tuple[int, bytes]]:
        conn = http.client.HTTPSConnection(origin.host, origin.port, context=ctx, timeout=DEADLINE)
        try:
            out = []
            for payload in (b"one", body, b"three"):  # one connection, keep-alive
                conn.request("POST", "/echo", body=payload)
                response = conn.getresponse()
                out.append((response.status, response.read()))
            return out
        finally:
            conn.close()

    with trio.fail_after(DEADLINE):
        answers = await trio.to_thread.run_sync(call)
    assert answers == [(200, b"one"), (200, body), (200, b"three")]
    assert srv.stats.requests_fast == 3
    assert srv.stats.connections_accepted == 1


async def test_decrypt_hands_out_every_complete_record_however_much(
    client_and_hand: tuple[TLSStream, HandPeer],
) -> None:
    """A mux reads the socket itself and feeds ``decrypt``: a record left in the incoming
    buffer would wait for a readiness that never comes (the peer has sent everything). So one
    call returns all the complete records' plaintext, past the 64 KB of one receive, and keeps
    only an incomplete record for the next call."""
    ours, peer = client_and_hand
    await peer.send(peer.encrypt(b"hello"))  # after TLS 1.3's session tickets, on the socket
    assert await _receive_exactly(ours, 5) == b"hello"
    big = bytes(range(256)) * 600  # 153,600 bytes: ten records
    whole = peer.encrypt(big, b"tail")
    tail_record = len(peer.encrypt(b"tail"))  # (same length as the one in ``whole``)
    cut = len(whole) - tail_record // 2  # all of ``big``'s records, half of the tail's
    assert ours.decrypt(whole[:cut]) == big
    assert ours.decrypt(whole[cut:]) == b"tail"


# --- cut ciphertext ---------------------------------------------------------------------------------


async def test_split_at_every_byte(client_and_hand: tuple[TLSStream, HandPeer]) -> None:
    """Two records cut at every byte: the stream waits for the rest of a record, reads every
    record already complete, and never hands out a byte twice or out of order."""
    ours, peer = client_and_hand
    first, second = b'{"first":"record"}', b'{"second":"record, longer"}'
    with trio.fail_after(DEADLINE):
        whole = peer.encrypt(first, second)  # (sequence numbers change, the length does not)
        await peer.send(whole)
        assert await _receive_exactly(ours, len(first) + len(second)) == first + second
        size = len(whole)
        for cut in range(1, size):
            wire = peer.encrypt(first, second)
            assert len(wire) == size
            got = bytearray()

            async def reader(into: bytearray = got) -> None:
                into += await _receive_exactly(ours, len(first) + len(second))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await peer.send(wire[:cut])
                await trio.testing.wait_all_tasks_blocked()  # the stream took the first part
                await peer.send(wire[cut:])
            assert got == first + second, cut


async def test_max_bytes_keeps_the_rest(client_and_hand: tuple[TLSStream, HandPeer]) -> None:
    ours, peer = client_and_hand
    message = bytes(range(100)) * 3
    with trio.fail_after(DEADLINE):
        await peer.send(peer.encrypt(message[:120], message[120:]))
        parts = [await ours.receive_some(7)]
        assert parts[0] == message[:7]
        while sum(map(len, parts)) < len(message):
            part = await ours.receive_some(50)
            assert 0 < len(part) <= 50
            parts.append(part)
    assert b"".join(parts) == message
    with pytest.raises(ValueError, match="max_bytes"):
        await ours.receive_some(0)


async def test_buffered_records_are_read_in_one_call(
    client_and_hand: tuple[TLSStream, HandPeer],
) -> None:
    """Records that arrived together come out of one receive_some (one read per wake-up)."""
    ours, peer = client_and_hand
    records = [b"record %d;" % i for i in range(20)]
    with trio.fail_after(DEADLINE):
        await peer.send(peer.encrypt(*records))
        await trio.testing.wait_all_tasks_blocked()
        assert await ours.receive_some() == b"".join(records)


@pytest.mark.parametrize("where", ["mid-header", "mid-record", "after-one-record"])
async def test_peer_closes_mid_record(
    client_and_hand: tuple[TLSStream, HandPeer], where: str
) -> None:
    """The transport ends inside a record (no close_notify): the complete records before it are
    delivered, then an end of stream; the truncation is the HTTP layer's to judge."""
    ours, peer = client_and_hand
    whole = peer.encrypt(b"complete")
    wire = whole + peer.encrypt(b"never complete")
    cut = {
        "mid-header": len(whole) + 3,
        "mid-record": len(whole) + 12,
        "after-one-record": len(whole),
    }
    with trio.fail_after(DEADLINE):
        await peer.send(wire[: cut[where]])
        peer.sock.shutdown(socket.SHUT_WR)
        assert await ours.receive_some() == b"complete"
        assert await ours.receive_some() == b""
        assert await ours.receive_some() == b""


async def test_garbage_record_is_broken_resource_with_the_ssl_cause(
    client_and_hand: tuple[TLSStream, HandPeer],
) -> None:
    ours, peer = client_and_hand
    wire = bytearray(peer.encrypt(b"tampered"))
    wire[-1] ^= 0xFF  # the authentication tag no longer matches
    with trio.fail_after(DEADLINE):
        await peer.send(bytes(wire))
        with pytest.raises(trio.BrokenResourceError) as info:
            await ours.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with pytest.raises(trio.BrokenResourceError):  # broken once, broken for good
        await ours.send_all(b"anything")


async def test_our_close_sends_close_notify(client_and_hand: tuple[TLSStream, HandPeer]) -> None:
    ours, peer = client_and_hand
    await ours.send_all(b"bye")
    await ours.aclose()
    with trio.fail_after(DEADLINE):
        assert await peer.read(3) == b"bye"
        assert await peer.read_some() == b""  # close_notify, not a bare end of the transport


async def test_cancelled_receive_with_data_buffered_is_a_checkpoint(
    client_and_hand: tuple[TLSStream, HandPeer],
) -> None:
    ours, peer = client_and_hand
    await peer.send(peer.encrypt(b"one", b"two"))
    assert await ours.receive_some(3) == b"one"  # "two" stays decrypted inside the TLS object
    with trio.CancelScope() as scope:
        scope.cancel()
        await ours.receive_some()
    assert scope.cancelled_caught


async def test_senders_take_turns(tls: ServerTLS, client_ctx: ssl.SSLContext) -> None:
    """A send that has to wait (the peer is not reading) holds the transport: a second send
    waits for its turn, and the ciphertext of the two is never interleaved."""
    a, b = _socketpair()
    ours = TLSStream(RawStream(a), client_ctx, server_hostname=HOST)
    peer = HandPeer(b, tls.context, server_side=True)
    first, second = b"A" * 2_000_000, b"B" * 1000
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.handshake)
            await ours.do_handshake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.send_all, first)
            await trio.testing.wait_all_tasks_blocked()  # blocked: the socket buffer is full
            nursery.start_soon(ours.send_all, second)
            await trio.testing.wait_all_tasks_blocked()
            assert await peer.read(len(first) + len(second)) == first + second
    await ours.aclose()
    peer.sock.close()


async def test_second_handshake_at_once_is_busy(tls: ServerTLS, client_ctx: ssl.SSLContext) -> None:
    a, b = _socketpair()
    ours = TLSStream(RawStream(a), client_ctx, server_hostname=HOST)
    peer = HandPeer(b, tls.context, server_side=True)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.do_handshake)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await ours.do_handshake()
            await peer.handshake()
    await ours.do_handshake()  # done: a checkpoint only
    assert "handshook=True" in repr(ours)
    await ours.aclose()
    peer.sock.close()


# --- certificates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["unknown-ca", "wrong-host"])
async def test_bad_certificate_is_one_clear_error_on_each_side(
    start_server: StartServer, which: str
) -> None:
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1" if which == "unknown-ca" else "other.example").configure_cert(served)
    srv, origin = await start_server(ssl_context=served)
    trusted = trustme.CA() if which == "unknown-ca" else ca
    async with open_pool(ssl_context=client_context(ca_pem=trusted.cert_pem.bytes())) as pool:
        with pytest.raises(TLSError, match="certificate verify failed") as info:
            await pool.request(origin, b"/echo", b"x")
        assert info.value.kind == "tls"
        assert pool.stats.errors == {"tls": 1}
        assert pool.stats.connections_open == 0
    await wait_for(lambda: srv.stats.connections_open == 0, "the server drops the handshake")
    # The client's alert reaches the server, which counts one TLS error, nothing else.
    assert srv.stats.tls_errors == 1
    assert srv.stats.peer_resets == 0
    # Verification off: the same server is reachable (a load test against a lab device).
    async with open_pool(ssl_context=client_context(verify=False)) as pool:
        assert (await pool.request(origin, b"/echo", b"ok")).body == b"ok"


# --- HTTP on top ------------------------------------------------------------------------------------


async def _big(request: Request) -> Reply:
    return Reply(200, request.body * 3)


async def test_large_bodies_through_pool_and_server(
    start_server: StartServer, tls: ServerTLS, client_ctx: ssl.SSLContext
) -> None:
    srv, origin = await start_server(_big, ssl_context=tls.context)
    async with open_pool(
        ssl_context=client_ctx, limits=ClientLimits(read_timeout=DEADLINE)
    ) as pool:
        for size in (0, 1, 16_383, 16_384, 16_385, 300_000):
            body = bytes(i % 251 for i in range(size))
            response = await pool.request(origin, b"/big", body)
            assert (response.status, response.body) == (200, body * 3), size
        assert pool.stats.connections_opened == 1
    assert srv.stats.requests_fast == 6
    assert srv.stats.tls_errors == srv.stats.peer_resets == 0


async def test_answer_cut_mid_record_is_connection_closed(
    tls: ServerTLS, client_ctx: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    """A TLS server that sends the record of its answer's head, part of its body's record and
    closes: the pool reports the answer as cut short (``closed``), as over plain HTTP."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        raw = stream.socket.detach()
        peer = HandPeer(socket.socket(fileno=raw), tls.context, server_side=True)
        await peer.handshake()
        await read_request(_HandReceive(peer), bytearray())
        head = peer.encrypt(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        body = peer.encrypt(b"hello")
        await peer.send(head + body[: len(body) - 10])
        peer.sock.close()

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    origin = Origin("https", "127.0.0.1", port)
    async with open_pool(ssl_context=client_ctx) as pool:
        with pytest.raises(ConnectionClosed, match="before a complete answer"):
            await pool.request(origin, b"/", b"x")
        assert pool.stats.errors == {"closed": 1}


async def test_pool_closes_with_close_notify(
    tls: ServerTLS, client_ctx: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    """A connection the pool closes (here: its own close) ends with close_notify, not with a
    bare end of the transport that a strict TLS server reports as a truncation."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    ends: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        peer = HandPeer(socket.socket(fileno=stream.socket.detach()), tls.context, server_side=True)
        await peer.handshake()
        await read_request(_HandReceive(peer), bytearray())
        await peer.send(peer.encrypt(b"HTTP/1.1 204 No Content\r\n\r\n"))
        ends.append(await peer.read_some())  # b"" for close_notify; SSLEOFError without one
        peer.sock.close()

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    async with open_pool(ssl_context=client_ctx) as pool:
        response = await pool.request(Origin("https", "127.0.0.1", port), b"/", b"x")
        assert response.status == 204
    await wait_for(lambda: bool(ends), "the peer sees the end")
    assert ends == [b""]


class _HandReceive(trio.abc.ReceiveStream):
    """A HandPeer's plaintext as a receive stream (for conftest.read_request)."""

    def __init__(self, peer: HandPeer) -> None:
        self.peer = peer

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            try:
                return self.peer.obj.read(max_bytes or 65536)
            except ssl.SSLWantReadError:
                chunk = await self.peer.sock.recv(65536)
                if not chunk:
                    return b""
                self.peer.incoming.write(chunk)

    async def aclose(self) -> None:
        self.peer.sock.close()


async def test_graceful_close_sends_close_notify_then_fin(
    client_and_hand: tuple[TLSStream, HandPeer],
) -> None:
    ours, peer = client_and_hand
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:

            async def closing() -> None:
                assert await close_gracefully(ours, seconds=DEADLINE, max_bytes=1 << 20)

            nursery.start_soon(closing)
            assert await peer.read_some() == b""  # close_notify
            assert await peer.sock.recv(10) == b""  # then the FIN (a half-close)
            peer.sock.shutdown(socket.SHUT_WR)  # the peer closes its side: the drain ends
    with pytest.raises(trio.ClosedResourceError):
        await ours.receive_some()


async def test_server_shed_closes_a_tls_connection(
    start_server: StartServer, tls: ServerTLS, client_ctx: ssl.SSLContext
) -> None:
    """Shedding idle connections reaches the socket under a TLS stream too."""
    srv, origin = await start_server(ssl_context=tls.context)
    async with open_pool(ssl_context=client_ctx) as pool:
        assert (await pool.request(origin, b"/echo", b"1")).status == 200
        assert srv.on_descriptor_shortage(8) == 1
        await wait_for(lambda: srv.stats.connections_open == 0, "the server sheds it")
        assert (await pool.request(origin, b"/echo", b"2")).body == b"2"  # a stale retry
        assert pool.stats.stale_retries == 1
    assert isinstance(srv, HTTPServer)


async def test_reset_under_tls_is_a_peer_reset_not_a_tls_error(
    start_server: StartServer, tls: ServerTLS, client_ctx: ssl.SSLContext
) -> None:
    """A socket error under the TLS layer is the transport's error, as in plain HTTP: the server
    counts a reset peer as ``peer_resets``, never as a TLS error."""
    srv, origin = await start_server(ssl_context=tls.context)
    with trio.fail_after(DEADLINE):
        tcp = await trio.open_tcp_stream(origin.host, origin.port)
        client = trio.SSLStream(tcp, client_ctx, server_hostname=HOST)
        await client.send_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        assert b"200 OK" in await client.receive_some()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tcp.socket.close()  # linger 0: an RST, not a FIN
    await wait_for(lambda: srv.stats.connections_open == 0, "the server sees the reset")
    assert srv.stats.peer_resets == 1
    assert srv.stats.tls_errors == 0


async def test_a_cancelled_receive_loses_no_plaintext(
    client_and_hand: tuple[TLSStream, HandPeer],
) -> None:
    """A receive cancelled while plaintext is already waiting (decrypted or not) takes nothing:
    the next receive gets all of it. Cancellation is checked before bytes move, as trio's own
    streams do."""
    ours, peer = client_and_hand
    await peer.send(peer.encrypt(b"first", b"second"))
    with trio.fail_after(DEADLINE):
        head = await ours.receive_some(3)  # the rest stays decrypted or buffered in ours
    with trio.CancelScope() as scope:
        scope.cancel()
        await ours.receive_some()
    assert scope.cancelled_caught
    rest = b"firstsecond"[len(head) :]
    assert await _receive_exactly(ours, len(rest)) == rest


async def test_a_cancelled_raw_receive_or_send_moves_no_bytes() -> None:
    """The plain stream: a receive cancelled with bytes waiting leaves them for the next one; a
    send cancelled before it starts sends nothing (a cancel never comes after the bytes moved)."""
    a, b = _socketpair()
    ours, peer = RawStream(a), RawStream(b)
    try:
        await peer.send_all(b"hello")
        await trio.sleep(0.05)
        with trio.CancelScope() as scope:
            scope.cancel()
            await ours.receive_some()
        assert scope.cancelled_caught
        with trio.fail_after(DEADLINE):
            assert await ours.receive_some() == b"hello"
        with trio.CancelScope() as scope:
            scope.cancel()
            await ours.send_all(b"never")
        assert scope.cancelled_caught
        await ours.send_all(b"then")
        with trio.fail_after(DEADLINE):
            assert await peer.receive_some() == b"then"
    finally:
        a.close()
        b.close()
