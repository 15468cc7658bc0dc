"""Server-level fuzzing of the two servers the project runs on ``loadgen.http.server``: the device
fleet (``run_fleet``: ``DeviceHandler``) and the platform's south API (``SouthCore.http_handler``).

The rule is h11's: whatever a peer sends, it gets well-formed responses or a close; the server stays
up; and a normal request afterwards gets 201. Concretely, for every input:

- the input is written (in one piece or split), the client half-closes, and the server must close
  within DEADLINE (no hang) without a reset (an answer lost to a reset is a lost answer);
- everything received parses with h11 as a client into complete responses, nothing left over and
  nothing after a ``Connection: close`` answer (a 100 Continue is allowed before its answer);
- for inputs small enough that no size limit applies, every request h11 (the oracle of the parser
  differential tests) reads in the input is answered, in order, plus at most one error answer
  (``ERROR_STATUSES``) for what came after;
- a normal request on a new connection then gets 201, the server task has not failed, no
  connection is left open and no handler crashed (bad input is a 4xx, not a 500).

The fixed table found that a HEAD request got its answer's body (a desync for the client) and, on
the h11 path (HTTP/1.0), crashed the whole server (h11 refuses a body after HEAD).

Each server runs in-process, in its own thread with its own trio loop (module fixture), for the
whole module, so one server takes every input, as in a long hostile run; the clients are plain
blocking sockets. The inputs are a fixed table of known-hostile shapes and Hypothesis examples
(random and mutated requests, single and pipelined), bounded in number (``PROFILE``).
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import h11
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parser_differential import h11_parse_request, mutated, request

from loadgen.device.config import FleetConfig
from loadgen.device.runner import run_fleet
from loadgen.http.parser import DEFAULT_MAX_HEAD
from loadgen.http.server import HTTPServer
from loadgen.metrics import Metrics
from loadgen.platform.inflight import InflightTable
from loadgen.platform.south import SouthCore
from loadgen.protocol import DEFAULT_BASE_PATH

DEADLINE: Final = 5.0  # real seconds for the server to answer and close one input
PROFILE = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ERROR_STATUSES: Final = frozenset({400, 408, 413, 431, 501, 505})  # what the server says itself

# --- the servers ---------------------------------------------------------------------------------

FLEET_TARGET: Final = f"{DEFAULT_BASE_PATH}/dev-000001/operation/request".encode()
FLEET_BODY: Final = (
    b'{"operation":{"request":{"id":"op-1","timestamp":1,"name":"REBOOT_EQUIPMENT"}}}'
)
SOUTH_TARGET: Final = f"{DEFAULT_BASE_PATH}/dev-1/collect/iot".encode()
SOUTH_BODY: Final = (
    b'{"version":"1.0.0","datastreams":[{"id":"temperature","datapoints":[{"value":21.5}]}]}'
)


@dataclass
class Served:
    """A server running in a thread: where it listens and what a normal request to it is."""

    kind: str
    address: tuple[str, int]
    target: bytes
    body: bytes
    server: HTTPServer
    failure: list[BaseException] = field(default_factory=list)

    def request(
        self, *, method: bytes = b"POST", extra: bytes = b"", body: bytes | None = None
    ) -> bytes:
        body = self.body if body is None else body
        return (
            b"%s %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (method, self.target, extra, len(body), body)
        )


async def _serve(kind: str, started: list[Any], ready: threading.Event) -> None:
    """Run the server of ``kind`` until cancelled; ``started`` gets the ``Served``, the trio token
    and the cancel scope that ends it."""
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        if kind == "fleet":
            info = await nursery.start(run_fleet, FleetConfig(count=4, http_port=0), metrics)
            served = Served(kind, info.http[0], FLEET_TARGET, FLEET_BODY, info.handle.servers[0])
        else:
            core = SouthCore(InflightTable(metrics), metrics)
            server = HTTPServer(core.http_handler)
            [(host, port)] = await nursery.start(server.serve, "127.0.0.1", 0)
            served = Served(kind, (host, port), SOUTH_TARGET, SOUTH_BODY, server)
        started.extend([served, trio.lowlevel.current_trio_token(), nursery.cancel_scope])
        ready.set()


@pytest.fixture(scope="module", params=["fleet", "south"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    kind: str = request.param
    started: list[Any] = []
    failure: list[BaseException] = []
    ready = threading.Event()

    def run() -> None:
        try:
            trio.run(_serve, kind, started, ready)
        except BaseException as exc:  # handed to the test thread, which fails on it
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name=f"{kind}-server", daemon=True)
    thread.start()
    assert ready.wait(DEADLINE), "the server did not start"
    assert not failure, failure
    served, token, scope = started
    served.failure = failure
    yield served
    if not failure:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(DEADLINE)
    assert not failure, f"the {kind} server failed: {failure!r}"


# --- one input -----------------------------------------------------------------------------------


def exchange(served: Served, chunks: list[bytes]) -> tuple[bytes, str]:
    """Write ``chunks``, half-close, read until the server closes: (bytes, how it ended)."""
    received = bytearray()
    with socket.create_connection(served.address, timeout=DEADLINE) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early (say, after a 431): what it sent is still to be read
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), "reset"
            except TimeoutError:
                return bytes(received), "hang"
            if not chunk:
                return bytes(received), "closed"
            received += chunk


def parse_responses(received: bytes, methods: list[bytes]) -> list[int]:
    """The statuses of the complete responses in ``received``, parsed by h11 as the client of
    requests with ``methods`` (then POST); fails on anything malformed or incomplete."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(received)
    conn.receive_data(b"")
    statuses: list[int] = []
    while conn.trailing_data != (b"", True):
        method = methods[len(statuses)] if len(statuses) < len(methods) else b"POST"
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        while True:
            event = conn.next_event()  # raises h11.RemoteProtocolError on a malformed answer
            if isinstance(event, h11.Response):
                statuses.append(event.status_code)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                assert conn.their_state is h11.CLOSED, f"cut mid-response: {received[-200:]!r}"
                return statuses
            else:
                assert isinstance(event, h11.Data | h11.InformationalResponse), event
        if conn.their_state is h11.MUST_CLOSE:
            assert isinstance(conn.next_event(), h11.ConnectionClosed), "bytes after a close"
            return statuses
        conn.start_next_cycle()
    return statuses


def check(served: Served, data: bytes, chunks: list[bytes] | None = None) -> list[int]:
    """The rule of the module header for one input; the statuses it got."""
    received, ended = exchange(served, chunks or [data])
    assert ended == "closed", f"{ended} after {received[-300:]!r}"
    oracle = h11_parse_request(data)
    methods = [message.method for message in oracle.messages]
    statuses = parse_responses(received, methods)
    if len(data) < DEFAULT_MAX_HEAD // 2 and b"100-continue" not in data.lower():
        answered, rest = statuses[: len(methods)], statuses[len(methods) :]
        assert len(answered) == len(methods), (statuses, oracle)
        assert rest in ([], *([s] for s in ERROR_STATUSES)), (statuses, oracle)
    normal(served)
    stats = served.server.stats
    assert stats.connections_open == 0  # closed before we saw the close: none left behind
    assert stats.handler_errors == 0  # bad input is a 4xx, never a handler crash (500)
    return statuses


def normal(served: Served) -> None:
    """A normal request on a new connection gets 201; the server thread is alive."""
    assert not served.failure, served.failure
    received, ended = exchange(served, [served.request(extra=b"Connection: close\r\n")])
    assert ended == "closed"
    assert parse_responses(received, [b"POST"]) == [201], received


# --- the fixed table -----------------------------------------------------------------------------


Build = Callable[[Served], bytes]


def _ok(s: Served) -> bytes:
    return s.request()


def _close(s: Served) -> bytes:
    return s.request(extra=b"Connection: close\r\n")


def _chunked(s: Served, *, close: bool = True) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: fuzz\r\n%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (
            s.target,
            b"Connection: close\r\n" if close else b"",
            len(s.body),
            s.body,
        )
    )


def _length(s: Served, value: bytes) -> bytes:
    return _ok(s).replace(b"Content-Length: %d" % len(s.body), b"Content-Length: " + value)


def _host(s: Served, replacement: bytes, build: Build = _ok) -> bytes:
    return build(s).replace(b"Host: fuzz", replacement)


def _body(s: Served, body: bytes) -> bytes:
    return s.request(body=body, extra=b"Connection: close\r\n")


TABLE: Final[list[tuple[str, Build, list[int]]]] = [
    ("normal", _close, [201]),
    ("garbage", lambda s: b"\x00\x01\x02garbage\r\n\r\n", [400]),
    ("tls-hello", lambda s: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", [400]),
    ("h2-preface", lambda s: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [404, 400]),
    ("nul-in-method", lambda s: b"PO\x00ST %s HTTP/1.1\r\nHost: x\r\n\r\n" % s.target, [400]),
    ("nul-in-target", lambda s: b"POST %s\x00 HTTP/1.1\r\nHost: x\r\n\r\n" % s.target, [400]),
    ("nul-in-header", lambda s: _host(s, b"Host: fu\x00zz"), [400]),
    (
        "utf8-invalid-target",
        lambda s: _close(s).replace(s.target, s.target[:-3] + b"\xff\xfe"),
        [400],
    ),
    ("utf8-invalid-header", lambda s: _host(s, b"Host: fuzz\r\nX-Bad: \xff\xfe", _close), [201]),
    ("bare-cr-in-header", lambda s: _host(s, b"Host: fu\rzz"), [400]),
    ("obs-fold", lambda s: _host(s, b"Host: fuzz\r\n folded", _close), [201]),
    ("space-before-colon", lambda s: _host(s, b"Host : fuzz"), [400]),
    ("no-host", lambda s: _host(s, b"", _close).replace(b"\r\n\r\n", b"\r\n", 1), [400]),
    ("two-hosts", lambda s: _host(s, b"Host: a\r\nHost: b", _close), [400]),
    ("http-2.0", lambda s: _close(s).replace(b"HTTP/1.1", b"HTTP/2.0"), [201]),
    ("http-1.0", lambda s: _close(s).replace(b"HTTP/1.1", b"HTTP/1.0"), [201]),
    ("bare-lf", lambda s: _close(s).replace(b"\r\n", b"\n"), [201]),
    ("cl-twice-differing", lambda s: _length(s, b"1\r\nContent-Length: %d" % len(s.body)), [400]),
    ("cl-negative", lambda s: _length(s, b"-1"), [400]),
    ("cl-plus", lambda s: _length(s, b"+%d" % len(s.body)), [400]),
    ("cl-hex", lambda s: _length(s, b"0x10"), [400]),
    ("cl-huge", lambda s: _length(s, b"9" * 20), [413]),
    ("cl-too-short", lambda s: _length(s, b"5"), [400]),
    ("cl-and-te", lambda s: _host(s, b"Host: fuzz\r\nTransfer-Encoding: chunked"), [400]),
    ("te-chunked", _chunked, [201]),
    ("te-gzip", lambda s: _host(s, b"Host: fuzz\r\nTransfer-Encoding: gzip", _close), [501]),
    (
        "te-bad-chunk-size",
        lambda s: _chunked(s).replace(b"\r\n\r\n%x" % len(s.body), b"\r\n\r\nzz"),
        [400],
    ),
    ("expect-100", lambda s: _host(s, b"Host: fuzz\r\nExpect: 100-continue", _close), [201]),
    (
        "upgrade",
        lambda s: _host(s, b"Host: fuzz\r\nConnection: Upgrade\r\nUpgrade: h2c", _close),
        [201],
    ),
    ("head-1.1", lambda s: s.request(method=b"HEAD") + _close(s), [405, 201]),
    ("head-1.0", lambda s: b"HEAD %s HTTP/1.0\r\n\r\n" % s.target, [405]),
    ("get-1.0-root", lambda s: b"GET / HTTP/1.0\r\n\r\n", [404]),
    (
        "overlong-target",
        lambda s: b"POST /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        [431],
    ),
    ("overlong-header", lambda s: _host(s, b"Host: fuzz\r\nX-Long: " + b"v" * 20_000), [431]),
    ("many-headers", lambda s: _host(s, b"Host: fuzz" + b"\r\nX-N: 1" * 3000), [431]),
    ("overlong-unfinished", lambda s: b"POST / HTTP/1.1\r\nX: " + b"v" * 40_000, [431]),
    ("body-utf8-invalid", lambda s: _body(s, b'{"a":"\xff\xfe"}'), [400]),
    ("body-nul", lambda s: _body(s, b"\x00" * 64), [400]),
    ("body-deep-array", lambda s: _body(s, b"[" * 100_000 + b"]" * 100_000), [400]),
    ("body-deep-object", lambda s: _body(s, b'{"a":' * 5_000 + b"1" + b"}" * 5_000), [400]),
    ("body-oversize", lambda s: _body(s, b"x" * ((1 << 20) + 1)), [413]),
    ("pipelined-ok-garbage", lambda s: _ok(s) + b"GARBAGE\r\n\r\n" + _ok(s), [201, 400]),
    ("pipelined-three", lambda s: _ok(s) + _ok(s) + _close(s) + _ok(s), [201, 201, 201]),
    (
        "pipelined-h11-between",
        lambda s: _ok(s) + _chunked(s, close=False) + _close(s),
        [201, 201, 201],
    ),
    ("incomplete-head", lambda s: b"POST %s HTTP/1.1\r\nHost:" % s.target, []),
    ("incomplete-body", lambda s: _ok(s)[:-5], []),
    ("empty", lambda s: b"", []),
    ("blank-lines", lambda s: b"\r\n\r\n" + _close(s), [400]),
]


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in TABLE], ids=[c[0] for c in TABLE])
def test_fixed_table(served: Served, build: Build, expected: list[int]) -> None:
    assert check(served, build(served)) == expected


def test_byte_at_a_time(served: Served) -> None:
    """The same valid pipelined requests cut into single bytes (every parser state boundary)."""
    data = served.request() + served.request(extra=b"Connection: close\r\n")
    assert check(served, data, [data[i : i + 1] for i in range(len(data))]) == [201, 201]


# --- generated inputs ----------------------------------------------------------------------------


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=3))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@PROFILE
@given(data=st.data())
def test_random_requests(served: Served, data: st.DataObject) -> None:
    """Random requests (random tokens, targets, headers and framings, 1.0 and 1.1), pipelined."""
    wire = b"".join(data.draw(st.lists(request(), min_size=1, max_size=3)))
    check(served, wire, data.draw(splits(wire)))


@PROFILE
@given(data=st.data())
def test_mutated_requests(served: Served, data: st.DataObject) -> None:
    """A normal request with bytes inserted, deleted or replaced, alone or between two normal
    ones, then whatever the server makes of them."""
    mutant = data.draw(mutated(st.just(served.request())))
    wire = data.draw(
        st.sampled_from(
            [mutant, served.request() + mutant, served.request() + mutant + served.request()]
        )
    )
    check(served, wire, data.draw(splits(wire)))


BODIES = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=20,
    ).map(lambda obj: json.dumps(obj).encode()),
    st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
)


@PROFILE
@given(data=st.data())
def test_random_bodies(served: Served, data: st.DataObject) -> None:
    """Well-framed requests to the real path with random bytes, random JSON and nested JSON."""
    bodies = data.draw(st.lists(BODIES, min_size=1, max_size=3))
    wire = b"".join(served.request(body=body) for body in bodies)
    statuses = check(served, wire, data.draw(splits(wire)))
    assert all(status in (201, 400) for status in statuses), statuses
