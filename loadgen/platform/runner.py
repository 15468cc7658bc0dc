"""``run_platform``: the virtual platform's whole run, from the south API to the drain.

Start sequence (what a campaign needs)::

    async with trio.open_nursery() as nursery:
        info = await nursery.start(partial(run_platform, config, metrics, hold=True))
        # the south API is up: info.south_url is where devices POST their responses
        ... start the fleet pointing at info.south_url, learn its address ...
        info.begin_load(targets)   # the load starts now (targets may replace config.targets)

Without ``hold`` the load starts as soon as the south API is up. The run then goes:

1. **load**: the issuing task follows the arrival model until the last stage ends
   (``t0 + duration`` on the trio clock);
   (or earlier, when ``info.stop_load()`` is called, e.g. on Ctrl-C); ``info.change_rate(r)``
   offers ``r`` from now until the load's planned end (a stage appended now, see
   ``Schedule.with_stage_from``: the intended times stay anchored at ``t0``);
2. **drain**: operations still in flight get up to ``config.grace`` seconds to end (less when
   ``info.cut_drain()`` is called); the deadlines keep firing meanwhile, so an operation whose
   first deadline falls within the grace ends there, timed out;
3. **cut-off**: whatever remains is recorded as timed out *at its own deadline* (the value a
   patient platform would have recorded), so nothing is dropped, and ``ops.issued ==
   ops.completed + ops.timed_out + ops.errors`` holds when ``run_platform`` returns its
   ``PlatformResult`` (``ops.sent``, the operations written, is ``ops.issued`` less those that
   timed out still queued, ``ops.timed_out_queued``: see ``loadgen.platform.inflight``). How many the grace cut is ``PlatformResult.cut_off`` (``cut_by_grace`` in
   ``run_info()``, the ``ops.cut_by_grace`` counter, ``operations.cut_by_grace`` in the
   summary);
4. **linger**: the south API keeps listening ``config.south.linger`` seconds more (less when
   ``info.cut_drain()`` is called), so that a duplicate final or a partial after the final that
   arrives right behind the last operation is answered 201 and counted (PROTOCOL.md §5), not
   refused. Every operation has ended by then: the linger changes no duration, rate or outcome,
   only the counters of such late messages.

With ``config.measure_from`` (a capacity step's warm-up), operations intended before
``t0 + measure_from`` run as usual but are recorded into the table's separate warm-up
``Metrics`` (``loadgen.platform.measured``), and the result's rates and ``load_duration_s`` are
those of the measured window.

Cancelled mid-run (Ctrl-C), it raises ``Cancelled`` like any trio function; everything measured
so far is in ``metrics`` and ``info.statistics()`` still answers.

Generator health is watched throughout: scheduler lateness (recorded per send), event-loop lag
(``monitor_loop_lag``) and process CPU over the load window. When lateness p99, loop lag p99 or
CPU exceed ``config.health``, the result is flagged *saturated*: its numbers describe the
generator, not the target.
"""

from __future__ import annotations

import dataclasses
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import trio

from loadgen.errors import ConfigError
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.server import HTTPServer
from loadgen.http.tls import client_context, server_context
from loadgen.metrics.collector import quiet_collector
from loadgen.metrics.health import monitor_loop_lag, p99_ms, saturation_reasons
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import PlatformConfig, Targets
from loadgen.platform.inflight import InflightTable, TableStats
from loadgen.platform.measured import MeasuredTable
from loadgen.platform.mix import DeviceChooser, OperationMix
from loadgen.platform.northapi import NorthCore
from loadgen.platform.schedule import Arrivals, Schedule
from loadgen.platform.sender import DeviceRoute, Lane, Line, Sender, Transport
from loadgen.platform.south import PendingQueues, SouthCore, count_server_refusals
from loadgen.protocol import PathTemplate
from loadgen.seeds import resolve_seed

__all__ = ["PlatformInfo", "PlatformResult", "PlatformStats", "run_platform"]

Phase = Literal["waiting", "load", "drain", "linger", "done"]
#: Connection attempts give up after this at most (each also at its operation's first deadline).
_CONNECT_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformStats:
    """A live snapshot for status lines."""

    phase: Phase
    elapsed: float  # seconds since the load started (0 while waiting)
    intended_rate: float  # the schedule's rate now (0 for the closed model)
    in_flight: int
    peak_in_flight: int
    queued: int  # of ``in_flight``, issued but not written yet (waiting for a connection)
    pending_queued: int
    counters: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformResult:
    """What a finished run says about itself (the counters and histograms are in ``metrics``)."""

    started_at: float  # epoch seconds at the load start
    load_duration_s: float
    duration_s: float  # load + drain
    offered_rate: float | None  # None for the closed model
    achieved_rate: float  # completed per second of load window
    sent_rate: float
    counters: dict[str, int]
    peak_in_flight: int
    cut_off: int  # operations still in flight after the grace period (recorded as timed out,
    # at their own deadline; also counted in ``ops.cut_by_grace``)
    saturated: bool
    reasons: tuple[str, ...]
    generator: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # the seed the run used (drawn when the config had none)

    def run_info(self) -> dict[str, Any]:
        """The ``run`` mapping ``loadgen.report.summary.build_summary`` takes."""
        return {
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "load_duration_s": round(self.load_duration_s, 3),
            "offered_rate": None if self.offered_rate is None else round(self.offered_rate, 3),
            "cut_by_grace": self.cut_off,
            "seed": self.seed,
            "generator": {
                **self.generator,
                "saturated": self.saturated,
                "reasons": list(self.reasons),
            },
        }


class PlatformInfo:
    """Handed out by ``task_status.started``: the south API's address and the load trigger."""

    def __init__(
        self,
        *,
        south_url: str,
        south_ca_pem: bytes | None,
        core: SouthCore,
        table: InflightTable,
        metrics: Metrics,
        schedule: Schedule | None,
        seed: int,
        north: NorthCore | None = None,
        north_url: str | None = None,
    ) -> None:
        self.north = north  # the stand-in's north API, when the config asks for it
        self.north_url = north_url
        self.seed = seed  # the run's seed (drawn when the config had none)
        self.south_url = south_url
        self.south_ca_pem = south_ca_pem
        self.core = core
        self.table = table
        self.metrics = metrics
        self.schedule = schedule
        self.phase: Phase = "waiting"
        self.t0: float | None = None
        self._begin = trio.Event()
        self._targets: Targets | None = None
        self._load_scope = trio.CancelScope()
        self._drain_scope = trio.CancelScope()
        self._linger_scope = trio.CancelScope()
        self._pacing = trio.CancelScope()  # the sender's pacing loop, restarted by a rate change

    def __repr__(self) -> str:
        return f"<PlatformInfo {self.south_url} {self.phase} in_flight={len(self.table)}>"

    def change_rate(self, rate: float) -> float:
        """Offer ``rate`` from now until the load's planned end; the time of the change
        (seconds since ``t0``) is returned. ``ValueError`` (saying why) when no open-model load
        is running or the rate is not a number >= 0; nothing changes then."""
        if self.schedule is None:
            raise ValueError("the closed model has no rate to change (it is paced by completions)")
        if self.phase != "load" or self.t0 is None or self._load_scope.cancel_called:
            raise ValueError(f"no load is running (the run is in its {self.phase} phase)")
        at = trio.current_time() - self.t0
        if at >= self.schedule.duration:
            raise ValueError("the load has ended")
        self.schedule = self.schedule.with_stage_from(at, rate)
        self._pacing.cancel()
        return at

    def begin_load(self, targets: Targets | None = None) -> None:
        """Start the load (with ``hold=True``), optionally at other ``targets``."""
        if self._begin.is_set():
            raise RuntimeError("the load has already begun")
        self._targets = targets
        self._begin.set()

    def cut_drain(self) -> None:
        """End the drain now (a second Ctrl-C): what is still in flight is recorded as timed
        out at its own deadline, exactly as after the grace period, and the run returns (the
        south API does not linger)."""
        self._load_scope.cancel()
        self._drain_scope.cancel()
        self._linger_scope.cancel()
        if not self._begin.is_set():
            self._begin.set()

    def stop_load(self) -> None:
        """End the load phase now (Ctrl-C): nothing more is issued; the drain follows as usual."""
        self._load_scope.cancel()
        if not self._begin.is_set():
            self._begin.set()

    def statistics(self) -> PlatformStats:
        elapsed = 0.0 if self.t0 is None else trio.current_time() - self.t0
        rate = 0.0
        if self.schedule is not None and self.phase == "load":
            rate = self.schedule.rate_at(elapsed)
        table: TableStats = self.table.statistics()
        return PlatformStats(
            phase=self.phase,
            elapsed=elapsed,
            intended_rate=rate,
            in_flight=table.in_flight,
            peak_in_flight=table.peak,
            queued=table.queued,
            pending_queued=len(self.core.pending),
            counters=dict(self.metrics.counters),
        )


async def _serve_north(
    core: NorthCore,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The north API (jobs) and its callback workers, until cancelled."""
    north = core.config
    server = HTTPServer(core.http_handler, now=core.http_now)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run_callbacks)
        [(host, port), *_] = await nursery.start(
            lambda task_status: server.serve(north.host, north.port, task_status=task_status)
        )
        shown = north.advertise_host or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        if ":" in shown:
            shown = f"[{shown}]"
        task_status.started(f"http://{shown}:{port}")


async def _serve_south(
    core: SouthCore,
    config: PlatformConfig,
    *,
    task_status: trio.TaskStatus[tuple[str, bytes | None]] = trio.TASK_STATUS_IGNORED,
) -> None:
    south = config.south
    ssl_context: ssl.SSLContext | None = None
    ca_pem = None
    if south.tls:
        tls = server_context(south.cert_file, south.key_file)
        ssl_context, ca_pem = tls.context, tls.ca_pem
    server = HTTPServer(core.http_handler, now=core.http_now)
    try:
        async with trio.open_nursery() as nursery:
            [(host, port), *_] = await nursery.start(
                lambda task_status: server.serve(
                    south.host,
                    south.port,
                    ssl_context=ssl_context,
                    backlog=south.backlog,
                    task_status=task_status,
                )
            )
            shown = south.advertise_host or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
            if ":" in shown:
                shown = f"[{shown}]"
            scheme = "https" if south.tls else "http"
            task_status.started((f"{scheme}://{shown}:{port}", ca_pem))
    finally:
        # The server's own refusals (an oversize body is 413 before the handler runs): counted
        # once the server is closed, so the summary has them (``south.too_large``, ...).
        count_server_refusals(server.stats.errors, core.counters)


def _may_hear_more(info: PlatformInfo) -> bool:
    """Whether a device may still POST after the last operation ended: one has talked to the
    south API during the run, or an operation ended without its answer (its final may still
    come). Sync answers only, every one received, leave nobody to hear from."""
    if info.core.heard:
        return True
    counters = [info.metrics.counters]
    if isinstance(info.table, MeasuredTable):
        counters.append(info.table.warmup.counters)
    # (an operation strict judging ended had its answer: nothing more is owed for it)
    return any(
        c.get("ops.timed_out", 0) or c.get("ops.errors", 0) > c.get("ops.strict_errors", 0)
        for c in counters
    )


async def _linger(info: PlatformInfo, seconds: float) -> None:
    """Keep the south API up ``seconds`` after the run's end (see the module docstring)."""
    if seconds <= 0 or not _may_hear_more(info):
        return
    info.phase = "linger"
    with info._linger_scope:
        await trio.sleep(seconds)
    info.phase = "done"


def _routes(config: PlatformConfig, targets: Targets) -> list[DeviceRoute]:
    paths = PathTemplate(config.base_path)
    lanes: dict[Origin, Lane] = {}
    routes: list[DeviceRoute] = []
    pairs = targets.resolve()
    sleepy_every = 0 if config.sleepy_share <= 0 else max(1, round(1 / config.sleepy_share))
    for index, (device_id, url) in enumerate(pairs):
        origin, prefix = Origin.parse(url)
        lane = lanes.get(origin)
        if lane is None:
            lane = lanes[origin] = Lane(origin, config.max_connections)
        target = (prefix + paths.request_path(device_id, plural=config.plural_requests)).encode()
        sleepy = device_id in config.sleepy_devices or (
            sleepy_every > 0 and index % sleepy_every == 0
        )
        routes.append(DeviceRoute(device_id, lane, target, sleepy))
    return routes


def _client_ssl(config: PlatformConfig, targets: Targets) -> ssl.SSLContext | None:
    urls = [t.url for t in targets.devices] if targets.devices else [targets.base_url]
    if not any(url.startswith("https:") for url in urls):
        return None
    return client_context(verify=config.verify, ca_file=config.ca_file)


async def _timer(
    table: InflightTable,
    resend: Callable[[list[Any]], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The one task that fires every deadline (ack, final, retry) of the in-flight table."""
    scope: trio.CancelScope | None = None

    def earlier(deadline: float) -> None:
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    table.on_earlier = earlier
    task_status.started()
    try:
        while True:
            with trio.CancelScope(deadline=table.next_deadline) as scope:
                await trio.sleep_forever()
            scope = None
            due = table.expire(trio.current_time())
            if due:
                resend(due)
    finally:
        table.on_earlier = None


def _health(
    config: PlatformConfig, metrics: Metrics, cpu_percent: float
) -> tuple[bool, tuple[str, ...], dict[str, Any]]:
    lateness_p99 = p99_ms(metrics.single("lateness").merged()) or 0.0
    lag_p99 = p99_ms(metrics.single("loop_lag").merged()) or 0.0
    reasons = saturation_reasons(
        config.health,
        lateness_p99_ms=lateness_p99,
        loop_lag_p99_ms=lag_p99,
        cpu_percent=cpu_percent,
        queue_full=int(metrics.counters.get("ops.rejected.queue_full", 0)),
    )
    late = int(metrics.counters.get("ops.late_sends", 0))
    generator = {
        "lateness_p99_ms": lateness_p99,
        "loop_lag_p99_ms": lag_p99,
        "cpu_percent": round(cpu_percent, 1),
        "late_sends": late,
        "fell_behind": late > 0,
    }
    return bool(reasons), tuple(reasons), generator


async def run_platform(
    config: PlatformConfig,
    metrics: Metrics,
    *,
    hold: bool = False,
    transport: Transport | None = None,
    task_status: trio.TaskStatus[PlatformInfo] = trio.TASK_STATUS_IGNORED,
) -> PlatformResult:
    """Run the virtual platform once (see the module docstring for the sequence).

    ``transport`` replaces the HTTP connection pool (tests run an in-memory device on a mock
    clock with it); ``hold`` waits for ``info.begin_load()`` before the load starts.
    A config without a seed gets a fresh one here (``info.seed``, ``PlatformResult.seed``).
    """
    seed = resolve_seed(config.seed)
    config = dataclasses.replace(config, seed=seed)
    arrival = config.arrival
    schedule = None if arrival.model == "closed" else Schedule(arrival.stages)
    breakdown, strict = config.breakdown, config.strict
    linger = config.south.linger  # ended ids are remembered timeout + linger (inflight rule 6)
    table = (
        InflightTable(metrics, breakdown_by_name=breakdown, strict=strict, linger=linger)
        if config.measure_from is None
        else MeasuredTable(metrics, breakdown_by_name=breakdown, strict=strict, linger=linger)
    )
    core = SouthCore(
        table, metrics, paths=PathTemplate(config.base_path), api_key=config.south.api_key,
        pending=PendingQueues(),
    )  # fmt: skip
    for name in ("ack", "first_response", "complete", "step"):
        metrics.phase(name)
    metrics.single("lateness")
    async with trio.open_nursery() as nursery:
        south_url, ca_pem = await nursery.start(_serve_south, core, config)
        north = north_url = None
        if config.north is not None:
            north = NorthCore(config.north, table, metrics)
            north_url = await nursery.start(_serve_north, north)
        info = PlatformInfo(
            south_url=south_url, south_ca_pem=ca_pem, core=core, table=table, metrics=metrics,
            schedule=schedule, seed=seed, north=north, north_url=north_url,
        )  # fmt: skip
        await nursery.start(monitor_loop_lag, metrics)
        task_status.started(info)
        if hold:
            await info._begin.wait()
        targets = info._targets or config.targets
        routes = _routes(config, targets)
        if not routes:
            raise ConfigError("no targets to send to", key="targets")
        core.device_ids = [route.device_id for route in routes]  # to judge async messages
        if transport is None:
            headers = [(b"X-ApiKey", config.api_key.encode())] if config.api_key else []
            # Each exchange is given up at its operation's first deadline, min(ack deadline,
            # final deadline), passed with the request; the pool's own timeouts are only a
            # backstop beyond the longest of them. They also set how often the pool's watchdog
            # looks (a tenth of the shortest of them), i.e. how soon after its deadline the
            # connection of an operation that timed out is closed.
            longest = max(
                min(t.ack_timeout, t.timeout) for t in map(config.timeouts_of, config.mix)
            )
            limits = ClientLimits(
                max_connections=config.max_connections,
                keep_alive=config.keep_alive,
                connect_timeout=min(_CONNECT_TIMEOUT, longest),
                read_timeout=longest + 1.0,
            )
            async with open_pool(
                limits=limits, ssl_context=_client_ssl(config, targets), headers=headers
            ) as pool:
                with quiet_collector():
                    result = await _load(
                        config, metrics, info, routes, pool.request, schedule, lines=pool.hold,
                        mux_pool=pool,
                    )  # fmt: skip
        else:
            with quiet_collector():
                result = await _load(config, metrics, info, routes, transport, schedule)
        if north is not None:
            # the notifications of the last operations, before the linger or the end
            await north.flush(config.north.callback_timeout if config.north else 0.0)
        await _linger(info, config.south.linger)
        nursery.cancel_scope.cancel()
    # What the linger heard, and the server's own refusals (counted as it closed).
    return replace(result, counters=dict(metrics.counters))


async def _pace(info: PlatformInfo, sender: Sender, arrivals: Arrivals, end: float) -> None:
    """The open model's issuing loop. A rate change cancels the sender's loop (at one of its
    awaits, where the last count drawn is not issued yet) and restarts it on the new schedule
    from that same count."""
    while True:
        assert info.schedule is not None
        with trio.CancelScope() as info._pacing:
            await sender.run_open(info.schedule.times_of(arrivals), end)
        if not info._pacing.cancelled_caught:
            return
        arrivals.back()


async def _load(
    config: PlatformConfig,
    metrics: Metrics,
    info: PlatformInfo,
    routes: list[DeviceRoute],
    transport: Transport,
    schedule: Schedule | None,
    *,
    lines: Callable[[Origin], Line] | None = None,
    mux_pool: ConnectionPool | None = None,
) -> PlatformResult:
    arrival = config.arrival
    table = info.table
    started_at = time.time()
    seed = info.seed
    mix = OperationMix(config.mix, seed=seed, timestamp_ms=int(started_at * 1000))
    chooser = DeviceChooser(len(routes), config.device_choice, seed=seed, zipf_s=config.zipf_s)
    async with trio.open_nursery() as workers:
        sender = Sender(
            table=table,
            metrics=metrics,
            routes=routes,
            mix=mix,
            timeouts=[config.timeouts_of(e) for e in config.mix],
            chooser=chooser,
            transport=transport,
            pending=info.core.pending,
            nursery=workers,
            t0=trio.current_time(),
            wall0_ms=int(started_at * 1000),
            max_in_flight=config.max_in_flight,
            max_queued=config.max_queued,
            lines=lines,
            mux_pool=mux_pool,
        )
        if sender.client is not None:  # plain HTTP connections: one task reads every answer
            await workers.start(sender.client.run)
        await workers.start(_timer, table, sender.resend)
        # The load's clock starts once all it needs is built: the sender's lanes of 100,000
        # routes take tens of milliseconds, and operations intended meanwhile would all be late.
        started_at = time.time()
        t0 = sender.t0 = trio.current_time()
        sender.wall0_ms = int(started_at * 1000)
        # With a measured window, rates are per second of that window (its counters hold only it).
        measured_from = t0 + (config.measure_from or 0.0)
        if isinstance(table, MeasuredTable):
            table.measure_from = measured_from
        if info.north is not None:
            info.north.attach(sender, routes, t0, int(started_at * 1000))
        info.t0 = t0
        info.phase = "load"
        cpu0, wall0 = time.process_time(), time.perf_counter()
        end = t0 + arrival.duration
        with info._load_scope:
            if schedule is not None:
                await _pace(info, sender, Arrivals(arrival.model, seed), end)
            else:
                await sender.run_closed(arrival.concurrency, end, per_device=arrival.per_device)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        load_end = trio.current_time()
        info.phase = "drain"
        if len(table):
            drained = trio.Event()
            previous_on_end = table.on_end

            def ended(op: Any) -> None:
                if previous_on_end is not None:
                    previous_on_end(op)
                if not table.live:
                    drained.set()

            table.on_end = ended
            with info._drain_scope:
                info._drain_scope.deadline = trio.current_time() + config.grace
                await drained.wait()
        cut_off = table.drain()
        if info.north is not None:
            info.north.close()
        workers.cancel_scope.cancel()
    info.phase = "done"
    finished = trio.current_time()
    # The load window that ran: the plan's, or up to where a Ctrl-C stopped it. Rates (offered
    # included: what the schedule asked for within that window) are over it, so an interrupted
    # run is compared with what it was asked to do while it ran, not with the whole plan.
    window_end = min(load_end, end)
    load_s = max(window_end - measured_from, 1e-9)
    offered = None
    schedule = info.schedule  # with the stages rate changes appended
    if schedule is not None:
        asked = schedule.count_until(window_end - t0) - schedule.count_until(measured_from - t0)
        offered = asked / load_s
    cpu_percent = 100.0 * (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else 0.0
    saturated, reasons, generator = _health(config, metrics, cpu_percent)
    counters = dict(metrics.counters)
    generator["issued"] = sender.issued
    return PlatformResult(
        started_at=started_at,
        load_duration_s=load_s,
        duration_s=finished - t0,
        offered_rate=offered,
        achieved_rate=counters.get("ops.completed", 0) / load_s,
        sent_rate=counters.get("ops.sent", 0) / load_s,
        counters=counters,
        peak_in_flight=table.peak,
        cut_off=cut_off,
        saturated=saturated,
        reasons=reasons,
        generator={
            k: v for k, v in generator.items() if not isinstance(v, float) or math.isfinite(v)
        },
        seed=seed,
    )
