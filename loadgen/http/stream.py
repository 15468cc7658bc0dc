"""A lean trio stream over a non-blocking stdlib socket, and the accept loop that makes them.

Why not ``trio.SocketStream``: for each ``send_all`` and ``receive_some`` it enters a conflict
detector and an error-translating context manager, and the socket layer below yields to the
scheduler after every successful call; measured here that is about half the CPU of a small
request/response cycle. This stream calls the socket directly and waits with
``trio.lowlevel.wait_readable`` / ``wait_writable`` only when the kernel says "would block".

Trio's rule that every async operation is a checkpoint is kept where it matters: a call that
succeeds at once still checks for cancellation (``checkpoint_if_cancelled``), and after
``FAIR_SHARE`` calls in a row that did not wait, the stream yields to the scheduler, so a peer that
keeps the socket always readable cannot starve other connections. As in trio's own sockets, the
cancellation check comes *before* the ``recv``/``send`` and the yield after it is shielded: a
cancel can never arrive once bytes have been taken from the kernel, so none are lost.

Closing: ``close_gracefully`` half-closes, drains the peer's input for a bounded time and only then
closes. Closing a socket with unread input makes the kernel answer RST and drop whatever of our
last answer is still in the send buffer; a half-close sends FIN after that data instead, and the
drain lets a peer that pipelined more requests (or garbage) see the whole answer before the reset
that a close with its bytes still queued would cause. Apache and nginx call this lingering close.

Descriptor pressure: when ``accept`` fails for lack of file descriptors (EMFILE, ENFILE) the accept
loop asks its owner to shed idle connections (``shed(SHED_BATCH)``, the server closes its oldest
idle keep-alive connections) and accepts again at once; only when nothing can be shed does it
pause ``ACCEPT_RETRY_DELAY`` as ``trio.serve_listeners`` does. Either way it logs one line per
``CAPACITY_LOG_INTERVAL`` with the counts since the last line, not one line per failure. Linux
takes the descriptor before it looks at the queue, so with a full table ``accept`` fails with EMFILE
even when nobody is waiting (as every batch that fills the table finds out): a failure counts, and
sheds, only when a connection is really waiting.

Errors follow trio's stream contract: a socket error is ``trio.BrokenResourceError`` (with the
``OSError`` as ``__cause__``), use after ``aclose`` is ``trio.ClosedResourceError``. Only plain TCP
uses this class; TLS wraps it in ``loadgen.http.tlsstream.TLSStream``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import select
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    notify_closing,
    wait_readable,
    wait_writable,
)

__all__ = ["Layered", "RawStream", "accept_loop", "close_gracefully", "open_raw_stream"]

log = logging.getLogger(__name__)

FAIR_SHARE: Final = 32  # immediate successes before a forced yield
ACCEPT_BATCH: Final = 64  # connections accepted per readiness wake-up
ACCEPT_RETRY_DELAY: Final = 0.1  # after EMFILE and friends, as trio.serve_listeners does
SHED_BATCH: Final = 8  # idle connections closed per accept that failed for lack of descriptors
CAPACITY_LOG_INTERVAL: Final = 5.0  # seconds between two "accept failed" log lines
LINGER_CHUNK: Final = 65536  # bytes per read while draining before a close
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_DESCRIPTOR_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE})  # shedding frees these

Shed = Callable[[int], int]  # shed(at_most) -> how many connections were closed


class RawStream(trio.abc.HalfCloseableStream):
    """``trio.abc.HalfCloseableStream`` on a connected, non-blocking stdlib TCP socket."""

    __slots__ = ("_closed", "_streak", "_wait_first", "socket")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = sock
        self._closed = False
        self._streak = 0
        # In request/response traffic the answer is rarely there the moment we ask; after a read
        # that had to wait, wait first next time instead of paying for a failed recv.
        self._wait_first = False

    def __repr__(self) -> str:
        return f"<RawStream fd={self.socket.fileno()} closed={self._closed}>"

    async def checkpoint_fairly(self) -> None:
        """After a call that did not wait and has already moved its bytes: the scheduler's turn
        every ``FAIR_SHARE`` such calls, shielded (the cancellation check came before the
        bytes moved; a cancel here would lose them)."""
        self._streak += 1
        if self._streak >= FAIR_SHARE:
            self._streak = 0
            await cancel_shielded_checkpoint()

    @property
    def closed(self) -> bool:
        return self._closed

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        sock = self.socket
        size = max_bytes or 65536
        if not self._wait_first:
            await checkpoint_if_cancelled()  # before the bytes leave the kernel (see above)
            try:
                data = sock.recv(size)
            except BlockingIOError:
                self._wait_first = True
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            else:
                self._streak += 1  # ``checkpoint_fairly`` inlined (once per message)
                if self._streak >= FAIR_SHARE:
                    self._streak = 0
                    await cancel_shielded_checkpoint()
                return data
        self._streak = 0
        while True:
            try:
                await wait_readable(sock)
            except trio.ClosedResourceError:
                raise
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            try:
                data = sock.recv(size)
            except BlockingIOError:
                self._wait_first = True
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            if len(data) == size:
                self._wait_first = False  # a full read: more may be waiting already
            return data

    async def wait_readable(self) -> None:
        """Wait until the socket is readable (an answer, the peer's close, or our own close:
        ``ClosedResourceError``); the next ``receive_some`` then reads at once."""
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        try:
            await wait_readable(self.socket)
        except trio.ClosedResourceError:
            raise
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        self._wait_first = False
        self._streak = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        sock = self.socket
        await checkpoint_if_cancelled()  # before the bytes go (see above)
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if sent == len(data):
            self._streak += 1  # ``checkpoint_fairly`` inlined (once per message)
            if self._streak >= FAIR_SHARE:
                self._streak = 0
                await cancel_shielded_checkpoint()
            return
        self._streak = 0
        with memoryview(data) as view:
            remaining = view[sent:]
            while remaining:
                await wait_writable(sock)
                try:
                    sent = sock.send(remaining)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
                remaining = remaining[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        await wait_writable(self.socket)

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        await checkpoint()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    def close_now(self) -> None:
        """Close at once; a task blocked on this stream wakes with ``ClosedResourceError``."""
        if not self._closed:
            self._closed = True
            notify_closing(self.socket)
            self.socket.close()

    async def aclose(self) -> None:
        self.close_now()
        await checkpoint()


@runtime_checkable
class Layered(Protocol):
    """A stream over a ``RawStream`` (TLS): what closing needs to know of it."""

    @property
    def transport_stream(self) -> RawStream: ...

    def notify_close(self) -> None:
        """Say goodbye in the layer's own protocol (close_notify) without waiting."""


async def close_gracefully(stream: trio.abc.Stream, *, seconds: float, max_bytes: int) -> bool:
    """Half-close ``stream``, read and drop the peer's input until it closes its side (at most
    ``seconds`` and ``max_bytes``), then close. True when the peer closed within those bounds.

    A TLS stream (``Layered``) sends its close_notify, then its transport is half-closed. A
    stream that cannot half-close is closed at once. Cancellation closes at once too.
    """
    transport: trio.abc.Stream = stream
    # (RawStream first: a plain connection never pays for the protocol check)
    if not isinstance(stream, RawStream) and isinstance(stream, Layered):
        stream.notify_close()
        transport = stream.transport_stream
    try:
        if not isinstance(transport, trio.abc.HalfCloseableStream):
            return False
        with trio.move_on_after(seconds):
            await transport.send_eof()
            drained = 0
            while drained <= max_bytes:
                data = await transport.receive_some(LINGER_CHUNK)
                if not data:
                    return True
                drained += len(data)
        return False
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False  # the peer reset (or is gone): nothing left to protect
    finally:
        await trio.aclose_forcefully(stream)


async def open_raw_stream(host: str, port: int) -> RawStream:
    """Connect to ``host``: an IP address directly (one non-blocking ``connect``: ~16 µs of CPU
    here, against ~105 µs through trio's ``open_tcp_stream``, whose happy-eyeballs nursery a
    literal address does not need; a run opens its connections as its load begins), a name
    with trio's happy eyeballs; then take over the socket."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: resolve it and try each address (happy eyeballs)
        stream = await trio.open_tcp_stream(host, port)
        fd = stream.socket.detach()
        return RawStream(socket.socket(fileno=fd))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex((host, port))
        if code == errno.EINPROGRESS:
            await wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        else:
            await checkpoint()
        if code:
            raise OSError(code, f"connect to {host}:{port}: {os.strerror(code)}")
    except BaseException:
        sock.close()
        raise
    return RawStream(sock)


def _has_waiting(listener: socket.socket) -> bool:
    """Whether a connection waits in the accept queue (``poll`` needs no descriptor)."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


@dataclass(slots=True)
class CapacityLog:
    """At most one log line per ``interval`` about failed accepts; each line counts the failures
    and the connections shed since the previous line (the first failure is logged at once)."""

    interval: float = CAPACITY_LOG_INTERVAL
    last: float = -math.inf
    failures: int = 0
    shed: int = 0

    def note(self, now: float, shed: int) -> tuple[int, int] | None:
        """Count one failure that shed ``shed``; (failures, shed) to log now, or None."""
        self.failures += 1
        self.shed += shed
        if now - self.last < self.interval:
            return None
        counts = (self.failures, self.shed)
        self.last, self.failures, self.shed = now, 0, 0
        return counts


async def accept_loop(
    listener: socket.socket,
    handler: Callable[[RawStream], Awaitable[None]],
    nursery: trio.Nursery,
    shed: Shed | None = None,
) -> None:
    """Accept connections on a listening non-blocking socket until cancelled.

    Each connection runs ``handler(stream)`` in ``nursery``; the handler owns closing the stream.
    Accepts up to ACCEPT_BATCH per wake-up (connection storms are what load tests make). Out of
    descriptors, ``shed`` frees some (see the module header); otherwise EMFILE and similar are
    retried after a pause, like ``trio.serve_listeners``.
    """
    listener.setblocking(False)
    capacity = CapacityLog()
    try:
        while True:
            await wait_readable(listener)
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue  # the peer gave up while queued: nothing to serve
                    if exc.errno not in _CAPACITY_ERRNOS:
                        raise
                    if not _has_waiting(listener):
                        break  # the table is full but nobody waits (see the module header)
                    closed = 0
                    if shed is not None and exc.errno in _DESCRIPTOR_ERRNOS:
                        closed = shed(SHED_BATCH)
                    counts = capacity.note(trio.current_time(), closed)
                    if counts is not None:
                        failures, shed_total = counts
                        log.warning(
                            "accept failed %d time(s) since the last report (%s); "
                            "shed %d idle connection(s) to serve new ones",
                            failures,
                            exc,
                            shed_total,
                        )
                    if closed:
                        continue  # their descriptors are free now
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                    break
                nursery.start_soon(handler, RawStream(sock))
    finally:
        notify_closing(listener)
        listener.close()
