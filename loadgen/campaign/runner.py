"""``run_campaign``: one scenario, both sides (or one), from start to report.

Sequence (sides = "both", everything in one trio run on loopback):

1. the results folder is created and the resolved scenario saved; ``run.json`` is written;
2. the interval task starts (``.hlog``, ``counters.jsonl`` and ``timeseries.csv`` are flushed every
   interval, so a killed run leaves usable data), with the live progress line as another sink;
3. the platform starts its south API and holds; the fleet starts with ``platform_url`` set to it;
   the load begins against the fleet's bound address (unless the scenario names targets);
4. the platform ends by itself after the last stage, drains, and records what is left at its
   deadline; then the fleet drains and stops;
5. ``summary.json`` (with the thresholds evaluated) and ``report.html`` are written and the exit
   code says whether every threshold held (99 when one failed, as k6).

Interruptions lose nothing: the first Ctrl-C (or SIGTERM) stops the load and lets operations in
flight drain up to the grace period; a second one cuts the drain short. Either way the results are
written and marked interrupted. With ``abort_on_fail``, thresholds are checked every interval once
``abort_delay`` has passed and the first failure interrupts the run the same way. A harness
failure (an exception) propagates, and the last interval line on disk then reads "not finished",
as a killed run's does, so a merge of shards that includes it is marked interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from loadgen.campaign.progress import Progress
from loadgen.campaign.prometheus import PrometheusExporter
from loadgen.campaign.scenario import SOUTH_PLACEHOLDER, LoadedScenario, Scenario
from loadgen.dashboard.board import Board
from loadgen.dashboard.server import Controls, DashboardServer, open_dashboard
from loadgen.device.config import FleetConfig
from loadgen.device.runner import FleetInfo, run_fleet
from loadgen.errors import ConfigError, ListenError, first_of
from loadgen.http.fdlimit import raise_fd_limit
from loadgen.metrics.hdr import prepare as prepare_histograms
from loadgen.metrics.health import CpuGauge, HealthLimits, monitor_loop_lag
from loadgen.metrics.intervals import Interval, IntervalSink, run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.metrics.thresholds import Threshold
from loadgen.north.jobs import JobTracker
from loadgen.north.runner import NorthInfo, NorthResult
from loadgen.platform.config import PlatformConfig, Stage, Targets
from loadgen.platform.runner import PlatformInfo, PlatformResult, run_platform
from loadgen.platform.schedule import Schedule
from loadgen.report.results import RunWriter, load_run
from loadgen.report.summary import histograms_of, summary_from_metrics, write_summary

__all__ = [
    "CampaignOutcome",
    "SidesOutcome",
    "run_campaign",
    "run_sides",
]

ABORT_DELAY: Final = 10.0  # seconds of load before abort_on_fail may fire


@dataclass(frozen=True, slots=True)
class CampaignOutcome:
    directory: Path
    summary: dict[str, Any]
    report: Path | None
    thresholds_failed: bool
    interrupted: bool


def _offered_rate(platform: PlatformConfig | None) -> float | None:
    if platform is None or platform.arrival.model == "closed":
        return None
    stages: tuple[Stage, ...] = platform.arrival.stages
    total = sum(stage.duration for stage in stages)
    if total <= 0:
        return None
    operations = 0.0
    previous = 0.0
    for stage in stages:
        start = previous if stage.ramp else stage.rate
        operations += (start + stage.rate) / 2 * stage.duration
        previous = stage.rate
    return operations / total


def _seeds(scenario: Scenario) -> dict[str, int | None]:
    """The seeds of the sides (the command draws those left open before the run)."""
    return {
        side: config.seed
        for side in ("devices", "platform", "north")
        if (config := getattr(scenario, side)) is not None
    }


def _stage_at(
    platform: PlatformConfig | None, elapsed: float, changes: tuple[tuple[float, str], ...] = ()
) -> str:
    if platform is None:
        return "serve"
    for start, name in reversed(changes):  # a stage appended by a rate change, from its start
        if start <= elapsed < sum(stage.duration for stage in platform.arrival.stages):
            return name
    return _stage_of(platform.arrival.stages, elapsed)


def _stage_of(stages: tuple[Stage, ...], elapsed: float) -> str:
    at = 0.0
    for index, stage in enumerate(stages):
        at += stage.duration
        if elapsed < at:
            name = getattr(stage, "name", "") or ("ramp" if stage.ramp else "hold")
            return f"{index + 1}:{name}"
    return "drain"


class _Run:
    """The live state of one campaign run, shared by the tasks of ``run_campaign``."""

    def __init__(
        self, scenario: Scenario, metrics: Metrics, notice: Callable[[str], None] | None = None
    ) -> None:
        self.scenario = scenario
        self.metrics = metrics
        self.notice = notice or (lambda text: None)
        self.platform: PlatformInfo | None = None
        self.fleet: FleetInfo | None = None
        self.platform_result: PlatformResult | None = None
        # the north side (issue 10): its live info, tracker and result, in north campaigns
        self.north: NorthInfo | None = None
        self.north_tracker: JobTracker | None = None
        self.north_result: NorthResult | None = None
        self.interrupted = False
        self.failed = False  # ended by an exception (a harness failure): not a finished run
        self.abort_reason: str | None = None
        self.stop_load = trio.Event()
        self.cut = trio.Event()
        self.load_seconds = 0.0  # the load window that ran (devices only: how long it served)
        self.begun = False  # the load has begun (a failure after it keeps the results folder)
        self.directory: Path | None = None
        self.load_stopped_at: float | None = None  # seconds after the load's t0 (a Ctrl-C)
        self._last_count = 0.0  # N(t) of the schedule at the previous interval's end
        self._last_gauge = trio.current_time()
        self.cpu = CpuGauge()
        self.rate_changes: tuple[tuple[float, str], ...] = ()  # (load time, stage name)
        self._t0 = trio.current_time()  # the run's t0 (intervals), set as they start
        # awaited by the sides once their servers are up, right before the load begins
        self.before_load: Callable[[], Awaitable[None]] = _nothing

    def gauges(self) -> dict[str, object]:
        """The gauges of the interval ending now (called once per interval)."""
        out: dict[str, object] = {"cpu_percent": round(self.cpu(), 1)}
        if self.north is not None and self.north_tracker is not None:
            north = self.north
            out["in_flight"] = len(self.north_tracker)
            out["offered_rate"] = self._offered(north.elapsed, north.phase, north.schedule)
            out["stage"] = _stage_of(self.scenario.north.arrival.stages if self.scenario.north
                                     else (), north.elapsed)  # fmt: skip
            out["phase"] = "load" if north.phase in ("waiting", "load") else "drain"
        elif self.platform is not None:
            stats = self.platform.statistics()
            out["in_flight"] = stats.in_flight
            out["queued"] = stats.queued  # of in_flight, not written yet (a busy pool)
            out["offered_rate"] = self._offered(stats.elapsed, stats.phase)
            out["stage"] = _stage_at(self.scenario.platform, stats.elapsed, self.rate_changes)
            out["phase"] = "load" if stats.phase in ("waiting", "load") else "drain"
        elif self.fleet is not None:
            out["in_flight"] = self.fleet.handle.in_flight
            out["stage"] = "serve"
            out["phase"] = "drain" if self.fleet.handle.stopping else "load"
        return out

    def _offered(
        self, elapsed: float, phase: str, schedule: Schedule | None = None
    ) -> float | None:
        """What the schedule asked for over the interval: ``(N(t1) - N(t0)) / (t1 - t0)``, like
        the sent and completed rates beside it (the rate at the interval's end would make a ramp
        look like a shortfall). None for the closed model."""
        if schedule is None:
            schedule = self.platform.schedule if self.platform is not None else None
        if schedule is None:
            return None
        if phase == "waiting":
            elapsed = 0.0
        elif phase != "load":
            elapsed = min(elapsed, self.load_stopped_at or elapsed)
        count = schedule.count_until(elapsed)
        previous, self._last_count = self._last_count, count
        now = trio.current_time()
        length, self._last_gauge = now - self._last_gauge, now
        return round((count - previous) / length, 3) if length > 0 else 0.0

    def in_flight(self) -> int:
        if self.north_tracker is not None:
            return len(self.north_tracker)
        if self.platform is not None:
            return self.platform.statistics().in_flight
        return 0 if self.fleet is None else self.fleet.handle.in_flight

    def interrupt(self, reason: str) -> None:
        if self.stop_load.is_set():
            if not self.cut.is_set():
                self.notice("stopping now: what is still in flight is recorded at its deadline")
            self.cut.set()
            return
        self.interrupted = True
        self.abort_reason = self.abort_reason or reason
        self.stop_load.set()
        self.notice(f"{reason}: draining {self.in_flight()} in flight — Ctrl-C again to stop now")


def _controls(run: _Run, writer: Callable[[], RunWriter | None], meta: dict[str, Any]) -> Controls:
    """The dashboard's Stop (the first Ctrl-C's drain) and rate change (a stage appended now),
    each recorded in run.json with its time on the run's clock (``at_s``, as ``t_s``); one used
    before the load began (run.json is written then) waits in ``meta`` for it."""

    def record(kind: str, **detail: object) -> dict[str, Any]:
        entry = {"kind": kind, "at_s": round(trio.current_time() - run._t0, 3), **detail}
        current = writer()
        if current is None:
            meta.setdefault("controls", []).append(entry)
        else:
            current.control(entry)
        return entry

    def stop() -> dict[str, Any]:
        entry = record("stop")
        run.interrupt("stopped from the dashboard")
        return entry

    def change_rate(rate: float) -> dict[str, Any]:
        if run.platform is None:
            raise ValueError("a devices-only run has no rate to change")
        at = run.platform.change_rate(rate)
        stages = run.scenario.platform.arrival.stages if run.scenario.platform else ()
        name = f"{len(stages) + len(run.rate_changes) + 1}:rate {rate:g}/s"
        run.rate_changes += ((at, name),)
        run.notice(f"dashboard: the rate is {rate:g}/s from {at:.1f}s (stage {name})")
        return record("rate", rate=rate, load_at_s=round(at, 3), stage=name)

    return Controls(stop=stop, change_rate=change_rate)


async def _nothing() -> None:
    pass


async def _unless_interrupted(run: _Run, wait: Callable[[], Awaitable[float]]) -> float | None:
    """``wait()``'s result, or None once a Ctrl-C came first (the load then starts and stops
    at once: an interrupted run with its results folder, as at any other moment)."""
    result: float | None = None
    async with trio.open_nursery() as nursery:

        async def waiting() -> None:
            nonlocal result
            result = await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(waiting)
        await run.stop_load.wait()
        nursery.cancel_scope.cancel()
    return result


async def _watch_signals(run: _Run) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            run.interrupt(signal.Signals(signum).name)


def _abort_sink(run: _Run, thresholds: list[Threshold], delay: float) -> IntervalSink:
    def check(interval: Interval) -> None:
        if interval.end < delay or run.stop_load.is_set():
            return
        summary = summary_from_metrics(run.metrics, {"load_duration_s": interval.end})
        for threshold in thresholds:
            result = threshold.evaluate(summary)
            if not result.ok:
                run.interrupt(f"threshold failed: {threshold.expression} (actual {result.actual})")
                return

    return check


async def _cut_on_second_signal(run: _Run, scope: trio.CancelScope) -> None:
    """A second Ctrl-C cuts the drain short (the results are still written).

    While the platform runs, it is asked to end its drain rather than cancelled, so what is
    still in flight is recorded as timed out at its deadline and the counts still add up; the
    fleet is then stopped without its drain. Otherwise everything here is cancelled at once.
    """
    await run.cut.wait()
    if run.platform is not None and run.platform_result is None:
        run.platform.cut_drain()
    else:
        scope.cancel()


async def _serve_fleet(
    run: _Run,
    config: FleetConfig,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[FleetInfo],
) -> None:
    """Run the fleet; once it has drained and returned, end the enclosing watchers."""
    await run_fleet(config, run.metrics, task_status=task_status)
    done.cancel()


def _announce_fleet(run: _Run, fleet: FleetInfo) -> None:
    """Where the fleet listens (port 0 became a real port) and where its self-signed CA is."""
    where = ", ".join(url for url in (fleet.http_url, fleet.https_url) if url)
    run.notice(f"devices: {len(fleet.handle.devices)} listening on {where}")
    if fleet.ca_pem is not None and run.directory is not None:
        path = run.directory / "devices-ca.pem"
        path.write_bytes(fleet.ca_pem)
        run.notice(f"devices: their self-signed CA is {path}")


def _count_devices(metrics: Metrics, fleet: FleetInfo) -> None:
    """Put the fleet's size in the counters, so that ``counters.jsonl`` carries it from the
    first interval: a rebuilt run and the merge of shards (which sums counters) still know how
    many devices served, where ``summary["extra"]["devices"]`` exists only in a live run."""
    statistics = fleet.handle.statistics()
    for name in ("device.devices", "device.sleepy.devices"):
        if statistics.get(name):
            metrics.counters[name] = statistics[name]


async def _platform_then_fleet(run: _Run, scenario: Scenario) -> None:
    """Sides "both" or "platform": the platform drives; the fleet (if any) serves it."""
    platform_config = scenario.platform
    assert platform_config is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cut_on_second_signal, run, nursery.cancel_scope)
        async with trio.open_nursery() as platform_nursery:

            async def platform_task(*, task_status: trio.TaskStatus[PlatformInfo]) -> None:
                run.platform_result = await run_platform(
                    platform_config, run.metrics, hold=True, task_status=task_status
                )
                platform_nursery.cancel_scope.cancel()  # ends the interrupt watcher too

            run.platform = await platform_nursery.start(platform_task)
            run.notice(f"platform: south API on {run.platform.south_url}")
            targets: Targets | None = None
            fleet_config = scenario.devices
            if scenario.campaign.sides == "both" and fleet_config is not None:
                if fleet_config.responder.platform_url in (None, SOUTH_PLACEHOLDER):
                    fleet_config = dataclasses.replace(
                        fleet_config,
                        responder=dataclasses.replace(
                            fleet_config.responder, platform_url=run.platform.south_url
                        ),
                    )
                run.fleet = await nursery.start(
                    _serve_fleet, run, fleet_config, nursery.cancel_scope
                )
                _count_devices(run.metrics, run.fleet)
                _announce_fleet(run, run.fleet)
                if not platform_config.targets.devices and run.fleet.http_url:
                    targets = dataclasses.replace(
                        platform_config.targets,
                        base_url=run.fleet.http_url,
                        id_pattern=fleet_config.id_pattern,
                        count=fleet_config.count,
                        first_index=fleet_config.first_index,
                    )
            await run.before_load()
            run.begun = True
            run.platform.begin_load(targets)
            platform_nursery.start_soon(_stop_load_on_interrupt, run, platform_nursery.cancel_scope)
        if run.fleet is not None and not run.cut.is_set():
            run.fleet.handle.shutdown()  # the nursery then waits for the fleet's drain
        else:
            nursery.cancel_scope.cancel()


@dataclass(frozen=True, slots=True)
class SidesOutcome:
    """What ``run_sides`` returns: the platform's result and the fleet's statistics (if any)."""

    platform: PlatformResult
    devices: dict[str, Any] | None


async def run_sides(scenario: Scenario, metrics: Metrics) -> SidesOutcome:
    """Run a scenario's platform side once (and its fleet, with sides = "both"), recording into
    ``metrics``: the load and its drain, without a results folder, a progress display or signal
    handling. A capacity step is this, with its own stages."""
    if scenario.platform is None or scenario.campaign.sides == "devices":
        raise ConfigError("expected a scenario with a platform side", key="campaign.sides")
    run = _Run(scenario, metrics)
    await _platform_then_fleet(run, scenario)
    assert run.platform_result is not None
    devices = None if run.fleet is None else dict(run.fleet.handle.statistics())
    return SidesOutcome(platform=run.platform_result, devices=devices)


async def _stop_load_on_interrupt(run: _Run, platform_scope: trio.CancelScope) -> None:
    await run.stop_load.wait()
    assert run.platform is not None
    stop: Callable[[], None] | None = getattr(run.platform, "stop_load", None)
    if stop is None:
        platform_scope.cancel()
    else:
        run.load_stopped_at = run.platform.statistics().elapsed
        stop()  # the load phase ends now; the platform drains and returns by itself


async def _fleet_only(run: _Run, scenario: Scenario) -> None:
    config = scenario.devices
    assert config is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cut_on_second_signal, run, nursery.cancel_scope)
        run.fleet = await nursery.start(_serve_fleet, run, config, nursery.cancel_scope)
        _count_devices(run.metrics, run.fleet)
        _announce_fleet(run, run.fleet)
        await run.before_load()
        run.begun = True
        begun = trio.current_time()
        with trio.move_on_after(scenario.load_seconds):
            await run.stop_load.wait()
        run.load_seconds = trio.current_time() - begun  # what ran, not what was planned
        run.fleet.handle.shutdown()


def _listen_error(error: ListenError, scenario: Scenario) -> ConfigError:
    """Name the key that chose the address a server could not bind."""
    keys = []
    if scenario.devices is not None:
        devices = scenario.devices
        keys += [
            ("devices.http_port", devices.http_port),
            ("devices.https_port", devices.https_port),
        ]
    if scenario.platform is not None:
        keys.append(("platform.south.port", scenario.platform.south.port))
    keys.append(("output.metrics_port", scenario.output.metrics_port))
    key = next((name for name, port in keys if port == error.port and port), None)
    if key is None:  # the port was free to choose (0): the host is what failed
        key = "platform.south.host" if scenario.devices is None else "devices.host"
    return ConfigError(str(error), key=key)


def _connections(scenario: Scenario) -> int:
    """How many sockets the scenario can hold open at once in this process (both ends count
    when both sides run here): the platform's pool per device origin and the connections its
    south API takes from the fleet, the fleet's listeners' clients and its responder's pool."""
    total = 0
    platform, devices = scenario.platform, scenario.devices
    if platform is not None and scenario.campaign.sides != "devices":
        origins = (
            {url for _, url in platform.targets.resolve()} if platform.targets.devices else {1}
        )
        total += platform.max_connections * len(origins)
    if devices is not None and scenario.campaign.sides != "platform":
        listeners = len(devices.listen_hosts()) * sum(
            port is not None for port in (devices.http_port, devices.https_port)
        )
        inbound = platform.max_connections if platform is not None else 64
        total += inbound * listeners + devices.responder.max_connections
        if scenario.campaign.sides == "both":
            total += devices.responder.max_connections  # the south API's end of those
    return total


def _new_folder(directory: Path, loaded: LoadedScenario) -> list[Path]:
    """Make ``directory`` (and its missing parents) with the run's ``scenario.toml``; returns
    the folders this made, for ``_discard_folder``."""
    made = list(itertools.takewhile(lambda f: not f.exists(), (directory, *directory.parents)))
    directory.mkdir(parents=True, exist_ok=True)
    loaded.save(directory / "scenario.toml")
    return made


def _discard_folder(directory: Path, root: Path, made: Sequence[Path] = ()) -> None:
    """Undo a run that never began: the ``scenario.toml`` it wrote, then its folder and each
    folder above it that is left empty and is the run's own: one ``_new_folder`` ``made``, or
    one below the results ``root`` (``new_run_directory``'s). Nothing else is removed: a folder
    holding anything (another run, a user's file) stays, and so does an exact folder given
    with ``--directory`` that existed before the run."""
    with contextlib.suppress(OSError):
        (directory / "scenario.toml").unlink()
    try:
        top = root.resolve()
        own = {folder.resolve() for folder in made}
        folder = directory.resolve()
    except OSError:
        return
    while folder in own or (folder != top and folder.is_relative_to(top)):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return
        folder = folder.parent


async def run_campaign(
    loaded: LoadedScenario,
    *,
    scenario: Scenario | None = None,
    directory: Path,
    shard: str = "0/1",
    wait_to_start: Callable[[], Awaitable[float]] | None = None,
    progress: str | None = None,
) -> CampaignOutcome:
    """Run a scenario (``loaded``'s, or ``scenario`` derived from it, e.g. one shard) and write
    its results into ``directory`` (created here); see the module docstring.

    ``wait_to_start`` (the shards' start barrier) is awaited once the sides are up (ports bound,
    fleet built), right before the load; it returns the common start (epoch). The results'
    clock (``run.json``'s ``started_at``, the interval boundaries) starts when it returns.

    A problem found before the load starts (a port in use, an address this machine does not
    have) raises ``ConfigError`` naming the key, and leaves no results folder behind. With
    ``output.dashboard`` (and one shard), the live dashboard is served for the whole run and
    shows the summary once it is written."""
    scenario = scenario or loaded.scenario
    output = scenario.output
    if output.dashboard is None or shard != "0/1":
        return await _campaign(loaded, scenario, directory, shard, wait_to_start, progress, None)
    board = Board(
        title=scenario.campaign.name,
        sides=scenario.campaign.sides,
        total_seconds=scenario.load_seconds,
        thresholds=scenario.parsed_thresholds(),
        open_model=scenario.platform is not None and scenario.platform.arrival.model != "closed",
    )
    notice = functools.partial(print, file=sys.stderr, flush=True)
    served = False
    try:
        async with open_dashboard(
            board, output.dashboard, token=output.dashboard_token, notice=notice
        ) as server:
            served = True
            outcome = await _campaign(
                loaded, scenario, directory, shard, wait_to_start, progress, server
            )
            board.finish(outcome.summary, "interrupted" if outcome.interrupted else "finished")
            return outcome
    except ConfigError:
        if not served:  # the dashboard's address: nothing ran, no folder to keep
            _discard_folder(directory, Path(scenario.output.results))
        raise


async def _campaign(
    loaded: LoadedScenario,
    scenario: Scenario,
    directory: Path,
    shard: str,
    wait_to_start: Callable[[], Awaitable[float]] | None,
    progress: str | None,
    dashboard: DashboardServer | None,
) -> CampaignOutcome:
    campaign = scenario.campaign
    raise_fd_limit(_connections(scenario), what=f"campaign {campaign.name}")
    prepare_histograms()  # tables the interval sinks read, built before the load, not in it
    made = _new_folder(directory, loaded)
    thresholds = scenario.parsed_thresholds()
    metrics = Metrics()
    bar = Progress(
        scenario.load_seconds, mode=progress or scenario.output.progress, sides=campaign.sides
    )
    run = _Run(scenario, metrics, notice=bar.notice)
    run.directory = directory
    start_epoch = time.time()  # until the load starts
    meta: dict[str, Any] = {
        "campaign": campaign.name,
        "description": campaign.description,
        "sides": campaign.sides,
        "interval": campaign.interval,
        "shard": shard,
        "offered_rate": _offered_rate(scenario.platform),
        "load_duration_s": scenario.load_seconds,
        "thresholds": list(scenario.thresholds),
        "start_at": None,
        "seed": _seeds(scenario),
    }
    writer: RunWriter | None = None

    def write(interval: Interval) -> Iterator[None]:
        assert writer is not None
        # "final" says the run ended normally; one ended by an error must read as a kill does
        # (in pieces: the interval task yields to the sends between them)
        return writer.pieces(dataclasses.replace(interval, final=False) if run.failed else interval)

    def show(interval: Interval) -> None:
        if run.begun:  # a run that failed to start shows no progress, only its one-line error
            bar(interval)

    sinks: list[IntervalSink] = [write, show]
    if scenario.abort_on_fail and thresholds:
        sinks.append(_abort_sink(run, thresholds, ABORT_DELAY))
    exporter = (
        PrometheusExporter(campaign=campaign.name, shard=shard)
        if scenario.output.metrics_port is not None
        else None
    )
    if exporter is not None:
        sinks.append(exporter)
    if dashboard is not None:
        sinks.append(dashboard.board)
        dashboard.controls = _controls(run, lambda: writer, meta)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, run)

            async def start_clock() -> None:
                nonlocal writer, start_epoch
                if wait_to_start is not None:
                    meta["start_at"] = await _unless_interrupted(run, wait_to_start)
                start_epoch = time.time()
                writer = RunWriter(directory, start_epoch, meta)
                t0 = run._t0 = run._last_gauge = trio.current_time()
                await nursery.start(_intervals, metrics, sinks, t0, campaign.interval, run.gauges)

            run.before_load = start_clock
            if exporter is not None:
                url = await nursery.start(
                    exporter.serve, scenario.output.metrics_host, scenario.output.metrics_port
                )
                bar.notice(f"live metrics: {url}")
            try:
                if campaign.sides == "devices":
                    await nursery.start(monitor_loop_lag, metrics)
                    await _fleet_only(run, scenario)
                elif campaign.sides in ("north", "north-devices"):
                    from loadgen.campaign.north_run import north_sides

                    if campaign.sides == "north-devices":
                        await nursery.start(monitor_loop_lag, metrics)
                    await north_sides(run, scenario)
                else:
                    await _platform_then_fleet(run, scenario)
            except BaseException:
                run.failed = True  # before the intervals task writes its last line
                raise
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        if writer is not None:
            writer.close()
        bar.finish()
        listen = first_of(exc, ListenError)
        barrier = first_of(exc, ConfigError)  # the start barrier failed
        if listen is None and barrier is None:
            raise
        if not run.begun:  # no load ran: no folder to keep
            _discard_folder(directory, Path(scenario.output.results), made)
        if listen is None:
            assert barrier is not None
            raise barrier from None
        raise _listen_error(listen, scenario) from None
    if writer is None:  # stopped before the load began: an empty run, still a results folder
        writer = RunWriter(directory, start_epoch, meta)
    writer.close()
    bar.finish()
    return _finish(run, scenario, directory, thresholds, start_epoch)


async def _intervals(
    metrics: Metrics,
    sinks: list[IntervalSink],
    t0: float,
    period: float,
    gauges: Callable[[], dict[str, object]],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    await run_intervals(
        metrics, sinks, t0=t0, period=period, gauges=gauges, task_status=task_status
    )


def _finish(
    run: _Run,
    scenario: Scenario,
    directory: Path,
    thresholds: list[Threshold],
    start_epoch: float,
) -> CampaignOutcome:
    from loadgen.report.html import render_report
    from loadgen.report.rebuild import generator_verdict
    from loadgen.report.summary import build_summary

    result = run.platform_result
    if run.north_result is not None:  # a north campaign: rates are jobs per second
        info = run.north_result.run_info()
        info["extra"] = {"north": {"correlation": run.north_result.correlation,
                                   "close_by": run.north_result.close_by,
                                   "peak_live_jobs": run.north_result.peak_live}}  # fmt: skip
    elif result is not None:
        info = result.run_info()
    else:
        # devices only: no platform judged the generator; the same verdict a rebuild gives
        # (loop lag and CPU against the default limits), so summary.generator always has one
        info = {
            "started_at": start_epoch,
            "duration_s": round(time.time() - start_epoch, 3),
            "load_duration_s": round(run.load_seconds, 3),
            "offered_rate": None,
            "generator": generator_verdict(
                histograms_of(run.metrics), load_run(directory).columns, HealthLimits()
            ),
        }
    info["campaign"] = scenario.campaign.name
    info["interrupted"] = run.interrupted
    info["seed"] = _seeds(scenario)
    if run.fleet is not None:
        info.setdefault("extra", {})["devices"] = run.fleet.handle.statistics()
    if run.abort_reason:
        info.setdefault("extra", {})["interrupted_by"] = run.abort_reason
    # the first message of each failure counter: ``errors_by_cause`` shows it beside the count
    info.setdefault("notes", dict(run.metrics.notes))
    summary = build_summary(histograms_of(run.metrics), run.metrics.counters, info)
    evaluated = [threshold.evaluate(summary) for threshold in thresholds]
    summary["thresholds"] = [item.as_dict() for item in evaluated]
    write_summary(directory, summary)
    report = None
    if scenario.output.html:
        report = render_report(load_run(directory), summary, directory)
    failed = any(not item.ok for item in evaluated)
    return CampaignOutcome(
        directory=directory,
        summary=summary,
        report=report,
        thresholds_failed=failed,
        interrupted=run.interrupted,
    )
