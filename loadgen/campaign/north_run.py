"""The north campaigns (issue 10): the application, the devices and, on loopback, the stand-in.

Sequence (``sides = "north"``)::

    stand-in platform (south + north API, holding) -> fleet (POSTs to the south API, reports
    every request and final answer to the job tracker) -> stand-in load begins at the fleet ->
    north side (callback receiver, N1 at the schedule's rate) -> north load ends, jobs drain ->
    stand-in stops (its own drain, callbacks flushed) -> fleet drains

``sides = "north-devices"`` is the same without the stand-in: the north side talks to a real
OpenGate at ``north.url`` and the fleet POSTs to its south API (``devices.responder``).

The stand-in runs no load of its own (one stage at rate 0 that outlasts the north side's load
and drain; it is stopped when the north side is done). The first Ctrl-C stops the job creation
(the jobs in flight drain), a second one cuts every drain; what is left is recorded at its own
deadline on both sides.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING

import trio

from loadgen.device.runner import run_fleet
from loadgen.north.jobs import JobTracker
from loadgen.north.runner import NorthInfo, run_north
from loadgen.platform.config import Arrival, NorthAPI, Stage, Targets
from loadgen.platform.runner import PlatformInfo, run_platform

if TYPE_CHECKING:
    from loadgen.campaign.runner import _Run
    from loadgen.campaign.scenario import Scenario

__all__ = ["north_sides"]

#: How much longer than the north side's load and drain the stand-in's idle stage lasts.
STANDIN_MARGIN = 60.0


def _device_ids(scenario: Scenario) -> list[str]:
    north, devices = scenario.north, scenario.devices
    assert north is not None
    assert devices is not None
    if north.targets is not None:
        return [device_id for device_id, _ in north.targets.resolve()]
    first = devices.first_index
    return [devices.id_pattern.format(i, index=i) for i in range(first, first + devices.count)]


async def north_sides(run: _Run, scenario: Scenario) -> None:
    from loadgen.campaign.runner import _announce_fleet, _count_devices

    north, fleet_config = scenario.north, scenario.devices
    assert north is not None
    assert fleet_config is not None
    tracker = JobTracker(
        run.metrics, _device_ids(scenario), dispatch_timeout=north.dispatch_timeout
    )
    run.north_tracker = tracker
    standin = scenario.campaign.sides == "north"
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as platform_nursery:
            url = north.url
            if standin:
                base = scenario.platform
                assert base is not None
                idle = north.arrival.duration + north.grace + STANDIN_MARGIN
                config = dataclasses.replace(
                    base,
                    arrival=Arrival(stages=(Stage(duration=idle, rate=0.0, name="jobs"),)),
                    north=base.north or NorthAPI(),
                )

                async def platform_task(*, task_status: trio.TaskStatus[PlatformInfo]) -> None:
                    run.platform_result = await run_platform(
                        config, run.metrics, hold=True, task_status=task_status
                    )
                    platform_nursery.cancel_scope.cancel()

                run.platform = await platform_nursery.start(platform_task)
                run.notice(
                    f"stand-in: south API on {run.platform.south_url}, "
                    f"north API on {run.platform.north_url}"
                )
                url = run.platform.north_url
                if fleet_config.responder.platform_url in (None, _placeholder()):
                    fleet_config = dataclasses.replace(
                        fleet_config,
                        responder=dataclasses.replace(
                            fleet_config.responder, platform_url=run.platform.south_url
                        ),
                    )
            run.fleet = await outer.start(
                partial(run_fleet, fleet_config, run.metrics, observer=tracker)
            )
            _count_devices(run.metrics, run.fleet)
            _announce_fleet(run, run.fleet)
            if run.platform is not None and run.fleet.http_url:
                run.platform.begin_load(
                    Targets(
                        base_url=run.fleet.http_url,
                        id_pattern=fleet_config.id_pattern,
                        count=fleet_config.count,
                        first_index=fleet_config.first_index,
                    )
                )
            await run.before_load()  # the results' clock (and a shard's barrier) starts here
            async with trio.open_nursery() as north_nursery:

                async def north_task(*, task_status: trio.TaskStatus[NorthInfo]) -> None:
                    run.north_result = await run_north(
                        north, run.metrics, tracker, url=url, task_status=task_status
                    )
                    north_nursery.cancel_scope.cancel()

                run.north = await north_nursery.start(north_task)
                if run.north.callback_url:
                    run.notice(f"north: callbacks to {run.north.callback_url}")
                run.begun = True
                north_nursery.start_soon(_interrupts, run)
            if run.platform is not None:
                run.platform.stop_load()  # the stand-in drains what it still runs, and returns
                platform_nursery.start_soon(_cut_platform, run)
        if run.cut.is_set():
            outer.cancel_scope.cancel()
        else:
            run.fleet.handle.shutdown()


def _placeholder() -> str:
    from loadgen.campaign.scenario import SOUTH_PLACEHOLDER

    return SOUTH_PLACEHOLDER


async def _interrupts(run: _Run) -> None:
    """First Ctrl-C: no more jobs; second: cut the drains."""
    assert run.north is not None
    await run.stop_load.wait()
    run.load_stopped_at = run.north.elapsed
    run.north.stop_load()
    await run.cut.wait()
    run.north.cut_drain()
    if run.platform is not None:
        run.platform.cut_drain()


async def _cut_platform(run: _Run) -> None:
    await run.cut.wait()
    if run.platform is not None:
        run.platform.cut_drain()
