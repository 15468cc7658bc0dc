"""``run_fleet``: a whole virtual device fleet as one trio task tree.

Shape of the tree (every task lives in a nursery owned by ``run_fleet``)::

    run_fleet
    └── platform link (connection pool + its watchdog)          only with a platform URL
        └── drain scope
            └── work nursery: asynchronous operations in flight (Engine)
                └── services nursery: one HTTPServer per listener (scheme x address)
                    └── background nursery: sleepy scheduler, counter sync

Readiness: ``await nursery.start(run_fleet, config, metrics)`` returns a ``FleetInfo`` with the
bound addresses (port 0 becomes a real port), the generated CA when HTTPS is self-signed and
the ``FleetHandle``. ``handle.shutdown()`` drains: the listeners stop accepting, idle
connections close, requests in progress are answered, operations in flight run to their last
POST, sleepy devices stop polling; then ``run_fleet`` returns. ``drain_timeout`` bounds the
drain (then everything is cancelled). Cancelling ``run_fleet`` stops everything at once.

Address mode binds one listener per configured loopback address on the same ports, all serving
the same handler: a device is addressed by the id in the path, whichever address the platform
used. One socket per address keeps 100,000 devices at 100,000 records instead of 100,000
listeners; the platform can still spread its connections over the addresses.

Server-level error answers (400/408/413/431 for garbage, slow or oversize requests, which never
reach the handler) are copied every second into the same ``device.http.<status>`` counters the
handler uses, so a report sees every refused request in one place. The servers' answers to
descriptor pressure (``shed_idle``, ``accept_failures``) are copied the same way into
``device.server.<name>``, and the responder pool's connection figures (``connections_opened``,
``reused``, ``stale_retries``) into ``device.responder.<name>``: a fleet that reuses its
keep-alive connections opens ``max_connections`` at most, whatever it sends.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Final

import trio

from loadgen.device.config import FleetConfig
from loadgen.device.engine import DeviceObserver, Engine
from loadgen.device.fleet import Device, build_devices
from loadgen.device.handler import DeviceHandler
from loadgen.device.responder import PlatformLink, open_platform
from loadgen.device.sleepy import SleepyScheduler, choose_sleepy
from loadgen.http.server import HTTPServer
from loadgen.http.tls import LOOPBACK_NAMES, server_context
from loadgen.metrics import Metrics
from loadgen.metrics.collector import quiet_collector
from loadgen.seeds import resolve_seed

__all__ = ["FleetHandle", "FleetInfo", "run_fleet"]

SYNC_PERIOD: Final = 1.0  # seconds between copies of the servers' error counters
COPIED_STATS: Final = ("shed_idle", "accept_failures")  # -> device.server.<name>
POOL_STATS: Final = ("connections_opened", "reused", "stale_retries")  # -> device.responder.*

Address = tuple[str, int]


class FleetHandle:
    """Control and live figures of a running fleet (handed out in ``FleetInfo``)."""

    def __init__(self, config: FleetConfig, metrics: Metrics, devices: dict[str, Device]) -> None:
        self.config = config
        self.metrics = metrics
        self.devices = devices
        self.servers: list[HTTPServer] = []
        self.engine: Engine | None = None
        self.sleepy: SleepyScheduler | None = None
        self.link: PlatformLink | None = None
        self._stop = trio.Event()
        self._copied: Counter[int] = Counter()
        self._copied_stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"<FleetHandle devices={len(self.devices)} in_flight={self.in_flight} "
            f"listeners={len(self.servers)} stopping={self.stopping}>"
        )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def in_flight(self) -> int:
        """Operations admitted and not finished (the live gauge ``device.ops.in_flight``)."""
        return 0 if self.engine is None else self.engine.in_flight

    def shutdown(self) -> None:
        """Stop accepting and let the operations in flight finish; ``run_fleet`` then returns."""
        self._stop.set()

    def sync_counters(self) -> None:
        """Copy the servers' error answers into ``device.http.<status>``, their descriptor
        pressure counters into ``device.server.<name>`` and the responder pool's connection
        figures into ``device.responder.<name>`` (by difference)."""
        total: Counter[int] = Counter()
        stats: Counter[str] = Counter()
        for server in self.servers:
            total.update(server.stats.errors)
            for name in COPIED_STATS:
                stats[name] += getattr(server.stats, name)
        if self.link is not None:
            pool = self.link.pool.stats
            for name in POOL_STATS:
                stats["responder." + name] = getattr(pool, name)
        counters = self.metrics.counters
        for status, count in total.items():
            delta = count - self._copied[status]
            if delta:
                counters[f"device.http.{status}"] += delta
                self._copied[status] = count
        for name, count in stats.items():
            delta = count - self._copied_stats[name]
            if delta:
                key = f"device.{name}" if name.startswith("responder.") else f"device.server.{name}"
                counters[key] += delta
                self._copied_stats[name] = count

    def statistics(self) -> dict[str, int]:
        """A plain dict: every ``device.*`` counter, the in-flight gauge and server totals."""
        self.sync_counters()
        out = {k: v for k, v in sorted(self.metrics.counters.items()) if k.startswith("device.")}
        out["device.ops.in_flight"] = self.in_flight
        out["device.devices"] = len(self.devices)
        out["device.sleepy.devices"] = 0 if self.sleepy is None else len(self.sleepy.devices)
        for server in self.servers:
            stats = server.stats
            for name in (
                "connections_accepted",
                "connections_open",
                "requests_fast",
                "requests_h11",
                "peer_resets",
                "idle_closed",
                "incomplete_requests",
                "handler_errors",
                "tls_errors",
                "write_timeouts",
                "linger_cut",
                "accept_failures",
                "shed_idle",
            ):
                key = "server." + name
                out[key] = out.get(key, 0) + getattr(stats, name)
        return out

    async def _sync_loop(self) -> None:
        while True:
            await trio.sleep(SYNC_PERIOD)
            self.sync_counters()


@dataclass(frozen=True, slots=True)
class FleetInfo:
    """What a started fleet reports: where it listens and how to control it."""

    http: tuple[Address, ...]
    https: tuple[Address, ...]
    ca_pem: bytes | None
    handle: FleetHandle

    @property
    def seed(self) -> int:
        """The seed of every random choice of the fleet (drawn when the config had none)."""
        seed = self.handle.config.seed
        assert seed is not None, "run_fleet resolves the seed before it starts"
        return seed

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the first plain listener (None when HTTP is off)."""
        return _url("http", self.http[0]) if self.http else None

    @property
    def https_url(self) -> str | None:
        return _url("https", self.https[0]) if self.https else None


def _url(scheme: str, address: Address) -> str:
    host, port = address
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


async def run_fleet(
    config: FleetConfig,
    metrics: Metrics,
    *,
    observer: DeviceObserver | None = None,
    task_status: trio.TaskStatus[FleetInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the fleet of ``config`` until ``handle.shutdown()`` has drained it, or cancelled.
    ``observer`` is told of every request and final answer (the north side's correlation).

    A config without a seed gets a fresh one here (``FleetInfo.seed``)."""
    seed = resolve_seed(config.seed)
    config = dataclasses.replace(config, seed=seed)
    devices = build_devices(config)
    handle = FleetHandle(config, metrics, devices)
    tls = None
    if config.https_port is not None:
        hosts = tuple(dict.fromkeys((*LOOPBACK_NAMES, config.host, *config.addresses)))
        tls = server_context(config.tls_cert, config.tls_key, hosts=hosts)
    async with AsyncExitStack() as stack:
        link: PlatformLink | None = None
        if config.responder.platform_url is not None:
            link = handle.link = await stack.enter_async_context(
                open_platform(config.responder, metrics)
            )
        with trio.CancelScope() as drain_scope:
            async with trio.open_nursery() as work:
                engine = handle.engine = Engine(config, metrics, link, work, observer)
                handler = DeviceHandler(
                    devices, engine, base_path=config.base_path, api_key=config.api_key
                )
                async with trio.open_nursery() as services:
                    http: list[Address] = []
                    https: list[Address] = []
                    for host in config.listen_hosts():
                        for port, bound, context in (
                            (config.http_port, http, None),
                            (config.https_port, https, tls.context if tls else None),
                        ):
                            if port is None:
                                continue
                            server = HTTPServer(handler, limits=config.limits, now=handler.now)
                            handle.servers.append(server)
                            addresses = await services.start(
                                partial(
                                    server.serve,
                                    host,
                                    port,
                                    ssl_context=context,
                                    backlog=config.backlog,
                                )
                            )
                            bound.extend((a[0], a[1]) for a in addresses)
                    async with trio.open_nursery() as background:
                        background.start_soon(handle._sync_loop)
                        if link is not None and config.sleepy.share > 0:
                            ordered = list(devices.values())
                            chosen = choose_sleepy(len(ordered), config.sleepy.share, seed)
                            handle.sleepy = SleepyScheduler(
                                config.sleepy,
                                [ordered[i] for i in chosen],
                                engine,
                                link,
                                seed=seed,
                            )
                            await background.start(handle.sleepy.run)
                        # the collector's load policy from here to the end of the drain
                        stack.enter_context(quiet_collector())
                        task_status.started(
                            FleetInfo(
                                http=tuple(http),
                                https=tuple(https),
                                ca_pem=None if tls is None else tls.ca_pem,
                                handle=handle,
                            )
                        )
                        await handle._stop.wait()
                        drain_scope.deadline = trio.current_time() + config.drain_timeout
                        background.cancel_scope.cancel()
                    for server in handle.servers:
                        server.shutdown()
                # Listeners closed; the work nursery waits for the operations in flight.
        if drain_scope.cancelled_caught:
            metrics.count("device.drain.timed_out")
    handle.sync_counters()
