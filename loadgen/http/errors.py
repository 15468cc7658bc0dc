"""The one seam where trio, ssl, OSError and h11 exceptions become the project's errors."""

from __future__ import annotations

import errno
import ssl

import h11
import trio

from loadgen.errors import (
    BadResponse,
    ConnectError,
    ConnectionClosed,
    RemoteProtocolError,
    TLSError,
    TransportError,
)

__all__ = ["PEER_GONE", "translate_client_error"]

# What a peer that vanishes (reset, closed, broken TLS) raises through a trio stream.
PEER_GONE: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)

_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


def translate_client_error(exc: Exception, *, connecting: bool = False) -> TransportError | None:
    """The ``TransportError`` for what a client exchange raised; None for anything else (a bug)."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, RemoteProtocolError):
        return BadResponse(str(exc))
    if isinstance(exc, h11.RemoteProtocolError):
        return BadResponse(f"invalid HTTP response: {exc}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS error: {exc}")
    if isinstance(exc, trio.BrokenResourceError):
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            return TLSError(f"TLS error: {cause}")
        if connecting and isinstance(cause, OSError):
            return ConnectError(f"cannot connect: {cause.strerror or cause}")
        return ConnectionClosed(f"connection broken: {cause or exc}")
    if isinstance(exc, trio.ClosedResourceError):
        return ConnectionClosed("connection closed")
    if isinstance(exc, OSError):
        if connecting or exc.errno in _CONNECT_ERRNOS:
            return ConnectError(f"cannot connect: {exc.strerror or exc}")
        return ConnectionClosed(f"connection error: {exc.strerror or exc}")
    return None
