"""The fast parser's remembered header blocks (``parser._Blocks``): a block is validated and read
once, then found by its bytes; what it decides never depends on whether it was remembered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadgen.http import parser
from loadgen.http.parser import DECLINED, Request, RequestReader, Response, ResponseReader

BLOCK = b"Host: device\r\nContent-Type: application/json\r\nContent-Length: 2"


@pytest.fixture(autouse=True)
def cold() -> Iterator[None]:
    parser._BLOCKS.clear()
    yield
    parser._BLOCKS.clear()


def request(start_line: bytes, block: bytes = BLOCK, body: bytes = b"{}") -> Request | object:
    reader = RequestReader()
    reader.feed(start_line + b"\r\n" + block + b"\r\n\r\n" + body)
    return reader.next_request()


def test_each_start_line_is_its_own_with_a_remembered_block() -> None:
    first = request(b"POST /devices/a/operation HTTP/1.1")
    assert len(parser._BLOCKS) == 1
    second = request(b"PUT /devices/b/operation HTTP/1.1")
    assert len(parser._BLOCKS) == 1  # the same block: found, not read again
    assert isinstance(first, Request)
    assert isinstance(second, Request)
    assert (first.method, first.target) == (b"POST", b"/devices/a/operation")
    assert (second.method, second.target) == (b"PUT", b"/devices/b/operation")
    assert first.headers == second.headers == [
        (b"host", b"device"), (b"content-type", b"application/json"), (b"content-length", b"2"),
    ]  # fmt: skip
    assert first.body == second.body == b"{}"


def test_a_bad_start_line_is_declined_whatever_its_block() -> None:
    assert isinstance(request(b"POST /a HTTP/1.1"), Request)
    assert request(b"POST /a HTTP/1.0") is DECLINED  # h11's business
    assert request(b"POST /a b HTTP/1.1") is DECLINED
    assert request(b"POST  /a HTTP/1.1") is DECLINED


def test_a_declined_block_is_not_remembered_and_stays_declined() -> None:
    chunked = b"Host: device\r\nTransfer-Encoding: chunked"
    for _ in range(2):
        assert request(b"POST /a HTTP/1.1", chunked, b"0\r\n\r\n") is DECLINED
        assert request(b"POST /a HTTP/1.1", b"Host: device\r\nBad\x00: 1") is DECLINED
    assert len(parser._BLOCKS) == 0


def test_a_block_one_byte_off_is_judged_afresh() -> None:
    assert isinstance(request(b"POST /a HTTP/1.1"), Request)
    assert request(b"POST /a HTTP/1.1", BLOCK.replace(b"Type:", b"Type\x0b:")) is DECLINED
    hosts = request(b"POST /a HTTP/1.1", BLOCK + b"\r\nHost: other")
    assert hosts is DECLINED  # two Host headers: h11 refuses them
    longer = request(b"POST /a HTTP/1.1", BLOCK.replace(b"Length: 2", b"Length: 3"), b"{} ")
    assert isinstance(longer, Request)
    assert longer.body == b"{} "


def test_responses_share_the_remembered_blocks() -> None:
    block = b"Content-Type: application/json\r\nContent-Length: 2"
    reasons = []
    for status_line in (b"HTTP/1.1 201 Created", b"HTTP/1.1 200 OK", b"HTTP/1.1 202"):
        reader = ResponseReader()
        reader.feed(status_line + b"\r\n" + block + b"\r\n\r\n{}")
        response = reader.next_response()
        assert isinstance(response, Response)
        assert response.body == b"{}"
        reasons.append((response.status, response.reason))
    assert reasons == [(201, b"Created"), (200, b"OK"), (202, b"")]
    assert len(parser._BLOCKS) == 1


def test_at_most_max_cached_blocks_are_kept() -> None:
    for i in range(parser.MAX_CACHED_BLOCKS + 10):
        answer = request(b"POST /a HTTP/1.1", BLOCK + b"\r\nX-Request-Id: %d" % i)
        assert isinstance(answer, Request)
        assert answer.header(b"x-request-id") == b"%d" % i
        assert 1 <= len(parser._BLOCKS) <= parser.MAX_CACHED_BLOCKS
    assert len(parser._BLOCKS) == 10  # forgotten all at once at the bound, then filled again


def test_a_head_without_headers_is_declined_for_its_missing_host() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert reader.next_request() is DECLINED  # h11: "Missing mandatory Host: header"
    assert len(parser._BLOCKS) == 0


def test_a_long_block_is_read_every_time_not_remembered() -> None:
    long = BLOCK + b"\r\nX-Padding: " + b"p" * parser.MAX_CACHED_BLOCK_BYTES
    for _ in range(2):
        answer = request(b"POST /a HTTP/1.1", long)
        assert isinstance(answer, Request)
        assert answer.header(b"x-padding") == b"p" * parser.MAX_CACHED_BLOCK_BYTES
    assert len(parser._BLOCKS) == 0
