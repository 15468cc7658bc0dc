"""A lean TLS stream: ``ssl.SSLObject`` over two memory BIOs on our ``RawStream``.

Why not ``trio.SSLStream``: it is written for any transport and any mix of concurrent callers,
so each ``receive_some`` and ``send_all`` enters a conflict detector, runs the generic
``_retry`` loop (an ``SSLWantReadError`` raised and caught per read that has to wait), and takes
an inner lock around every transport call, whose release reschedules the task (cProfile of the
sender: five ``_retry`` calls and three task steps per operation instead of one). Measured
in-process, a small request/response round trip costs 55 µs of CPU (both ends) over
``trio.SSLStream``, 16 µs in plain TCP and 23 µs over this stream; loadgen against loadgen went
from 0.5 to 0.8 of its plain-HTTP operations per CPU-second on each side. Request/response
traffic needs little: per wake-up, one ``recv`` into the incoming BIO and one read of the
plaintext it completes; per message, one ``write`` into the TLS object and one ``send`` of all
the ciphertext it made (a whole answer in one send, its records together).

Theory of operation
-------------------
- The handshake runs once, in ``do_handshake`` (the client calls it while connecting, the server
  on the first ``receive_some`` or ``send_all``); it loops ``SSLObject.do_handshake`` / send what
  it wrote / receive what it waits for. A TLS 1.3 server's session tickets, written at the end
  of its handshake, are held back and sent with its first answer, as trio does (OpenSSL would
  send them at once; a client that is not reading then would never see them, and it costs a
  send of its own).
- ``receive_some``: read plaintext from the TLS object; when it needs more bytes, one receive
  from the transport into the incoming BIO, then read again. Every record already complete in
  the BIO is read in the same call (up to ``max_bytes``).
- ``send_all``: ``SSLObject.write`` (which always takes everything: the outgoing BIO grows),
  then one ``send_all`` of the outgoing BIO on the transport, repeated while something more was
  written meanwhile. One task sends at a time (``_sending``); bytes the TLS object writes while
  a send is in progress (a key update answered during a receive) stay in the BIO and go out
  with that send, in order.
- Closing: ``aclose`` sends close_notify when it can do so without waiting (one non-blocking
  send of a few bytes), then closes the transport. End of stream: the peer's close_notify, or
  the transport's end without one (HTTPS peers often just close: ``https_compatible`` in trio's
  terms), is ``b""``; whether a message was complete is the HTTP layer's question, as in plain
  HTTP. Half-close is not offered (TLS has none); ``close_gracefully`` half-closes the transport.

Errors follow the plain stream (``RawStream``) and ``trio.SSLStream``: a TLS failure (bad
certificate, bad record, non-TLS peer) is ``trio.BrokenResourceError`` with the ``ssl.SSLError``
as ``__cause__`` (the server counts it as ``tls_errors``, the client maps it to ``TLSError``); a
socket failure is the transport's ``BrokenResourceError``; use after close,
``ClosedResourceError``. A stream broken once stays broken. As with ``RawStream`` (and unlike
``trio.SSLStream``), two tasks receiving at once, or sending at once, are not detected: the
HTTP client and server use one task per direction at most.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from typing import Final

import trio
from trio.lowlevel import ParkingLot, checkpoint, checkpoint_if_cancelled

from loadgen.http.stream import RawStream

__all__ = ["TLSStream"]

TRANSPORT_RECEIVE: Final = 65536  # bytes per receive from the socket (4 full TLS records)
DEFAULT_RECEIVE: Final = 65536  # plaintext bytes per receive_some without max_bytes


def _is_eof(exc: BaseException | None) -> bool:
    """The transport ended without close_notify (OpenSSL 3 names it in the reason only)."""
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLSyscallError)) or (
        isinstance(exc, ssl.SSLError) and "UNEXPECTED_EOF" in str(exc)
    )


class TLSStream(trio.abc.Stream):
    """``trio.abc.Stream`` speaking TLS over a ``RawStream`` (see the module header)."""

    __slots__ = (
        "_broken",
        "_closed",
        "_delayed",
        "_handshaking",
        "_handshook",
        "_incoming",
        "_lot",
        "_obj",
        "_outgoing",
        "_sending",
        "transport_stream",
    )

    def __init__(
        self,
        transport: RawStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._handshook = False
        self._handshaking = False
        self._broken: BaseException | None = None  # why the stream cannot be used any more
        self._closed = False
        self._sending = False
        self._delayed = b""  # a TLS 1.3 server's session tickets, sent with its first answer
        self._lot: ParkingLot | None = None  # senders waiting for their turn (rare)

    def __repr__(self) -> str:
        side = "server" if self._obj.server_side else "client"
        state = "closed" if self._closed else "broken" if self._broken else "ok"
        return (
            f"<TLSStream {side} {state} handshook={self._handshook} "
            f"version={self._obj.version()} transport={self.transport_stream!r}>"
        )

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The TLS state (peer certificate, version, cipher), for inspection."""
        return self._obj

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("TLS stream is broken") from self._broken

    def _fail(self, exc: ssl.SSLError | ssl.CertificateError) -> trio.BrokenResourceError:
        self._broken = exc
        return trio.BrokenResourceError(f"TLS error: {exc}")

    # --- handshake ---------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the TLS handshake (once; later calls only checkpoint)."""
        self._check()
        if self._handshook:
            await checkpoint()
            return
        if self._handshaking:
            raise trio.BusyResourceError("another task is doing this stream's handshake")
        self._handshaking = True
        obj = self._obj
        incoming = self._incoming
        receive = self.transport_stream.receive_some
        try:
            while True:
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLError, ssl.CertificateError) as exc:
                    # What we wrote (an alert) tells the peer why; best effort, never waits.
                    self._send_nowait(self._outgoing.read())
                    raise self._fail(exc) from exc
                else:
                    break
                out = self._outgoing.read()
                if out:
                    await self._push(out)
                data = await receive(TRANSPORT_RECEIVE)
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()
            out = self._outgoing.read()
            if obj.server_side and obj.version() == "TLSv1.3":
                self._delayed = out  # the session tickets (see the module header)
            elif out:
                await self._push(out)
            self._handshook = True
        except BaseException as exc:
            if self._broken is None:
                self._broken = exc
            raise
        finally:
            self._handshaking = False

    async def _handshake_first(self) -> bool:
        """The handshake before the first receive; False when the peer left during it without
        an error (a port probe, an HTTPS client giving up): that is an end of stream."""
        try:
            await self.do_handshake()
        except trio.BrokenResourceError as exc:
            if _is_eof(exc.__cause__):
                return False
            raise
        return True

    # --- receiving ---------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._check()
        if not self._handshook and not await self._handshake_first():
            return b""
        size = DEFAULT_RECEIVE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        # A cancel is taken before any plaintext is read, never after (it would be lost).
        await checkpoint_if_cancelled()
        obj = self._obj
        incoming = self._incoming
        transport = self.transport_stream
        waited = False
        while True:
            # With nothing buffered, encrypted or not, and no end seen, a read could only fail
            # (an exception raised and caught per wait): then go to the transport at once.
            if incoming.pending or incoming.eof or obj.pending():
                try:
                    data = obj.read(size)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:  # the peer's close_notify
                    data = b""
                    break
                except (ssl.SSLError, ssl.CertificateError) as exc:
                    if _is_eof(exc):  # the transport ended without close_notify
                        data = b""
                        break
                    raise self._fail(exc) from exc
                else:
                    if incoming.pending and len(data) < size:
                        data = self._read_more(data, size)
                    break
            if self._outgoing.pending and not self._sending:
                # The TLS object answered something while reading (a key update).
                await self._push(self._outgoing.read())
            chunk = await transport.receive_some(TRANSPORT_RECEIVE)
            waited = True
            if chunk:
                incoming.write(chunk)
            else:
                incoming.write_eof()
        if not waited:
            await transport.checkpoint_fairly()
        return data

    def _read_more(self, data: bytes, size: int) -> bytes:
        """The plaintext of the records already complete in the incoming BIO, after ``data``."""
        parts = [data]
        have = len(data)
        obj = self._obj
        while have < size and self._incoming.pending:
            try:
                more = obj.read(min(size - have, DEFAULT_RECEIVE))
            except ssl.SSLError:
                break  # an incomplete record, or the end: the next call sees it
            if not more:
                break
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    # --- without waiting: for a mux that reads and writes the socket itself ---------------

    def decrypt(self, chunk: bytes) -> bytes | None:
        """Feed ``chunk`` (non-empty, read from the transport by the caller) to a handshaken
        stream and return the plaintext now complete (``b""``: no record complete yet), or
        None at the peer's close_notify (the end of the stream). A TLS failure raises as
        ``receive_some`` does. What the TLS object has to send meanwhile (a key update answered)
        goes out first with the next ``encrypt``.

        Every record complete is decrypted, however much plaintext that makes: a mux waits on
        the socket, and nothing would wake it for a record left in the incoming buffer (a
        300 KB request over TLS could hang so: 64 KB read from the socket after a record's
        leftover is more than 64 KB of plaintext). The plaintext is bounded by the ciphertext
        read, which the caller bounds."""
        self._check()
        if not self._handshook:
            raise RuntimeError("decrypt before the handshake (the mux takes handshaken streams)")
        incoming = self._incoming
        incoming.write(chunk)
        try:
            data = self._obj.read(DEFAULT_RECEIVE)
        except ssl.SSLWantReadError:
            return b""
        except ssl.SSLZeroReturnError:
            return None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._fail(exc) from exc
        if not data:
            # The ssl module returns b"" rather than raise at a close_notify it has received
            # (SSL_ERROR_ZERO_RETURN with SSL_RECEIVED_SHUTDOWN): the end, not "no record yet".
            return None
        if incoming.pending:
            data = self._read_more(data, sys.maxsize)  # every record complete (see above)
        return data

    @property
    def mux_ready(self) -> bool:
        """Handshaken, and no plaintext already decrypted but not read (a receive stopped at its
        size): a mux can take the stream's socket from here (``decrypt``/``encrypt``)."""
        return self._handshook and not self._obj.pending()

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """The ciphertext of ``data`` (with what the TLS object had to send before it), for the
        caller to send on the transport itself; requires a handshaken stream."""
        self._check()
        try:
            self._obj.write(data)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._fail(exc) from exc
        out = self._outgoing.read()
        if self._delayed:
            out, self._delayed = self._delayed + out, b""
        return out

    # --- sending -----------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check()
        if not self._handshook:
            await self.do_handshake()
        if not data:  # SSLObject.write(b"") would mean something else
            await checkpoint()
            return
        await self._push(self.encrypt(data))

    async def _push(self, out: bytes) -> None:
        """Send ``out``, then whatever the TLS object wrote meanwhile; one task at a time."""
        while self._sending:  # rare: a receive is sending what the TLS object answered
            if self._lot is None:
                self._lot = ParkingLot()
            await self._lot.park()
        self._sending = True
        outgoing = self._outgoing
        send = self.transport_stream.send_all
        try:
            await send(out)
            while outgoing.pending:
                await send(outgoing.read())
        except BaseException as exc:
            # Some unknown part of a record went out: nothing more can follow it.
            if self._broken is None:
                self._broken = exc
            raise
        finally:
            self._sending = False
            if self._lot:
                self._lot.unpark()

    def _send_nowait(self, out: bytes) -> None:
        """Best-effort send of a few bytes without waiting (an alert, close_notify)."""
        transport = self.transport_stream
        if out and not self._sending and not transport.closed:
            # The peer is gone or its window is full: it learns from the FIN instead.
            with contextlib.suppress(OSError):
                transport.socket.send(out)

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        await self.transport_stream.wait_send_all_might_not_block()

    # --- closing -----------------------------------------------------------------------------

    def notify_close(self) -> None:
        """Send close_notify now if that needs no waiting (no send in progress, handshake done,
        not broken); the stream then sends nothing more."""
        if self._handshook and self._broken is None and not self._closed and not self._sending:
            # SSLWantReadError is expected: we do not wait for the peer's close_notify. Any
            # other failure: nothing more to say, the FIN ends the connection.
            with contextlib.suppress(ssl.SSLError):
                self._obj.unwrap()
            self._send_nowait(self._delayed + self._outgoing.read())
            self._delayed = b""
        if self._broken is None:
            self._broken = trio.ClosedResourceError("close_notify sent")

    def close_now(self) -> None:
        """Close at once (close_notify when possible); a task blocked on the stream wakes with
        ``ClosedResourceError``."""
        if not self._closed:
            self.notify_close()
            self._closed = True
            self.transport_stream.close_now()

    async def aclose(self) -> None:
        self.close_now()
        await checkpoint()
