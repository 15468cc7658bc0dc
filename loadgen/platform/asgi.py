"""The south API as an ASGI application, served by hypercorn (HTTP/1.1, HTTP/2, TLS).

This is not the hot path: ``loadgen.platform.south`` serves the same ``SouthCore`` on the
project's fast HTTP server. The ASGI app exists for users who want HTTP/2 or to mount the south
API inside another ASGI application; it answers exactly the same statuses and bodies because it
calls the same ``SouthCore.handle``.
"""

from __future__ import annotations

import trio

from loadgen.http.asgi import ASGIApp, Receive, Scope, Send, acknowledge_lifespan
from loadgen.platform.south import SouthCore

__all__ = ["ASGIApp", "serve_asgi", "south_asgi_app"]


_TEXT = b"text/plain; charset=utf-8"


def south_asgi_app(core: SouthCore) -> ASGIApp:
    """An ASGI 3 app answering like ``core`` (lifespan events are acknowledged)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        header_key = None
        for name, value in scope["headers"]:
            if name.lower() == b"x-apikey":
                header_key = value
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target = target + b"?" + scope["query_string"]
        status, payload = core.handle(
            scope["method"].encode(), target, header_key, bytes(body), trio.current_time()
        )
        headers = [(b"content-length", b"%d" % len(payload))]
        if payload:
            headers.append((b"content-type", b"application/json" if status == 200 else _TEXT))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


async def serve_asgi(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context_files: tuple[str, str] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn; reports the bound ``scheme://host:port`` list when ready.

    ``ssl_context_files`` is ``(certfile, keyfile)`` for HTTPS (hypercorn then offers h2 by ALPN).
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    if ssl_context_files is not None:
        config.certfile, config.keyfile = ssl_context_files
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
