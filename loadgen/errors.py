"""The project's error hierarchy, split by whose fault it is.

- ``ConfigError``: the user's configuration or scenario is wrong; raised before any load starts,
  naming the file, the key path and what was expected.
- ``ProtocolError``: an OpenGate message (JSON) is malformed; names the field path and what was
  expected. Raised by the pure ``loadgen.protocol`` package.
- ``RemoteProtocolError`` / ``LocalProtocolError``: HTTP framing broken by the peer / by us (the
  same split as h11). A remote one carries the status code a server should answer with.
- ``TransportError`` and its subclasses: one exchange failed on the network (connect, timeouts,
  resets). Each has a short ``kind`` used as a counter name in results.

Third-party exceptions (trio, ssl, OSError, h11, httpx) are mapped into these at one seam each
(see ``loadgen.http.errors``); a remote failure of one operation becomes an outcome and a counter,
never the end of a run. A harness failure (a bug) propagates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar


class LoadgenError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(LoadgenError, ValueError):
    """Invalid configuration or scenario, detected before the run starts.

    A ``ValueError`` too, so that pydantic, validating a scenario file into the configuration
    dataclasses, reports one raised in ``__post_init__`` with its location in the file.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        problems: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.message = message  # what was expected, without the place
        self.source = source
        self.key = key
        self.problems = problems or (((key, message),) if key else ())  # (key, message) each
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, *, source: str | None = None, key: str | None = None) -> ConfigError:
        """The same error placed elsewhere (a file, or a key path from a larger record)."""
        return ConfigError(self.message, source=source or self.source, key=key or self.key)


E = TypeVar("E", bound=BaseException)


def first_of(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` in ``exc``, looking inside (trio's) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_of(inner, kind)
            if found is not None:
                return found
    return None


@contextmanager
def key_prefix(prefix: str) -> Iterator[None]:
    """Re-raise a ``ConfigError`` from a nested record with ``prefix.`` before its key, so the
    key a user sees is the whole path (``profiles.UPDATE.delays.ack.p99``)."""
    try:
        yield
    except ConfigError as exc:
        raise exc.at(key=f"{prefix}.{exc.key}" if exc.key else prefix) from None


class ListenError(LoadgenError):
    """A server could not bind ``host:port`` (in use, not an address of this machine, no right).

    The runner turns it into a ``ConfigError`` naming the key (or flag) that chose the port."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"cannot listen on {shown}:{port}: {reason}")


class ProtocolError(LoadgenError):
    """An OpenGate message does not follow PROTOCOL.md; the message names the field path."""

    def __init__(
        self, field: str, expected: str, got: object = None, *, has_got: bool = True
    ) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        text = f"{field}: expected {expected}"
        if has_got:
            text += f", got {_show(got)}"
        super().__init__(text)


def _show(value: object) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return '"' + shown.replace('"', '\\"') + '"'
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class HTTPError(LoadgenError):
    """Base of HTTP framing errors."""


class RemoteProtocolError(HTTPError):
    """The peer broke HTTP/1.1. ``status`` is what a server answers (400, 413, 431, ...)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class LocalProtocolError(HTTPError):
    """We were asked to send something that is not valid HTTP/1.1 (a bug or a bad config)."""


class TransportError(LoadgenError):
    """One exchange failed on the network. ``kind`` names the counter it is recorded under."""

    kind = "transport"


class ConnectError(TransportError):
    kind = "connect"


class ConnectTimeout(TransportError):
    kind = "connect_timeout"


class ReadTimeout(TransportError):
    kind = "read_timeout"


class WriteTimeout(TransportError):
    kind = "write_timeout"


class ConnectionClosed(TransportError):
    """The peer closed or reset the connection before the answer was complete."""

    kind = "closed"


class TLSError(TransportError):
    kind = "tls"


class BadResponse(TransportError):
    """The peer's HTTP answer could not be parsed (wraps a RemoteProtocolError)."""

    kind = "bad_response"
