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

import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from loadgen.campaign.progress import Progress
from loadgen.campaign.prometheus import PrometheusExporter
from loadgen.campaign.scenario import SOUTH_PLACEHOLDER, LoadedScenario, Scenario
from loadgen.device.config import FleetConfig
from loadgen.device.runner import FleetInfo, run_fleet
from loadgen.errors import ConfigError
from loadgen.metrics.health import CpuGauge, HealthLimits, monitor_loop_lag
from loadgen.metrics.intervals import Interval, IntervalSink, run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.metrics.thresholds import Threshold
from loadgen.platform.config import PlatformConfig, Stage, Targets
from loadgen.platform.runner import PlatformInfo, PlatformResult, run_platform
from loadgen.report.results import RunWriter, load_run, new_run_directory
from loadgen.report.summary import histograms_of, summary_from_metrics, write_summary
from loadgen.scale.shard import Shard

__all__ = [
    "EXIT_THRESHOLDS",
    "CampaignOutcome",
    "SidesOutcome",
    "apply_shard",
    "run_campaign",
    "run_sides",
]

EXIT_OK: Final = 0
EXIT_THRESHOLDS: Final = 99
ABORT_DELAY: Final = 10.0  # seconds of load before abort_on_fail may fire


@dataclass(frozen=True, slots=True)
class CampaignOutcome:
    directory: Path
    summary: dict[str, Any]
    report: Path | None
    exit_code: int
    interrupted: bool


def apply_shard(scenario: Scenario, shard: Shard) -> Scenario:
    """Shard i/N of a scenario: its device range, rate/N, offset fixed ports, its own seed."""
    if shard.is_whole:
        return scenario
    devices = scenario.devices
    platform = scenario.platform
    if devices is not None:
        owned = shard.devices(devices.count)
        devices = dataclasses.replace(
            devices,
            first_index=devices.first_index + owned.start,
            count=len(owned),
            http_port=shard.port(devices.http_port),
            https_port=shard.port(devices.https_port),
            seed=devices.seed + shard.index,
        )
    if platform is not None:
        stages = tuple(
            dataclasses.replace(stage, rate=shard.rate(stage.rate))
            for stage in platform.arrival.stages
        )
        arrival = dataclasses.replace(
            platform.arrival,
            stages=stages,
            # spread like the devices, so the shards' concurrencies add up to the campaign's
            concurrency=max(1, len(shard.devices(platform.arrival.concurrency))),
        )
        targets = platform.targets
        if targets.devices:
            owned = shard.devices(len(targets.devices))
            targets = dataclasses.replace(
                targets, devices=targets.devices[owned.start : owned.stop]
            )
        elif scenario.campaign.sides != "both":
            # With both sides the targets are the shard's own fleet (set once it listens), so
            # the placeholder range is not split (its default count of 1 would leave shard 0
            # with no device at all).
            owned = shard.devices(targets.count)
            targets = dataclasses.replace(
                targets, first_index=targets.first_index + owned.start, count=len(owned)
            )
        south = dataclasses.replace(platform.south, port=shard.port(platform.south.port) or 0)
        platform = dataclasses.replace(
            platform,
            arrival=arrival,
            targets=targets,
            south=south,
            seed=platform.seed + shard.index,
        )
    return scenario.model_copy(update={"devices": devices, "platform": platform})


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


def _stage_at(platform: PlatformConfig | None, elapsed: float) -> str:
    if platform is None:
        return "serve"
    at = 0.0
    for index, stage in enumerate(platform.arrival.stages):
        at += stage.duration
        if elapsed < at:
            name = getattr(stage, "name", "") or ("ramp" if stage.ramp else "hold")
            return f"{index + 1}:{name}"
    return "drain"


class _Run:
    """The live state of one campaign run, shared by the tasks of ``run_campaign``."""

    def __init__(self, scenario: Scenario, metrics: Metrics) -> None:
        self.scenario = scenario
        self.metrics = metrics
        self.platform: PlatformInfo | None = None
        self.fleet: FleetInfo | None = None
        self.platform_result: PlatformResult | None = None
        self.interrupted = False
        self.failed = False  # ended by an exception (a harness failure): not a finished run
        self.abort_reason: str | None = None
        self.stop_load = trio.Event()
        self.cut = trio.Event()
        self.cpu = CpuGauge()

    def gauges(self) -> dict[str, object]:
        out: dict[str, object] = {"cpu_percent": round(self.cpu(), 1)}
        if self.platform is not None:
            stats = self.platform.statistics()
            out["in_flight"] = stats.in_flight
            out["offered_rate"] = round(stats.intended_rate, 3)
            out["stage"] = _stage_at(self.scenario.platform, stats.elapsed)
        elif self.fleet is not None:
            out["in_flight"] = self.fleet.handle.in_flight
            out["stage"] = "serve"
        return out

    def interrupt(self, reason: str) -> None:
        if self.stop_load.is_set():
            self.cut.set()
            return
        self.interrupted = True
        self.abort_reason = self.abort_reason or reason
        self.stop_load.set()


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
                if not platform_config.targets.devices and run.fleet.http_url:
                    targets = dataclasses.replace(
                        platform_config.targets,
                        base_url=run.fleet.http_url,
                        id_pattern=fleet_config.id_pattern,
                        count=fleet_config.count,
                        first_index=fleet_config.first_index,
                    )
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
        stop()  # the load phase ends now; the platform drains and returns by itself


async def _fleet_only(run: _Run, scenario: Scenario) -> None:
    config = scenario.devices
    assert config is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cut_on_second_signal, run, nursery.cancel_scope)
        run.fleet = await nursery.start(_serve_fleet, run, config, nursery.cancel_scope)
        _count_devices(run.metrics, run.fleet)
        with trio.move_on_after(scenario.load_seconds):
            await run.stop_load.wait()
        run.fleet.handle.shutdown()


async def run_campaign(
    loaded: LoadedScenario,
    *,
    results_root: Path | None = None,
    shard: Shard | None = None,
    start_at: float | None = None,
    progress: str | None = None,
    directory: Path | None = None,
) -> CampaignOutcome:
    """Run a loaded scenario and write its results folder; see the module docstring."""
    shard = shard or Shard.whole()
    scenario = apply_shard(loaded.scenario, shard)
    campaign = scenario.campaign
    root = results_root or Path(scenario.output.results)
    if directory is None:
        directory = new_run_directory(root, campaign.name)
        if not shard.is_whole:
            directory = directory / f"shard-{shard.index}-of-{shard.count}"
            directory.mkdir(parents=True)
    else:
        directory.mkdir(parents=True, exist_ok=True)
    loaded.save(directory / "scenario.toml")
    thresholds = scenario.parsed_thresholds()
    metrics = Metrics()
    run = _Run(scenario, metrics)
    if start_at is not None:
        await trio.sleep(max(0.0, start_at - time.time()))
    start_epoch = time.time()
    meta = {
        "campaign": campaign.name,
        "description": campaign.description,
        "sides": campaign.sides,
        "interval": campaign.interval,
        "shard": str(shard),
        "offered_rate": _offered_rate(scenario.platform),
        "load_duration_s": scenario.load_seconds,
        "thresholds": list(scenario.thresholds),
        "start_at": start_at,
    }
    writer = RunWriter(directory, start_epoch, meta)
    bar = Progress(scenario.load_seconds, mode=progress or scenario.output.progress)

    def write(interval: Interval) -> None:
        # "final" says the run ended normally; one ended by an error must read as a kill does
        writer(dataclasses.replace(interval, final=False) if run.failed else interval)

    sinks: list[IntervalSink] = [write, bar]
    if scenario.abort_on_fail and thresholds:
        sinks.append(_abort_sink(run, thresholds, ABORT_DELAY))
    exporter = PrometheusExporter() if scenario.output.metrics_port is not None else None
    if exporter is not None:
        sinks.append(exporter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, run)
            t0 = trio.current_time()
            await nursery.start(_intervals, metrics, sinks, t0, campaign.interval, run.gauges)
            if exporter is not None:
                url = await nursery.start(exporter.serve, "127.0.0.1", scenario.output.metrics_port)
                print(f"live metrics: {url}", flush=True)
            try:
                if campaign.sides == "devices":
                    await nursery.start(monitor_loop_lag, metrics)
                    await _fleet_only(run, scenario)
                else:
                    await _platform_then_fleet(run, scenario)
            except BaseException:
                run.failed = True  # before the intervals task writes its last line
                raise
            nursery.cancel_scope.cancel()
    finally:
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
    if result is not None:
        info = result.run_info()
    else:
        # devices only: no platform judged the generator; the same verdict a rebuild gives
        # (loop lag and CPU against the default limits), so summary.generator always has one
        info = {
            "started_at": start_epoch,
            "duration_s": round(time.time() - start_epoch, 3),
            "load_duration_s": scenario.load_seconds,
            "offered_rate": _offered_rate(scenario.platform),
            "generator": generator_verdict(
                histograms_of(run.metrics), load_run(directory).timeseries, HealthLimits()
            ),
        }
    info["campaign"] = scenario.campaign.name
    info["interrupted"] = run.interrupted
    if run.fleet is not None:
        info["extra"] = {"devices": run.fleet.handle.statistics()}
    if run.abort_reason:
        info.setdefault("extra", {})["interrupted_by"] = run.abort_reason
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
        exit_code=EXIT_THRESHOLDS if failed else EXIT_OK,
        interrupted=run.interrupted,
    )
