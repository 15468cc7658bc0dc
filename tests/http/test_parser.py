"""Table-driven tests of the fast-path HTTP/1.1 parser (in the manner of h11's SIMPLE_CASES).

Each case is the bytes a peer sends (one or more ``feed`` calls) and every result the reader hands
out while it is drained after each feed: complete messages with their exact fields, ``None`` (more
bytes needed) or ``DECLINED`` (the buffer, left intact, goes to h11). The same tables feed the
differential test against h11 in ``test_parser_differential.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pytest

from loadgen.errors import RemoteProtocolError
from loadgen.http.parser import (
    DECLINED,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    Declined,
    Request,
    RequestReader,
    Response,
    ResponseReader,
)

Headers = list[tuple[bytes, bytes]]


class Req(NamedTuple):
    method: bytes
    target: bytes
    headers: Headers
    body: bytes = b""
    keep_alive: bool = True


class Resp(NamedTuple):
    status: int
    reason: bytes
    headers: Headers
    body: bytes = b""
    keep_alive: bool = True


Outcome = Req | Resp | Declined | None


def as_outcome(result: Request | Response | Declined | None) -> Outcome:
    """The comparable form of whatever a reader returned."""
    if isinstance(result, Request):
        return Req(result.method, result.target, result.headers, result.body, result.keep_alive)
    if isinstance(result, Response):
        return Resp(result.status, result.reason, result.headers, result.body, result.keep_alive)
    return result


@dataclass(frozen=True)
class Case:
    """``chunks`` are fed one at a time; ``expected`` lists every result of draining after each.

    ``rest`` is what ``take_buffer()`` must return after DECLINED (default: every byte fed).
    """

    id: str
    chunks: tuple[bytes, ...]
    expected: tuple[Outcome, ...]
    rest: bytes | None = None

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def case(
    id: str, data: bytes | Sequence[bytes], *expected: Outcome, rest: bytes | None = None
) -> Case:
    chunks = (data,) if isinstance(data, bytes) else tuple(data)
    return Case(id, chunks, expected, rest)


def drain(
    next_message: Callable[[], Request | Response | Declined | None],
    feed: Callable[[bytes], None],
    chunks: Sequence[bytes],
) -> list[Outcome]:
    """Feed each chunk, then take results until None or DECLINED (where a caller would stop)."""
    results: list[Outcome] = []
    for chunk in chunks:
        feed(chunk)
        while True:
            result = next_message()
            results.append(as_outcome(result))
            if result is None:
                break
            if result is DECLINED:
                return results
    return results


# --- requests ------------------------------------------------------------------------------------

JSON_BODY = b'{"operation":{"request":{"name":"REFRESH_INFO","timestamp":1700000000000}}}'
POST_PATH = b"/south/v80/devices/dev-0001/operation/request"
OPENGATE_POST = (
    b"POST " + POST_PATH + b" HTTP/1.1\r\n"
    b"Host: gate.example:1123\r\n"
    b"Content-Type: application/json\r\n"
    b"X-ApiKey: 0123-abcd\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(JSON_BODY)
) + JSON_BODY
OPENGATE_POST_REQ = Req(
    b"POST",
    POST_PATH,
    [
        (b"host", b"gate.example:1123"),
        (b"content-type", b"application/json"),
        (b"x-apikey", b"0123-abcd"),
        (b"content-length", b"%d" % len(JSON_BODY)),
    ],
    JSON_BODY,
)
GET = b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
GET_REQ = Req(b"GET", b"/health?x=1", [(b"host", b"a")])
SMALL_POST = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
SMALL_POST_REQ = Req(b"POST", b"/p", [(b"host", b"a"), (b"content-length", b"3")], b"abc")


def post(*header_lines: bytes, body: bytes = b"abc") -> bytes:
    """A POST to /p whose head is the given header lines (no CRLF), then ``body``."""
    return (
        b"POST /p HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in header_lines) + b"\r\n" + body
    )


REQUEST_CASES: list[Case] = [
    case("opengate-post", OPENGATE_POST, OPENGATE_POST_REQ, None),
    case("get-no-body", GET, GET_REQ, None),
    case("empty-buffer", b"", None),
    *(
        case(
            f"content-length-{spelling.decode()}",
            post(b"Host: a", spelling + b": 3"),
            Req(b"POST", b"/p", [(b"host", b"a"), (b"content-length", b"3")], b"abc"),
            None,
        )
        for spelling in (b"content-length", b"CONTENT-LENGTH", b"Content-Length", b"cOnTeNt-LeNgTh")
    ),
    case(
        "host-case",
        b"GET / HTTP/1.1\r\nHOST: a\r\n\r\n",
        Req(b"GET", b"/", [(b"host", b"a")]),
        None,
    ),
    case(
        "ows-around-values",
        post(b"Host:a", b"Content-Length: \t 3 \t", b"X-A:\t spaced  inside \t"),
        Req(
            b"POST",
            b"/p",
            [(b"host", b"a"), (b"content-length", b"3"), (b"x-a", b"spaced  inside")],
            b"abc",
        ),
        None,
    ),
    case(
        "empty-header-values",
        post(b"Host: a", b"X-Empty:", b"X-Blank:  \t ", b"Content-Length: 3"),
        Req(
            b"POST",
            b"/p",
            [(b"host", b"a"), (b"x-empty", b""), (b"x-blank", b""), (b"content-length", b"3")],
            b"abc",
        ),
        None,
    ),
    case(
        "value-bytes-h11-allows",
        b"GET / HTTP/1.1\r\nHost: a\r\nCookie: \x01\x08\x7f\x80\xff x\r\n\r\n",
        Req(b"GET", b"/", [(b"host", b"a"), (b"cookie", b"\x01\x08\x7f\x80\xff x")]),
        None,
    ),
    case(
        "token-method-and-target",
        b"M-SEARCH! *?a=%20&b=~#f HTTP/1.1\r\nHost: a\r\n\r\n",
        Req(b"M-SEARCH!", b"*?a=%20&b=~#f", [(b"host", b"a")]),
        None,
    ),
    case(
        "empty-host",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        Req(b"GET", b"/", [(b"host", b"")]),
        None,
    ),
    case(
        "content-length-zero",
        post(b"Host: a", b"Content-Length: 0", body=b""),
        Req(b"POST", b"/p", [(b"host", b"a"), (b"content-length", b"0")]),
        None,
    ),
    case(
        "content-length-leading-zeros",
        post(b"Host: a", b"Content-Length: 003"),
        Req(b"POST", b"/p", [(b"host", b"a"), (b"content-length", b"003")], b"abc"),
        None,
    ),
    case(
        "connection-close",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Req(b"GET", b"/", [(b"host", b"a"), (b"connection", b"close")], keep_alive=False),
        None,
    ),
    case(
        "connection-keep-alive-comma-Close",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
        Req(
            b"GET", b"/", [(b"host", b"a"), (b"connection", b"keep-alive, Close")], keep_alive=False
        ),
        None,
    ),
    case(
        "connection-close-after-tab",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive,\tclose\r\n\r\n",
        Req(
            b"GET",
            b"/",
            [(b"host", b"a"), (b"connection", b"keep-alive,\tclose")],
            keep_alive=False,
        ),
        None,
    ),
    case(
        "connection-close-in-second-header",
        b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: a\r\nConnection: ,CLOSE \r\n\r\n",
        Req(
            b"GET",
            b"/",
            [(b"connection", b"keep-alive"), (b"host", b"a"), (b"connection", b",CLOSE")],
            keep_alive=False,
        ),
        None,
    ),
    case(
        "connection-close-then-keep-alive",
        b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        Req(
            b"GET",
            b"/",
            [(b"connection", b"close"), (b"host", b"a"), (b"connection", b"keep-alive")],
            keep_alive=False,
        ),
        None,
    ),
    case(
        "connection-keep-alive",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, closed\r\n\r\n",
        Req(b"GET", b"/", [(b"host", b"a"), (b"connection", b"keep-alive, closed")]),
        None,
    ),
    case(
        "proxy-connection-is-not-connection",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
        Req(b"GET", b"/", [(b"host", b"a"), (b"proxy-connection", b"close")]),
        None,
    ),
    case(
        "pipelined-two",
        GET + SMALL_POST,
        GET_REQ,
        SMALL_POST_REQ,
        None,
    ),
    case(
        "pipelined-three",
        OPENGATE_POST + GET + SMALL_POST,
        OPENGATE_POST_REQ,
        GET_REQ,
        SMALL_POST_REQ,
        None,
    ),
    case(
        "pipelined-third-partial",
        GET + SMALL_POST + GET[:10],
        GET_REQ,
        SMALL_POST_REQ,
        None,
    ),
    case(
        "pipelined-then-declined",
        GET + b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        GET_REQ,
        DECLINED,
        rest=b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    case("partial-head-then-rest", (GET[:9], GET[9:]), None, GET_REQ, None),
    case(
        "head-split-inside-crlf-crlf",
        (SMALL_POST[:-6], SMALL_POST[-6:-4], SMALL_POST[-4:]),
        None,
        None,
        SMALL_POST_REQ,
        None,
    ),
    case(
        "partial-body-then-rest",
        (OPENGATE_POST[:-10], OPENGATE_POST[-10:]),
        None,
        OPENGATE_POST_REQ,
        None,
    ),
    case(
        "body-then-next-head-partial",
        (SMALL_POST + GET[:5], GET[5:]),
        SMALL_POST_REQ,
        None,
        GET_REQ,
        None,
    ),
    # Declined: h11 handles these (or raises the precise error).
    case(
        "chunked",
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        DECLINED,
    ),
    case(
        "expect-100-continue",
        post(b"Host: a", b"Expect: 100-continue", b"Content-Length: 3"),
        DECLINED,
    ),
    case(
        "upgrade",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        DECLINED,
    ),
    case("http-1.0", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", DECLINED),
    case("http-1.0-no-host", b"GET / HTTP/1.0\r\n\r\n", DECLINED),
    case("http-2.0-start-line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", DECLINED),
    case("missing-host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", DECLINED),
    case("no-headers-at-all", b"GET / HTTP/1.1\r\n\r\n", DECLINED),
    case("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", DECLINED),
    case(
        "duplicate-content-length",
        post(b"Host: a", b"Content-Length: 3", b"Content-Length: 3"),
        DECLINED,
    ),
    case("content-length-list", post(b"Host: a", b"Content-Length: 3, 3"), DECLINED),
    case("content-length-sign", post(b"Host: a", b"Content-Length: +3"), DECLINED),
    case("content-length-inner-space", post(b"Host: a", b"Content-Length: 1 3"), DECLINED),
    case("content-length-empty", post(b"Host: a", b"Content-Length:"), DECLINED),
    case("content-length-21-digits", post(b"Host: a", b"Content-Length: " + b"0" * 21), DECLINED),
    case("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n", DECLINED),
    case("bare-lf-line-ends", b"GET / HTTP/1.1\nHost: a\n\n", DECLINED),
    case("bare-lf-one-line", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", DECLINED),
    case("bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: a\n\r\n", DECLINED),
    case("bare-lf-partial-head", b"GET / HTTP/1.1\r\nHost: a\n\n", DECLINED),
    case("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", DECLINED),
    case("leading-crlf", b"\r\n" + GET, DECLINED),
    case("leading-space", b" " + GET, DECLINED),
    case("garbage-start-line", b"HELLO THERE\r\nHost: a\r\n\r\n", DECLINED),
    case("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", DECLINED),
    case("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", DECLINED),
    case("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", DECLINED),
    case("vertical-tab-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", DECLINED),
    case("double-space-start-line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", DECLINED),
    case("lowercase-http-version", b"GET / http/1.1\r\nHost: a\r\n\r\n", DECLINED),
]


@pytest.mark.parametrize("c", REQUEST_CASES, ids=lambda c: c.id)
def test_request_cases(c: Case) -> None:
    reader = RequestReader()
    assert drain(reader.next_request, reader.feed, c.chunks) == list(c.expected)
    if c.expected[-1] is DECLINED:
        assert reader.next_request() is DECLINED  # declining consumes nothing
        assert reader.take_buffer() == (c.data if c.rest is None else c.rest)
        assert reader.buffered == 0


# --- responses -----------------------------------------------------------------------------------

CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
CREATED_RESP = Resp(201, b"Created", [(b"content-length", b"0")])
OK_JSON = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(JSON_BODY)
) + JSON_BODY
OK_JSON_RESP = Resp(
    200,
    b"OK",
    [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(JSON_BODY))],
    JSON_BODY,
)


def ok(*header_lines: bytes, body: bytes = b"abc", status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\n"
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"\r\n"
        + body
    )


RESPONSE_CASES: list[Case] = [
    case("opengate-201", CREATED, CREATED_RESP, None),
    case("json-200", OK_JSON, OK_JSON_RESP, None),
    *(
        case(
            f"content-length-{spelling.decode()}",
            ok(spelling + b": 3"),
            Resp(200, b"OK", [(b"content-length", b"3")], b"abc"),
            None,
        )
        for spelling in (b"content-length", b"CONTENT-LENGTH", b"Content-Length")
    ),
    case(
        "ows-and-empty-values",
        ok(b"Content-Length:\t3 ", b"Server:", b"X-A:  a b  "),
        Resp(
            200,
            b"OK",
            [(b"content-length", b"3"), (b"server", b""), (b"x-a", b"a b")],
            b"abc",
        ),
        None,
    ),
    case(
        "reason-with-spaces-and-obs-text",
        ok(b"Content-Length: 3", status=b"404 Not \x80 Found \t"),
        Resp(404, b"Not \x80 Found \t", [(b"content-length", b"3")], b"abc"),
        None,
    ),
    case(
        "no-reason",
        ok(b"Content-Length: 3", status=b"500"),
        Resp(500, b"", [(b"content-length", b"3")], b"abc"),
        None,
    ),
    case(
        "empty-reason",
        ok(b"Content-Length: 3", status=b"500 "),
        Resp(500, b"", [(b"content-length", b"3")], b"abc"),
        None,
    ),
    case(
        "status-999",
        ok(b"Content-Length: 3", status=b"999 Odd"),
        Resp(999, b"Odd", [(b"content-length", b"3")], b"abc"),
        None,
    ),
    case(
        "connection-close",
        ok(b"Connection: close", b"Content-Length: 3"),
        Resp(200, b"OK", [(b"connection", b"close"), (b"content-length", b"3")], b"abc", False),
        None,
    ),
    case(
        "connection-keep-alive-comma-Close",
        ok(b"Connection: keep-alive, Close", b"Content-Length: 3"),
        Resp(
            200,
            b"OK",
            [(b"connection", b"keep-alive, Close"), (b"content-length", b"3")],
            b"abc",
            False,
        ),
        None,
    ),
    case(
        "204-no-body",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        Resp(204, b"No Content", []),
        None,
    ),
    case(
        "204-content-length-ignored",
        CREATED.replace(b"201 Created", b"204 No Content").replace(b": 0", b": 7") + CREATED,
        Resp(204, b"No Content", [(b"content-length", b"7")]),
        CREATED_RESP,
        None,
    ),
    case(
        "304-no-body",
        b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 12\r\n\r\n',
        Resp(304, b"Not Modified", [(b"etag", b'"x"'), (b"content-length", b"12")]),
        None,
    ),
    case("pipelined-two", CREATED + OK_JSON, CREATED_RESP, OK_JSON_RESP, None),
    case(
        "pipelined-three",
        OK_JSON + CREATED + OK_JSON,
        OK_JSON_RESP,
        CREATED_RESP,
        OK_JSON_RESP,
        None,
    ),
    case("partial-head-then-rest", (OK_JSON[:20], OK_JSON[20:]), None, OK_JSON_RESP, None),
    case(
        "partial-body-then-rest",
        (OK_JSON[:-1], OK_JSON[-1:] + CREATED),
        None,
        OK_JSON_RESP,
        CREATED_RESP,
        None,
    ),
    case(
        "pipelined-then-declined",
        CREATED + b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        CREATED_RESP,
        DECLINED,
        rest=b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    ),
    # Declined.
    case("no-content-length", b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil close", DECLINED),
    case("chunked", ok(b"Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"), DECLINED),
    case("100-continue", b"HTTP/1.1 100 Continue\r\n\r\n" + CREATED, DECLINED),
    case("101-switching", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", DECLINED),
    case("status-099", ok(b"Content-Length: 3", status=b"099 Low"), DECLINED),
    case("http-1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", DECLINED),
    case("duplicate-content-length", ok(b"Content-Length: 3", b"Content-Length: 3"), DECLINED),
    case("content-length-list", ok(b"Content-Length: 3, 3"), DECLINED),
    case(
        "204-content-length-list",
        ok(b"Content-Length: 0, 0", status=b"204 No Content", body=b""),
        DECLINED,
    ),
    case(
        "204-content-length-21-digits",
        ok(b"Content-Length: " + b"0" * 21, status=b"204 No Content", body=b""),
        DECLINED,
    ),
    case("upgrade-header", ok(b"Upgrade: h2c", b"Content-Length: 3"), DECLINED),
    case("obs-fold", ok(b"Content-Length: 3", b"X: a", b"\tb"), DECLINED),
    case("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", DECLINED),
    case("leading-crlf", b"\r\n" + CREATED, DECLINED),
    case("garbage-start-line", b"ICY 200 OK\r\nContent-Length: 3\r\n\r\nabc", DECLINED),
    case("two-digit-status", ok(b"Content-Length: 3", status=b"20 OK"), DECLINED),
    case("reason-without-space", ok(b"Content-Length: 3", status=b"200OK"), DECLINED),
]


@pytest.mark.parametrize("c", RESPONSE_CASES, ids=lambda c: c.id)
def test_response_cases(c: Case) -> None:
    reader = ResponseReader()
    assert drain(reader.next_response, reader.feed, c.chunks) == list(c.expected)
    if c.expected[-1] is DECLINED:
        assert reader.next_response() is DECLINED
        assert reader.take_buffer() == (c.data if c.rest is None else c.rest)
        assert reader.buffered == 0


# --- limits --------------------------------------------------------------------------------------

BIG_HEAD = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 200 + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("reader_type", "head"),
    [
        (RequestReader, BIG_HEAD),
        (
            ResponseReader,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: " + b"x" * 200 + b"\r\n\r\n",
        ),
    ],
    ids=["request", "response"],
)
@pytest.mark.parametrize("complete", [True, False], ids=["complete-head", "incomplete-head"])
def test_head_over_max_head_is_431(
    reader_type: type[RequestReader] | type[ResponseReader], head: bytes, complete: bool
) -> None:
    max_head = 100
    reader = reader_type(max_head=max_head)
    reader.feed(head if complete else head[: max_head + 1])
    next_message = (
        reader.next_request if isinstance(reader, RequestReader) else reader.next_response
    )
    with pytest.raises(RemoteProtocolError) as info:
        next_message()
    assert info.value.status == 431


def test_head_of_exactly_max_head_is_accepted() -> None:
    reader = RequestReader(max_head=len(BIG_HEAD))
    reader.feed(BIG_HEAD)
    assert as_outcome(reader.next_request()) == Req(
        b"GET", b"/", [(b"host", b"a"), (b"x-big", b"x" * 200)]
    )


def test_head_one_byte_over_max_head_is_431() -> None:
    reader = RequestReader(max_head=len(BIG_HEAD) - 1)
    reader.feed(BIG_HEAD)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_request()
    assert info.value.status == 431


def test_incomplete_head_at_max_head_waits() -> None:
    reader = RequestReader(max_head=50)
    reader.feed(BIG_HEAD[:50])
    assert reader.next_request() is None


def test_default_limits() -> None:
    reader = RequestReader()
    assert (reader.max_head, reader.max_body) == (DEFAULT_MAX_HEAD, DEFAULT_MAX_BODY)


@pytest.mark.parametrize(
    ("reader_type", "data"),
    [
        (RequestReader, post(b"Host: a", b"Content-Length: 11", body=b"")),
        (ResponseReader, ok(b"Content-Length: 11", body=b"")),
        (RequestReader, post(b"Host: a", b"Content-Length: " + b"9" * 20, body=b"")),
    ],
    ids=["request", "response", "request-20-digits"],
)
def test_content_length_over_max_body_is_413(
    reader_type: type[RequestReader] | type[ResponseReader], data: bytes
) -> None:
    reader = reader_type(max_body=10)
    reader.feed(data)  # the head alone is enough: the declared length is checked, not the bytes
    next_message = (
        reader.next_request if isinstance(reader, RequestReader) else reader.next_response
    )
    with pytest.raises(RemoteProtocolError) as info:
        next_message()
    assert info.value.status == 413


def test_content_length_at_max_body_is_accepted() -> None:
    reader = RequestReader(max_body=3)
    reader.feed(SMALL_POST)
    assert as_outcome(reader.next_request()) == SMALL_POST_REQ


def test_no_body_limit_for_204() -> None:
    reader = ResponseReader(max_body=10)
    reader.feed(ok(b"Content-Length: 11", status=b"204 No Content", body=b""))
    assert as_outcome(reader.next_response()) == Resp(
        204, b"No Content", [(b"content-length", b"11")]
    )


# --- the message objects -------------------------------------------------------------------------


def test_header_lookup_returns_last_value() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    request = reader.next_request()
    assert isinstance(request, Request)
    assert request.header(b"x-a") == b"2"
    assert request.header(b"host") == b"a"
    assert request.header(b"missing") is None


def test_reprs_show_state() -> None:
    reader = RequestReader()
    reader.feed(SMALL_POST)
    assert repr(reader.next_request()) == (
        "Request(POST /p, 2 headers, 3 body bytes, keep_alive=True)"
    )
    responses = ResponseReader()
    responses.feed(CREATED)
    assert repr(responses.next_response()) == (
        "Response(201, 1 headers, 0 body bytes, keep_alive=True)"
    )
    assert repr(DECLINED) == "DECLINED"


def test_buffered_counts_unconsumed_bytes() -> None:
    reader = RequestReader()
    reader.feed(GET + GET[:7])
    assert reader.buffered == len(GET) + 7
    assert as_outcome(reader.next_request()) == GET_REQ
    assert reader.buffered == 7
    assert reader.next_request() is None
    assert reader.take_buffer() == GET[:7]
