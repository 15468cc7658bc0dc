"""The one seam where trio, ssl, OSError and h11 exceptions become the project's errors."""

from __future__ import annotations

import errno
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

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

__all__ = ["PEER_GONE", "map_client_errors"]

# What a peer that vanishes (reset, closed, broken TLS) raises through a trio stream.
PEER_GONE: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)

_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


@contextmanager
def map_client_errors(*, connecting: bool = False) -> Iterator[None]:
    """Translate what one client exchange may raise into ``TransportError`` subclasses."""
    try:
        yield
    except TransportError:
        raise
    except RemoteProtocolError as exc:
        raise BadResponse(str(exc)) from exc
    except h11.RemoteProtocolError as exc:
        raise BadResponse(f"invalid HTTP response: {exc}") from exc
    except ssl.SSLError as exc:
        raise TLSError(f"TLS error: {exc}") from exc
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            raise TLSError(f"TLS error: {cause}") from exc
        raise ConnectionClosed(f"connection broken: {cause or exc}") from exc
    except trio.ClosedResourceError as exc:
        raise ConnectionClosed("connection closed") from exc
    except OSError as exc:
        if connecting or exc.errno in _CONNECT_ERRNOS:
            raise ConnectError(f"cannot connect: {exc.strerror or exc}") from exc
        raise ConnectionClosed(f"connection error: {exc.strerror or exc}") from exc
