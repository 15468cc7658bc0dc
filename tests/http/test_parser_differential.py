"""Differential tests: the fast-path parser against h11, the oracle.

The same bytes go to the fast path and to h11. Whatever the fast path accepts, h11 must accept with
the same fields; where the fast path declines, h11 given the untouched buffer must carry on exactly
where the fast path stopped. Every input is tried in one feed, in every two-feed split and one byte
at a time, because a parser that keeps state across feeds (the CRLF CRLF scan) must not depend on
where the network cut the stream.

Both sides are driven the way the project drives them: the server stops reading after a request
that does not keep the connection alive, the client after such a response; h11 is driven through a
whole cycle (an answer is sent and ``start_next_cycle`` called) between pipelined messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parser import REQUEST_CASES, RESPONSE_CASES, Req, Resp, as_outcome

from loadgen.errors import RemoteProtocolError
from loadgen.http import parser
from loadgen.http.parser import DECLINED, Declined, Request, RequestReader, Response, ResponseReader

# Limits out of the way: the differential is about grammar and framing (test_parser checks limits).
NO_LIMIT = 10**21  # above any 20-digit Content-Length

PROFILE = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Message = Req | Resp


class Parsed(NamedTuple):
    """Complete messages in order, then how the stream ended.

    ``end`` is "need-data" (waiting for more bytes), "closed" (the last message ends the
    connection; nothing after it is read), "error" (h11 rejects the stream), "paused" (h11 switched
    protocols) or "declined" (the fast path handed the rest over; ``rest`` is the handed-over bytes).
    """

    messages: list[Message]
    end: str
    rest: bytes = b""


# --- the oracle ----------------------------------------------------------------------------------


def h11_keep_alive(event: h11.Request | h11.Response) -> bool:
    """h11's rule (``h11._connection._keep_alive``): no ``close`` token and HTTP/1.1 or later."""
    tokens = [
        token.strip().lower()
        for name, value in event.headers
        if name == b"connection"
        for token in value.split(b",")
    ]
    return b"close" not in tokens and event.http_version >= b"1.1"


def _h11_messages(
    conn: h11.Connection,
    data: bytes,
    complete: Callable[[h11.Request | h11.Response, bytes], Message],
) -> Parsed:
    """Drive ``conn`` over ``data``; ``complete`` turns a head and its body into a message."""
    if data:  # receive_data(b"") would mean EOF
        conn.receive_data(data)
    messages: list[Message] = []
    head: h11.Request | h11.Response | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return Parsed(messages, "error")
        if event is h11.NEED_DATA:
            return Parsed(messages, "need-data")
        if event is h11.PAUSED:
            return Parsed(messages, "paused")
        if isinstance(event, h11.Request | h11.Response):
            head, body = event, bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            if conn.their_state in (h11.DONE, h11.MUST_CLOSE):  # our rule is h11's
                assert (conn.their_state is h11.MUST_CLOSE) == (not h11_keep_alive(head))
            message = complete(head, bytes(body))
            messages.append(message)
            if not message.keep_alive:
                return Parsed(messages, "closed")
        else:
            assert isinstance(event, h11.InformationalResponse), event


def h11_parse_request(data: bytes) -> Parsed:
    """What an h11 server makes of ``data``; it answers each request so pipelining goes on."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=NO_LIMIT)

    def complete(head: h11.Request | h11.Response, body: bytes) -> Message:
        assert isinstance(head, h11.Request)
        message = Req(head.method, head.target, list(head.headers), body, h11_keep_alive(head))
        if message.keep_alive:
            # 404: neither a 101 nor a 2xx, so an Upgrade or CONNECT proposal is refused.
            conn.send(h11.Response(status_code=404, headers=[(b"content-length", b"0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        return message

    return _h11_messages(conn, data, complete)


def h11_parse_response(data: bytes, request_method: bytes = b"POST") -> Parsed:
    """What an h11 client that sent ``request_method`` requests makes of the answers in ``data``."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=NO_LIMIT)

    def send_request() -> None:
        conn.send(h11.Request(method=request_method, target=b"/", headers=[(b"host", b"a")]))
        conn.send(h11.EndOfMessage())

    def complete(head: h11.Request | h11.Response, body: bytes) -> Message:
        assert isinstance(head, h11.Response)
        message = Resp(
            head.status_code, head.reason, list(head.headers), body, h11_keep_alive(head)
        )
        if message.keep_alive:
            conn.start_next_cycle()
            send_request()
        return message

    send_request()
    return _h11_messages(conn, data, complete)


# --- the fast path and the comparison -------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One direction: how to make a reader, take its next message and ask h11 the same question."""

    name: str
    new_reader: Callable[[], RequestReader | ResponseReader]
    next_message: Callable[[RequestReader | ResponseReader], Request | Response | Declined | None]
    h11_parse: Callable[[bytes], Parsed]
    _h11_cache: dict[bytes, Parsed] = field(default_factory=dict, compare=False, repr=False)

    def h11(self, data: bytes) -> Parsed:
        if data not in self._h11_cache:
            self._h11_cache[data] = self.h11_parse(data)
        return self._h11_cache[data]

    def fast(self, chunks: Sequence[bytes]) -> Parsed:
        """Feed the chunks in turn, draining after each, and stop where the caller would."""
        reader = self.new_reader()
        messages: list[Message] = []
        for i, chunk in enumerate(chunks):
            reader.feed(chunk)
            while (result := self.next_message(reader)) is not None:
                if result is DECLINED:
                    rest = reader.take_buffer() + b"".join(chunks[i + 1 :])
                    return Parsed(messages, "declined", rest)
                message = as_outcome(result)
                assert isinstance(message, Req | Resp)
                messages.append(message)
                if not message.keep_alive:
                    return Parsed(messages, "closed")
        return Parsed(messages, "need-data")


REQUESTS = Side(
    "request",
    lambda: RequestReader(max_head=NO_LIMIT, max_body=NO_LIMIT),
    lambda reader: reader.next_request(),  # type: ignore[union-attr]
    h11_parse_request,
)


def response_side(request_method: bytes) -> Side:
    return Side(
        f"response-to-{request_method.decode()}",
        lambda: ResponseReader(max_head=NO_LIMIT, max_body=NO_LIMIT),
        lambda reader: reader.next_response(request_method=request_method),  # type: ignore[union-attr]
        lambda data: h11_parse_response(data, request_method),
    )


RESPONSES = {method: response_side(method) for method in (b"POST", b"GET", b"HEAD", b"CONNECT")}


def feeds(data: bytes) -> Iterator[tuple[bytes, ...]]:
    """One feed, every split into two feeds (empty halves included), one byte at a time."""
    yield (data,)
    for cut in range(len(data) + 1):
        yield data[:cut], data[cut:]
    yield tuple(data[i : i + 1] for i in range(len(data)))


def check_differential(side: Side, data: bytes, *, prefixes: bool = False) -> None:
    """The fast path agrees with h11 on ``data`` however it is cut into feeds.

    With ``prefixes``, every prefix of ``data`` (what a reader has seen after a first feed) is
    held to the same standard, so that "waiting for more" is checked where h11 already knows.
    """
    side._h11_cache.clear()  # h11's answers are memoised for one input's splits and hand-offs
    parser._BLOCKS.clear()  # the whole is read by the grammar, the splits by remembered blocks
    whole = side.fast([data])
    for chunks in feeds(data):
        # How the network cut the stream must not change what the fast path makes of it.
        assert side.fast(chunks) == whole, chunks
    agree_with_h11(side, data, whole)
    if prefixes:
        for cut in range(len(data)):
            agree_with_h11(side, data[:cut], side.fast([data[:cut]]))


def agree_with_h11(side: Side, data: bytes, got: Parsed) -> None:
    """The contract: what the fast path made of ``data`` is what h11 makes of it, or a prefix of
    it followed by DECLINED at a message boundary, where h11 takes over."""
    oracle = side.h11(data)
    accepted = len(got.messages)
    # Everything the fast path accepted, h11 accepted first, with the same fields.
    assert got.messages == oracle.messages[:accepted]
    if got.end == "declined":
        # The buffer is intact and starts at a message boundary: h11, handed exactly the rest,
        # carries on where the fast path stopped (and h11 alone on the consumed part is done).
        assert data.endswith(got.rest)
        consumed = data[: len(data) - len(got.rest)]
        assert side.h11(consumed) == Parsed(got.messages, "need-data")
        assert side.h11(got.rest) == Parsed(oracle.messages[accepted:], oracle.end)
    else:
        # Waiting for more (or done with the connection) exactly when h11 is, never when h11
        # has found an error, switched protocols or completed a message the fast path has not.
        assert got == Parsed(oracle.messages, oracle.end)


# --- the corpus ----------------------------------------------------------------------------------

EXTRA_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: \x0cb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n",
    b"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999999\r\n\r\n",
    b"\n" + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\n\r\n",
    b"\x00",
    b" GET / HTTP/1.1",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive,\tclose\t\r\n\r\nGET / HTTP/1.1\r\n",
]

EXTRA_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 00000000000000000005\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 000000000000000000005\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nbody",
]


def _ids(corpus: Sequence[bytes]) -> list[str]:
    return [f"{i}-{data[:24]!r}" for i, data in enumerate(corpus)]


REQUEST_CORPUS = [c.data for c in REQUEST_CASES] + EXTRA_REQUESTS
RESPONSE_CORPUS = [c.data for c in RESPONSE_CASES] + EXTRA_RESPONSES


@pytest.mark.parametrize("data", REQUEST_CORPUS, ids=_ids(REQUEST_CORPUS))
def test_request_corpus_agrees_with_h11(data: bytes) -> None:
    check_differential(REQUESTS, data, prefixes=True)


@pytest.mark.parametrize("method", list(RESPONSES), ids=[m.decode() for m in RESPONSES])
@pytest.mark.parametrize("data", RESPONSE_CORPUS, ids=_ids(RESPONSE_CORPUS))
def test_response_corpus_agrees_with_h11(data: bytes, method: bytes) -> None:
    check_differential(RESPONSES[method], data, prefixes=True)


def test_the_oracle_helpers() -> None:
    """The h11 drivers themselves: pipelining, keep-alive, errors and waiting."""
    get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert h11_parse_request(get * 2 + get[:5]) == Parsed(
        [Req(b"GET", b"/", [(b"host", b"a")])] * 2, "need-data"
    )
    close = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    assert h11_parse_request(close + get).end == "closed"
    assert h11_parse_request(b"GET / HTTP/1.0\r\n\r\n") == Parsed(
        [Req(b"GET", b"/", [], b"", False)], "closed"
    )
    assert h11_parse_request(b"GET / HTTP/1.1\r\n\r\n") == Parsed([], "error")
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert h11_parse_response(head_answer, b"HEAD") == Parsed(
        [Resp(200, b"OK", [(b"content-length", b"5")])], "need-data"
    )
    assert h11_parse_response(head_answer) == Parsed([], "need-data")
    assert h11_parse_response(b"HTTP/1.1 200 OK\r\n\r\n", b"CONNECT").end == "paused"


# --- generated messages --------------------------------------------------------------------------

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Host is left out: how many a request carries is drawn on its own (see ``request``).
SPECIAL_NAMES = [
    b"content-length",
    b"connection",
    b"transfer-encoding",
    b"expect",
    b"upgrade",
]
SPECIAL_VALUES = {
    b"connection": [
        b"close",
        b"keep-alive",
        b"Keep-Alive, CLOSE",
        b"te,\tclose\t",
        b"upgrade",
        b"",
    ],
    b"transfer-encoding": [b"chunked", b"gzip, chunked", b"identity"],
    b"expect": [b"100-continue", b"nothing"],
    b"upgrade": [b"websocket", b"h2c"],
}

tokens = st.lists(st.sampled_from(TCHAR), min_size=1, max_size=8).map(bytes)
# field-vchar (incl. control bytes 0x01-0x08, DEL and obs-text 0x80-0xff) and SP/HT: any run of
# them is a valid OWS field-value OWS.
VALUE_BYTES = [b for b in range(1, 256) if b not in (0x0A, 0x0B, 0x0C, 0x0D)]
values = st.one_of(
    st.lists(st.sampled_from(b"abcXYZ0189-_/ ,;=\t"), max_size=12).map(bytes),
    st.lists(st.sampled_from(VALUE_BYTES), max_size=12).map(bytes),
)
targets = st.one_of(
    st.sampled_from([b"/", b"*", b"/south/v80/devices/d1/operation/request?x=1", b"a:443"]),
    st.lists(st.integers(0x21, 0x7E), min_size=1, max_size=12).map(bytes),
)
reasons = st.lists(st.sampled_from(b"OK Created\t\x80\xff!~"), max_size=12).map(bytes)


@st.composite
def random_case(draw: st.DrawFn, name: bytes) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(
        c - 32 if flip and 0x61 <= c <= 0x7A else c for c, flip in zip(name, flips, strict=True)
    )


@st.composite
def ows(draw: st.DrawFn) -> bytes:
    return bytes(draw(st.lists(st.sampled_from(b" \t"), max_size=2)))


@st.composite
def headers(draw: st.DrawFn, body_length: int) -> list[tuple[bytes, bytes]]:
    """Extra headers: random tokens mixed with the names the fast path looks at, in random case."""
    result = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 3)):
            name = draw(tokens)
            value = draw(values)
        else:
            special = draw(st.sampled_from(SPECIAL_NAMES))
            name = draw(random_case(special))
            if special == b"content-length":
                n = b"%d" % body_length
                value = draw(st.sampled_from([n, n, b"%s, %s" % (n, n), b"00" + n, n + b"0"]))
            elif special in (b"connection", b"expect", b"upgrade") and draw(st.booleans()):
                value = draw(values)
            else:
                value = draw(st.sampled_from(SPECIAL_VALUES[special]))
        result.append((name, draw(ows()) + value + draw(ows())))
    return result


@st.composite
def message(draw: st.DrawFn, start_line: bytes, mandatory: list[tuple[bytes, bytes]]) -> bytes:
    """A head with ``mandatory`` framing headers shuffled into random ones, then the body."""
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "length", "length", "none", "chunked"]))
    fields = [*mandatory, *draw(headers(len(body)))]
    if framing == "length":
        fields.append((draw(random_case(b"content-length")), b"%d" % len(body)))
    elif framing == "chunked":
        fields.append((draw(random_case(b"transfer-encoding")), b"chunked"))
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif draw(st.booleans()):
        body = b""
    fields = draw(st.permutations(fields))
    head = b"".join(b"%s:%s\r\n" % (name, value) for name, value in fields)
    return start_line + b"\r\n" + head + b"\r\n" + body


@st.composite
def request(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    start = b"%s %s HTTP/%s" % (draw(tokens), draw(targets), version)
    hosts = draw(st.sampled_from([1] * 8 + [0, 2]))
    host = [(draw(random_case(b"host")), draw(ows()) + draw(values)) for _ in range(hosts)]
    return draw(message(start, host))


@st.composite
def response(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    status = draw(
        st.one_of(
            st.sampled_from([200, 200, 201, 201, 204, 304, 404, 500, 100, 101, 99]),
            st.integers(100, 999),
        )
    )
    reason = draw(st.one_of(st.none(), reasons))
    start = b"HTTP/%s %03d" % (version, status) + (b"" if reason is None else b" " + reason)
    return draw(message(start, []))


requests = st.lists(request(), min_size=1, max_size=3).map(b"".join)
responses = st.lists(response(), min_size=1, max_size=3).map(b"".join)
methods = st.sampled_from(list(RESPONSES))


@PROFILE
@given(data=requests)
def test_generated_requests_agree_with_h11(data: bytes) -> None:
    check_differential(REQUESTS, data)


@PROFILE
@given(data=responses, method=methods)
def test_generated_responses_agree_with_h11(data: bytes, method: bytes) -> None:
    check_differential(RESPONSES[method], data)


SPECIAL_BYTES = [ord(c) for c in "\r\n\x00 \t:,;0aA"] + [0x0B, 0x0C, 0x7F, 0x80, 0xFF]


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid message with 1-3 bytes inserted, deleted or replaced."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.one_of(st.sampled_from(SPECIAL_BYTES), st.integers(0, 255)))
        operation = draw(st.sampled_from(["insert", "delete", "replace"]))
        if operation == "insert":
            data.insert(at, byte)
        elif at < len(data):
            if operation == "delete":
                del data[at]
            else:
                data[at] = byte
    return bytes(data)


@PROFILE
@given(data=mutated(st.one_of(requests, st.sampled_from(REQUEST_CORPUS))))
def test_mutated_requests_agree_with_h11(data: bytes) -> None:
    check_differential(REQUESTS, data)


@PROFILE
@given(data=mutated(st.one_of(responses, st.sampled_from(RESPONSE_CORPUS))), method=methods)
def test_mutated_responses_agree_with_h11(data: bytes, method: bytes) -> None:
    check_differential(RESPONSES[method], data)


# --- garbage -------------------------------------------------------------------------------------

FRAGMENTS = [
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"GET / HTTP/1.1",
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 204 ",
    b"Host: a",
    b"Content-Length: ",
    b"Connection: close",
    b"Transfer-Encoding: chunked",
    b":",
    b" ",
    b"7",
    b"99999999999",
]
garbage = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=4)), max_size=30).map(
        b"".join
    ),
)


@st.composite
def in_chunks(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> list[bytes]:
    whole = draw(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=6)))
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]


def drain_garbage(
    reader: RequestReader | ResponseReader,
    next_message: Callable[[], Request | Response | Declined | None],
    chunks: list[bytes],
) -> str:
    """Feed and drain like a caller; check what comes out on the way."""
    fed = b""
    consumed = 0
    for chunk in chunks:
        reader.feed(chunk)
        fed += chunk
        while (result := next_message()) is not None:
            if result is DECLINED:
                assert reader.take_buffer() == fed[consumed:]  # untouched
                return "declined"
            assert isinstance(result, Request | Response)
            assert len(result.body) <= reader.max_body
            consumed = len(fed) - reader.buffered
    return "need-data"


@PROFILE
@given(chunks=in_chunks(garbage), side=st.sampled_from(["request", "POST", "HEAD", "CONNECT"]))
def test_garbage_raises_only_the_limit_errors(chunks: list[bytes], side: str) -> None:
    """Events, None or DECLINED (leaving the rest intact), or a limit error: nothing else."""
    reader: RequestReader | ResponseReader
    next_message: Callable[[], Request | Response | Declined | None]
    if side == "request":
        reader = RequestReader(max_head=64, max_body=16)
        next_message = reader.next_request
    else:
        reader = ResponseReader(max_head=64, max_body=16)
        next_message = partial(reader.next_response, request_method=side.encode())
    try:
        outcome: object = drain_garbage(reader, next_message, chunks)
    except RemoteProtocolError as exc:
        outcome = exc.status
    assert outcome in ("declined", "need-data", 413, 431)
