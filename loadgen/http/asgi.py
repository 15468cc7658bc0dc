"""The little of ASGI the project needs in more than one place: types and the lifespan handshake.

Every ASGI app served here by hypercorn (the platform's south API, the live Prometheus endpoint,
the benchmark references) has no start-up or shut-down work, but hypercorn still runs the
lifespan protocol and fails if the app just returns; ``acknowledge_lifespan`` answers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "acknowledge_lifespan"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def acknowledge_lifespan(receive: Receive, send: Send) -> None:
    """Complete every lifespan event until shutdown."""
    while True:
        message = await receive()
        kind = message["type"]
        await send({"type": kind + ".complete"})
        if kind == "lifespan.shutdown":
            return
