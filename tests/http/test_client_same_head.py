"""``_SameHead`` (an answer recognised by its head) and request heads rendered once per target."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import TinyHandler

from loadgen.errors import LocalProtocolError
from loadgen.http.client import Origin, _SameHead
from loadgen.http.parser import DECLINED, Response, ResponseReader

TinyServer = Callable[[TinyHandler], Awaitable[Origin]]

# --- _SameHead against the parser -----------------------------------------------------------------

CREATED = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"
CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"


def parsed(data: bytes, method: bytes = b"POST") -> Response | None:
    """What the fast parser makes of exactly ``data`` (None: not one whole answer)."""
    reader = ResponseReader()
    reader.feed(data)
    response = reader.next_response(method)
    if response is None or response is DECLINED or reader.buffered:
        return None
    assert isinstance(response, Response)
    return response


def fields(response: Response) -> tuple[object, ...]:
    return (
        response.status,
        response.reason,
        response.headers,
        response.body,
        response.keep_alive,
        type(response.body),
    )


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
BARE = b"HTTP/1.1 200 OK\r\n\r\n"
OTHER_LENGTH = CREATED.replace(b"7", b"8")
OTHER_TYPE = CREATED.replace(b"json", b"jsox")
OTHER_STATUS = b"HTTP/1.1 500 Oops\r\n" + CREATED[22:]
#: (id, first answer, next read, request method, whether the next read is recognised)
SAME_HEAD_CASES = [
    ("same-head", CREATED + b'{"a":1}', CREATED + b'{"b":2}', b"POST", True),
    ("connection-close", CLOSING + b"ok", CLOSING + b"no", b"POST", True),
    ("no-body", NO_CONTENT, NO_CONTENT, b"POST", True),
    ("no-headers", BARE, BARE, b"HEAD", True),
    ("short", CREATED + b'{"a":1}', CREATED + b'{"a":1', b"POST", False),
    ("extra", CREATED + b'{"a":1}', CREATED + b'{"a":1}H', b"POST", False),
    ("other-length", CREATED + b'{"a":1}', OTHER_LENGTH + b'{"a":12}', b"POST", False),
    ("other-head", CREATED + b'{"a":1}', OTHER_TYPE + b'{"a":1}', b"POST", False),
    ("other-status", CREATED + b'{"a":1}', OTHER_STATUS + b'{"a":1}', b"POST", False),
]


@pytest.mark.parametrize(
    ("first", "then", "method", "hit"),
    [case[1:] for case in SAME_HEAD_CASES],
    ids=[case[0] for case in SAME_HEAD_CASES],
)
def test_same_head_cuts_what_the_parser_would(
    first: bytes, then: bytes, method: bytes, hit: bool
) -> None:
    learned = parsed(first, method)
    assert learned is not None
    same = _SameHead(method, first, learned)
    cut = same.cut(then)
    assert (cut is not None) is hit
    if cut is not None:
        expected = parsed(then, method)
        assert expected is not None
        assert fields(cut) == fields(expected)
    assert same.cut(bytearray(first)) is not None  # what a TLS stream returns


# --- request heads rendered once per target --------------------------------------------------------


def test_post_renders_what_the_template_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    import loadgen.http.client as client

    monkeypatch.setattr(client, "MAX_CACHED_TARGETS", 2)
    pool = client.ConnectionPool(headers=[(b"X-ApiKey", b"k")])
    origin_pool = pool._origin_pool(Origin("http", "example.com", 8080))
    for target in (b"/a", b"/b", b"/a", b"/c", b"/b?x=1"):  # the cache fills and starts anew
        for body in (b"", b"{}", b"%d%s" * 50):
            assert origin_pool.post(target, body) == origin_pool.template.render(target, body)
    for _ in range(2):  # a bad target is refused every time, never cached
        with pytest.raises(LocalProtocolError):
            origin_pool.post(b" /a", b"{}")
