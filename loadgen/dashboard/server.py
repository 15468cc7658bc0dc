"""The live dashboard's web server: an ASGI app served by hypercorn inside the run.

Routes (everything the page needs is served from the package: it works offline):

    GET  /                  the page (``static/index.html``)
    GET  /static/<file>     its script, style and the vendored chart library (uPlot, MIT)
    GET  /events            server-sent events: ``snapshot`` (everything so far) on connect,
                            then ``update`` (new frames + the state) after every interval
    GET  /api/state         the snapshot as JSON (for scripts)
    POST /api/stop          the same drain as the first Ctrl-C                -> 202
    POST /api/rate          ``{"rate": R}``: offer R ops/s from now on (open model)  -> 202;
                            400 for anything but a number >= 0, 409 when no load can change

Access: bound to loopback, the page is open to this machine's users; bound to anything else it
requires a token (given, or generated and printed with the address). The token comes as
``?token=`` on the page's address (which sets an HttpOnly, SameSite=Strict cookie for the rest)
or as ``Authorization: Bearer``; a wrong or missing one gets 401. The controls take JSON only
and refuse a foreign ``Origin``, so another site open in the same browser cannot press Stop.
"""

from __future__ import annotations

import errno
import hmac
import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any, Final, cast
from urllib.parse import parse_qs

import orjson
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from loadgen.dashboard.address import parse_address, token_for
from loadgen.dashboard.board import Board
from loadgen.errors import ConfigError
from loadgen.http.asgi import Receive, Scope, Send, acknowledge_lifespan

__all__ = ["Controls", "DashboardServer", "open_dashboard"]

#: An idle event stream sends a comment this often, so proxies and browsers keep it open.
KEEPALIVE: Final = 15.0
#: After the run, how long the server waits for every open page to get the last update.
FLUSH_TIMEOUT: Final = 2.0
MAX_BODY: Final = 4096
_COOKIE: Final = "loadgen_dashboard"
_STATIC: Final = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "LICENSE-uPlot.txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Controls:
    """What the page's buttons do. ``stop()`` starts the drain; ``change_rate(r)`` returns the
    control's record (what run.json gets) or raises ``ValueError`` saying why it cannot."""

    stop: Callable[[], dict[str, Any]] | None = None
    change_rate: Callable[[float], dict[str, Any]] | None = None


class DashboardServer:
    """The ASGI app over one ``Board``; ``url`` is set once it listens."""

    def __init__(
        self, board: Board, *, token: str | None, controls: Controls | None = None
    ) -> None:
        self.board = board
        self.token = token
        self.controls = controls or Controls()
        self.url = ""
        self._wake = trio.Event()
        self._sent = trio.Event()  # set (and renewed) each time a stream has sent an update
        self._streams: dict[int, int] = {}  # open event streams -> the version each has sent
        board.listeners.append(self._changed)

    def __repr__(self) -> str:
        return f"<DashboardServer {self.url or 'not listening'} streams={len(self._streams)}>"

    def _changed(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def flush(self) -> None:
        """Wait (at most ``FLUSH_TIMEOUT``) until every open page has the last version."""
        with trio.move_on_after(FLUSH_TIMEOUT):
            while any(sent < self.board.version for sent in self._streams.values()):
                await self._sent.wait()

    # --- ASGI --------------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        set_cookie = self._authorise(query, headers)
        if set_cookie is None:
            await _reply(send, 401, b"a valid dashboard token is required (?token=...)\n")
            return
        extra = [(b"set-cookie", set_cookie)] if set_cookie else []
        if method == "GET" and path in ("/", "/index.html"):
            await _reply(send, 200, _static("index.html"), _STATIC["index.html"], extra)
        elif method == "GET" and path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in _STATIC:
                await _reply(send, 404, b"not found\n")
                return
            await _reply(send, 200, _static(name), _STATIC[name], extra)
        elif method == "GET" and path == "/events":
            await self._events(receive, send)
        elif method == "GET" and path == "/api/state":
            await _json(send, 200, self.board.snapshot())
        elif method == "POST" and path in ("/api/stop", "/api/rate"):
            await self._control(path, headers, receive, send)
        elif path in ("/", "/events", "/api/state", "/api/stop", "/api/rate"):
            await _reply(send, 405, b"method not allowed\n")
        else:
            await _reply(send, 404, b"not found\n")

    def _authorise(self, query: dict[str, list[str]], headers: dict[str, bytes]) -> bytes | None:
        """None: refused; b"": allowed; a Set-Cookie value: allowed by ``?token=``."""
        if self.token is None:
            return b""
        expected = self.token.encode()
        given = query.get("token", [None])[0]
        if given is not None:
            if hmac.compare_digest(given.encode(), expected):
                return f"{_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()
            return None
        bearer = headers.get("authorization", b"")
        if bearer.startswith(b"Bearer ") and hmac.compare_digest(bearer[7:].strip(), expected):
            return b""
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", b"").decode("latin-1"))
        except Exception:  # a malformed cookie header is no token
            return None
        morsel = cookie.get(_COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), expected):
            return b""
        return None

    async def _events(self, receive: Receive, send: Send) -> None:
        board = self.board
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        key = id(receive)
        async with trio.open_nursery() as nursery:

            async def disconnected() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(disconnected)
            try:
                # what is sent is read before the send: the board may change while it is sent
                epoch, version, sent_frames = board.epoch, board.version, len(board.frames)
                await _event(send, "snapshot", board.snapshot())
                self._streams[key] = version
                while True:
                    wake = self._wake
                    if self._streams[key] == board.version:
                        with trio.move_on_after(KEEPALIVE):
                            await wake.wait()
                    if self._streams[key] == board.version:
                        await send({"type": "http.response.body", "body": b": idle\n\n",
                                    "more_body": True})  # fmt: skip
                        continue
                    version, frames = board.version, len(board.frames)
                    if board.epoch != epoch:  # old frames were thinned: start again
                        epoch = board.epoch
                        await _event(send, "snapshot", board.snapshot())
                    else:
                        await _event(send, "update", board.update(sent_frames))
                    sent_frames = frames
                    self._streams[key] = version
                    self._sent.set()
                    self._sent = trio.Event()
            finally:
                self._streams.pop(key, None)

    async def _control(
        self, path: str, headers: dict[str, bytes], receive: Receive, send: Send
    ) -> None:
        origin = headers.get("origin")
        host = headers.get("host", b"")
        if origin is not None and origin not in (b"http://" + host, b"https://" + host):
            await _json(send, 403, {"error": "a control from another site's page is refused"})
            return
        if not headers.get("content-type", b"").startswith(b"application/json"):
            await _json(
                send, 415, {"error": "expected a JSON body (Content-Type: application/json)"}
            )
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _json(send, 413, {"error": f"expected a body under {MAX_BODY} bytes"})
                return
            if not message.get("more_body"):
                break
        try:
            document = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            await _json(send, 400, {"error": "expected a JSON object"})
            return
        if path == "/api/stop":
            if self.controls.stop is None:
                await _json(send, 409, {"error": "this run cannot be stopped from here"})
                return
            record = self.controls.stop()
            self.board.control(record)
            await _json(send, 202, record)
            return
        rate = document.get("rate") if isinstance(document, dict) else None
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            await _json(
                send, 400, {"error": f"expected a rate (a number of ops/s >= 0), got {rate!r}"}
            )
            return
        if rate < 0:
            await _json(send, 400, {"error": f"expected a rate >= 0 ops/s, got {rate!r}"})
            return
        if self.controls.change_rate is None:
            await _json(send, 409, {"error": "this run has no rate to change"})
            return
        try:
            record = self.controls.change_rate(float(rate))
        except ValueError as exc:
            await _json(send, 409, {"error": str(exc)})
            return
        self.board.control(record)
        await _json(send, 202, record)


def _static(name: str) -> bytes:
    return resources.files("loadgen.dashboard").joinpath("static", name).read_bytes()


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, document: object) -> None:
    await _reply(send, status, orjson.dumps(document), "application/json")


async def _event(send: Send, kind: str, document: object) -> None:
    data = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
    body = b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
    await send({"type": "http.response.body", "body": body, "more_body": True})


def _listen(config: Config, host: str, port: int, key: str) -> Sockets:
    """The listening socket, made here (not by hypercorn) so that an address that cannot be
    bound is one clear line before the run starts, and no socket is left open then."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot serve the dashboard on {host}: {exc.strerror}", key=key
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(config.backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use"
        raise ConfigError(
            f"cannot serve the dashboard on {host}:{port}: {reason} "
            "(choose another with --dashboard=HOST:PORT)",
            key=key,
        ) from None
    return Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])


@asynccontextmanager
async def open_dashboard(
    board: Board,
    address: str,
    *,
    token: str | None = None,
    notice: Callable[[str], None] = print,
    key: str = "output.dashboard",
) -> AsyncIterator[DashboardServer]:
    """Serve ``board`` at ``address`` for the duration of the block; the address (with the
    token when one is needed) is given to ``notice`` at once. A port that cannot be bound is a
    ``ConfigError`` naming ``key``, raised before the block runs."""
    host, port = parse_address(address, key=key)
    token = token_for(host, token)
    server = DashboardServer(board, token=token)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    sockets = _listen(config, host, port, key)
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: worker_serve(
                    wrap_app(cast(Any, server.app), config.wsgi_max_body_size, "asgi"),
                    config,
                    sockets=sockets,
                    task_status=task_status,
                )
            )
            bound = binds[0]
            if host in ("0.0.0.0", "::"):  # an address a person can paste
                bound = bound.replace(f"[{host}]" if host == "::" else host, socket.gethostname())
            server.url = bound + "/" + (f"?token={token}" if token else "")
            notice(f"dashboard: {server.url}")
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await server.flush()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the block's own exception (a ConfigError, a Ctrl-C) passes as it was raised: the server
        # task itself ends only by this cancellation
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
