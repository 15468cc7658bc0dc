"""The fleet's link to the platform: partial/final responses, collect/iot data, pending polls.

Every asynchronous answer of every device goes through one ``PlatformLink`` over the project's
pooled keep-alive client (``loadgen.http.client``): the fleet is one client of the platform's
south API, like a gateway, not 100,000 clients with a socket each. ``deliver`` is one attempt;
the fleet's outbox (``loadgen.device.outbox``) runs at most ``max_connections`` of them at once,
which is the pool's own limit, so no POST ever waits for a connection slot or opens one more.

Delivery policy (``Responder`` in the config): a POST that fails on the network (a refused
connection included: ``device.callback.error.connect``), or is answered 408, 429 or 5xx, is
retried after ``backoff_base * 2**attempt`` seconds (capped at ``backoff_max``) up to ``retries``
times; then it is counted as undelivered. Any other non-2xx
answer is the platform refusing the message on purpose (a 400 for a malformed body, say): it is
counted as rejected and not retried. Nothing is dropped without a counter:

- ``device.callback.sent`` / ``.retried`` / ``.undelivered`` / ``.rejected`` for responses,
  ``device.collect.*`` the same for collect/iot, ``device.<kind>.status.<code>`` for non-2xx
  answers and ``device.<kind>.error.<transport kind>`` for network failures;
- the ``callback`` phase records the platform's answer time of every POST that got an answer
  (the same value as intended and service time: there is no schedule to be late against).

A pending poll is one GET, never retried (the next poll is the retry).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from loadgen.device.config import Responder
from loadgen.errors import ProtocolError, TransportError
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.tls import client_context
from loadgen.metrics import Metrics
from loadgen.protocol import OperationRequest, PathTemplate, decode_pending

__all__ = ["PlatformLink", "open_platform"]

#: Statuses that say "try again later" rather than "no".
RETRY_STATUSES: Final = frozenset({408, 429})


class PlatformLink:
    """POSTs device messages to the platform and polls its pending queue (module docstring)."""

    def __init__(self, config: Responder, metrics: Metrics, pool: ConnectionPool) -> None:
        if config.platform_url is None:
            raise ValueError("a PlatformLink needs the platform URL")
        self.config = config
        self.metrics = metrics
        self.pool = pool
        self.origin, prefix = Origin.parse(config.platform_url)
        self.paths = PathTemplate(prefix + config.base_path)
        self._callback = metrics.phase("callback")

    def __repr__(self) -> str:
        return f"<PlatformLink {self.origin} {self.paths.base_path}>"

    async def deliver(self, kind: str, device_id: str, body: bytes, attempt: int) -> float | None:
        """One attempt at one POST (``kind``: ``callback`` for a response, ``collect`` for
        collect/iot data), counted. None when the message is done with (delivered, refused, or
        ``attempt`` was the last retry); else the seconds to wait before attempt ``attempt + 1``
        (the fleet's timer structure holds it meanwhile: no task sleeps per message)."""
        counters = self.metrics.counters
        prefix = "device." + kind
        paths = self.paths
        target = (
            paths.response_path(device_id) if kind == "callback" else paths.iot_path(device_id)
        ).encode("ascii")
        start = trio.current_time()
        try:
            response = await self.pool.request(self.origin, target, body)
        except TransportError as exc:
            cause = f"{prefix}.error.{exc.kind}"
            counters[cause] += 1
            self.metrics.note(cause, f"{exc} ({self.origin})")
        else:
            elapsed = trio.current_time() - start
            self._callback.record(elapsed, elapsed)
            status = response.status
            if 200 <= status < 300:
                counters[prefix + ".sent"] += 1
                return None
            counters[f"{prefix}.status.{status}"] += 1
            if status < 500 and status not in RETRY_STATUSES:
                counters[prefix + ".rejected"] += 1
                return None
        config = self.config
        if attempt >= config.retries:
            counters[prefix + ".undelivered"] += 1
            return None
        counters[prefix + ".retried"] += 1
        return config.backoff(attempt)

    async def fetch_pending(self, device_id: str) -> list[OperationRequest]:
        """The operations waiting for ``device_id`` (``[]`` on 204 or on any failure, counted)."""
        counters = self.metrics.counters
        counters["device.sleepy.polls"] += 1
        target = self.paths.pending_path(device_id).encode("ascii")
        try:
            response = await self.pool.request(self.origin, target, method=b"GET")
        except TransportError as exc:
            counters["device.sleepy.error." + exc.kind] += 1
            return []
        if response.status == 204:
            return []
        if response.status != 200:
            counters[f"device.sleepy.status.{response.status}"] += 1
            return []
        try:
            requests = decode_pending(response.body)
        except ProtocolError:
            counters["device.sleepy.malformed"] += 1
            return []
        counters["device.sleepy.operations"] += len(requests)
        return requests


@asynccontextmanager
async def open_platform(config: Responder, metrics: Metrics) -> AsyncIterator[PlatformLink]:
    """A ``PlatformLink`` with its connection pool open (closed on exit)."""
    assert config.platform_url is not None
    headers = [] if config.api_key is None else [(b"X-ApiKey", config.api_key.encode("latin-1"))]
    context = None
    if config.platform_url.startswith("https:"):
        context = client_context(verify=config.verify_tls, ca_file=config.ca_file)
    limits = ClientLimits(
        max_connections=config.max_connections,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
    )
    async with open_pool(limits=limits, ssl_context=context, headers=headers) as pool:
        yield PlatformLink(config, metrics, pool)
