"""Interop with independent HTTP peers: curl and http.client against our server, our pool against
Python's http.server. These run on the real clock (subprocesses and threads)."""

from __future__ import annotations

import http.client
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from loadgen.http.client import ConnectionPool, Origin
from loadgen.http.server import HTTPServer

CURL = shutil.which("curl") or "/usr/bin/curl"
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def run_curl(*args: str) -> tuple[str, bytes]:
    """curl's status line (code and HTTP version) and the body it received."""
    result = await trio.run_process(
        [CURL, "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code} %{http_version}", *args],
        capture_stdout=True,
        capture_stderr=True,
    )
    body, _, status = result.stdout.rpartition(b"\n")
    return status.decode(), body


# --- curl against our server ----------------------------------------------------------------------


@needs_curl
@pytest.mark.parametrize(
    ("options", "path"),
    [
        pytest.param([], "fast", id="plain"),
        pytest.param(["--http1.0"], "h11", id="http1.0"),
        pytest.param(["-H", "Transfer-Encoding: chunked"], "h11", id="chunked-upload"),
        pytest.param(["-H", "Expect: 100-continue"], "h11", id="expect-100"),
    ],
)
async def test_curl_posts(server: tuple[HTTPServer, Origin], options: list[str], path: str) -> None:
    srv, origin = server
    body = '{"device":"d1","values":[1,2,3]}'
    status, got = await run_curl(
        *options,
        "-H",
        "Content-Type: application/json",
        "-H",
        "X-Test: curl",
        "--data-binary",
        body,
        f"{origin}/echo",
    )
    assert (status, got) == ("200 1.1", body.encode())  # an HTTP/1.1 server answers 1.0 in 1.1
    assert (srv.stats.requests_fast, srv.stats.requests_h11) == (
        (1, 0) if path == "fast" else (0, 1)
    )
    assert not srv.stats.errors


@needs_curl
async def test_curl_reuses_one_connection(server: tuple[HTTPServer, Origin]) -> None:
    srv, origin = server
    result = await trio.run_process(
        [
            CURL,
            "-sS",
            "--max-time",
            "10",
            "-d",
            "a",
            f"{origin}/echo",
            "--next",
            "-d",
            "b",
            f"{origin}/echo",
        ],
        capture_stdout=True,
    )
    assert result.stdout == b"ab"
    assert srv.stats.connections_accepted == 1
    assert srv.stats.requests_fast == 2


@needs_curl
async def test_curl_sees_204_and_202(server: tuple[HTTPServer, Origin]) -> None:
    _, origin = server
    assert await run_curl("-X", "POST", f"{origin}/empty") == ("204 1.1", b"")
    assert await run_curl("-d", "{}", f"{origin}/accepted") == ("202 1.1", b'{"accepted":true}')


# --- http.client against our server ---------------------------------------------------------------


def _http_client_session(port: int) -> list[tuple[int, bytes, str | None]]:
    """Three requests on one http.client connection (blocking: runs in a worker thread)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answers = []
        for i in range(3):
            conn.request("POST", "/echo", body=b"[%d]" % i, headers={"X-Test": "stdlib"})
            response = conn.getresponse()
            answers.append((response.status, response.read(), response.getheader("X-Echo")))
        conn.request("POST", "/empty")
        response = conn.getresponse()
        answers.append((response.status, response.read(), response.getheader("Content-Length")))
        return answers
    finally:
        conn.close()


async def test_http_client_keep_alive(server: tuple[HTTPServer, Origin]) -> None:
    srv, origin = server
    answers = await trio.to_thread.run_sync(_http_client_session, origin.port)
    assert answers == [
        (200, b"[0]", "stdlib"),
        (200, b"[1]", "stdlib"),
        (200, b"[2]", "stdlib"),
        (204, b"", None),
    ]
    assert srv.stats.connections_accepted == 1
    assert srv.stats.requests_fast == 4


# --- our pool against http.server -----------------------------------------------------------------


class _Http10Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 answers that close the connection; the first without Content-Length."""

    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        if self.path == "/with-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ChunkedHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive answers with a chunked body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in (b"echo:", body):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve_in_thread(handler: type[BaseHTTPRequestHandler]) -> Iterator[Origin]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield Origin("http", str(host), int(port))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def http10_server() -> Iterator[Origin]:
    yield from _serve_in_thread(_Http10Handler)


@pytest.fixture
def chunked_server() -> Iterator[Origin]:
    yield from _serve_in_thread(_ChunkedHandler)


@pytest.mark.parametrize("target", [b"/no-length", b"/with-length"])
async def test_pool_against_http10_server(
    http10_server: Origin, pool: ConnectionPool, target: bytes
) -> None:
    for i in range(2):
        response = await pool.request(http10_server, target, b'{"i":%d}' % i)
        assert (response.status, response.body) == (200, b'{"i":%d}' % i)
        assert not response.keep_alive
    assert pool.stats.h11_fallbacks == 2
    assert pool.stats.connections_opened == 2
    assert pool.stats.connections_open == 0
    assert not pool.stats.errors


async def test_pool_against_chunked_server(chunked_server: Origin, pool: ConnectionPool) -> None:
    for i in range(3):
        response = await pool.request(chunked_server, b"/", b"%d" % i)
        assert (response.status, response.body) == (200, b"echo:%d" % i)
    assert pool.stats.h11_fallbacks == 1  # then h11 serves that connection
    assert pool.stats.connections_opened == 1
    assert pool.stats.reused == 2
