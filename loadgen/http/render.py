"""Pre-rendered HTTP/1.1 heads for the fast path (pure: bytes in, bytes out).

A load generator sends the same request shape and answers with the same few response shapes
millions of times, so the constant part of every head is rendered once and cached; per message
only the length and the body are joined on.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

from loadgen.errors import LocalProtocolError

__all__ = ["RequestTemplate", "reason_phrase", "render_error", "render_response"]

JSON: Final = b"application/json"
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_HEADS: dict[tuple[int, bytes, bool, bytes], tuple[bytes, bool]] = {}


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _check_header(name: bytes, value: bytes) -> None:
    if not name or any(c in name for c in b" \t\r\n:") or any(c in value for c in b"\r\n\x00"):
        raise LocalProtocolError(f"illegal header {name!r}: {value!r}")


def _render_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    out = []
    for name, value in headers:
        _check_header(name, value)
        out.append(name + b": " + value + b"\r\n")
    return b"".join(out)


def _head(status: int, content_type: bytes, keep_alive: bool, extra: bytes) -> tuple[bytes, bool]:
    key = (status, content_type, keep_alive, extra)
    cached = _HEADS.get(key)
    if cached is not None:
        return cached
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"status code {status} is not 3 digits")
    has_body = status not in _NO_BODY_STATUSES and status >= 200
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)), extra]
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    if has_body:
        if content_type:
            parts.append(b"Content-Type: " + content_type + b"\r\n")
        parts.append(b"Content-Length: ")
    head = (b"".join(parts), has_body)
    if len(_HEADS) < 1024:  # shapes are few; never grow without bound on odd inputs
        _HEADS[key] = head
    return head


def render_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = JSON,
    keep_alive: bool = True,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """The full bytes of a response. An empty body gets ``Content-Length: 0`` and no type;
    204 and 304 get no framing header and no body, as RFC 9110 requires."""
    extra = _render_headers(headers) if headers else b""
    head, has_body = _head(status, content_type if body else b"", keep_alive, extra)
    if not has_body:
        if body:
            raise LocalProtocolError(f"a {status} response cannot carry a body")
        return head + b"\r\n"
    return b"%s%d\r\n\r\n%s" % (head, len(body), body)


def render_error(status: int, message: str) -> bytes:
    """A plain-text error answer that closes the connection (framing can no longer be trusted)."""
    text = message.encode("utf-8", "replace") + b"\n"
    return render_response(
        status, text, content_type=b"text/plain; charset=utf-8", keep_alive=False
    )


class RequestTemplate:
    """Pre-rendered request head for one origin: only the target and the body vary per request."""

    __slots__ = ("_headers", "_method", "host")

    def __init__(
        self,
        method: bytes,
        host: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        content_type: bytes = JSON,
    ) -> None:
        if not method.isalpha():
            raise LocalProtocolError(f"illegal method {method!r}")
        fixed = [(b"Host", host)]
        if content_type:
            fixed.append((b"Content-Type", content_type))
        self._method = method + b" "
        self.host = host
        self._headers = b" HTTP/1.1\r\n" + _render_headers([*fixed, *headers]) + b"Content-Length: "

    def render(self, target: bytes, body: bytes = b"") -> bytes:
        if not target or any(c <= 0x20 or c == 0x7F for c in target[:1]):
            raise LocalProtocolError(f"illegal request target {target!r}")
        return b"%s%s%s%d\r\n\r\n%s" % (self._method, target, self._headers, len(body), body)

    def __repr__(self) -> str:
        return f"RequestTemplate({self._method.decode().strip()} Host: {self.host.decode()})"
