"""Sleepy devices: a share of the fleet wakes up every poll period and asks for work.

Why one scheduler task and a heap rather than a task per device: 10% of a 100,000-device fleet
is 10,000 pollers; a sleeping trio task costs kilobytes, a heap entry ``(due, index)`` costs a
hundred bytes. The scheduler sleeps until the earliest due time, starts the polls that are due
and pushes each device back with its next due time. Due times are anchored at the previous due
time (``due + period * (1 ± jitter)``), so a poll that runs late does not shift the schedule.

A poll is ``GET .../operation/pending`` (``PlatformLink.fetch_pending``); each operation it
returns is handed to the engine with ``Engine.start_pending`` (answers POSTed to
``operation/response``). At most ``max_polls`` polls are in flight: when the platform is slow,
the scheduler waits for a free token instead of piling up tasks (the polls run late; that is
the platform's latency showing, not the device's).

Which devices sleep is drawn from a ``random.Random`` seeded from the fleet seed (apart from the
engine's, so turning sleepy devices on does not change the operations' draws). A sleepy device
still answers direct requests; it is additionally a poller.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

import trio

from loadgen.device.config import Sleepy
from loadgen.device.engine import Engine
from loadgen.device.fleet import Device
from loadgen.device.responder import PlatformLink

__all__ = ["SleepyScheduler", "choose_sleepy"]


def choose_sleepy(count: int, share: float, seed: int) -> list[int]:
    """The indices (sorted) of the ``round(share * count)`` sleepy devices."""
    rng = random.Random(f"sleepy:{seed}")
    return sorted(rng.sample(range(count), round(share * count)))


class SleepyScheduler:
    """Polls ``operation/pending`` for each sleepy device on its own jittered period."""

    def __init__(
        self,
        config: Sleepy,
        devices: Sequence[Device],
        engine: Engine,
        link: PlatformLink,
        *,
        seed: int,
    ) -> None:
        self.config = config
        self.devices = devices
        self.engine = engine
        self.link = link
        self.rng = random.Random(f"sleepy-jitter:{seed}")
        self.polls_in_flight = 0

    def __repr__(self) -> str:
        return f"<SleepyScheduler devices={len(self.devices)} in_flight={self.polls_in_flight}>"

    def _next(self, due: float) -> float:
        jitter = self.config.jitter
        factor = 1.0 + self.rng.uniform(-jitter, jitter) if jitter else 1.0
        return due + self.config.poll_period * factor

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled; reports the number of sleepy devices when started."""
        period = self.config.poll_period
        start = trio.current_time()
        heap = [(start + self.rng.uniform(0, period), i) for i in range(len(self.devices))]
        heapq.heapify(heap)
        limiter = trio.CapacityLimiter(self.config.max_polls)
        async with trio.open_nursery() as polls:
            task_status.started(len(heap))
            while heap:
                await trio.sleep_until(heap[0][0])
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    due, index = heapq.heappop(heap)
                    token = object()
                    await limiter.acquire_on_behalf_of(token)
                    polls.start_soon(self._poll, self.devices[index], limiter, token)
                    heapq.heappush(heap, (self._next(due), index))
            await trio.sleep_forever()  # no sleepy devices: nothing to do until cancelled

    async def _poll(self, device: Device, limiter: trio.CapacityLimiter, token: object) -> None:
        self.polls_in_flight += 1
        try:
            requests = await self.link.fetch_pending(device.id)
        finally:
            self.polls_in_flight -= 1
            limiter.release_on_behalf_of(token)
        for request in requests:
            self.engine.start_pending(device, request)
