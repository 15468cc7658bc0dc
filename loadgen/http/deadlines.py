"""Coarse deadlines for many connections: one watchdog task instead of a timer per I/O call.

Why: moving a ``trio.CancelScope`` deadline re-registers it in trio's deadline structure through a
context manager; a request/response cycle that sets three deadlines spends more CPU on that than on
parsing. Here a connection only stores ``deadline`` (a float) when its phase changes, and the
watchdog wakes every ``resolution`` seconds, cancelling the scope of each item whose deadline has
passed. Timeouts therefore fire up to one ``resolution`` late, which is what they are for: bounding
stuck peers, not measuring latency (latency is measured from intended send times elsewhere).

The scan is O(watched items) per wake-up; the resolution is derived from the shortest timeout
(a tenth of it, at most one second), so 100,000 idle connections cost ~100,000 float comparisons a
second.
"""

from __future__ import annotations

import math
from typing import Final, Protocol

import trio

__all__ = ["Watchdog", "Watched", "resolution_for"]

MIN_RESOLUTION: Final = 0.005
MAX_RESOLUTION: Final = 1.0


class Watched(Protocol):
    deadline: float
    scope: trio.CancelScope | None


def resolution_for(*timeouts: float) -> float:
    """A tenth of the shortest finite timeout, clamped to [MIN_RESOLUTION, MAX_RESOLUTION]."""
    finite = [t for t in timeouts if math.isfinite(t) and t > 0]
    if not finite:
        return MAX_RESOLUTION
    return min(MAX_RESOLUTION, max(MIN_RESOLUTION, min(finite) / 10))


class Watchdog:
    """Cancels the scope of every watched item whose ``deadline`` has passed."""

    __slots__ = ("_watched", "resolution")

    def __init__(self, resolution: float = MAX_RESOLUTION) -> None:
        self.resolution = resolution
        self._watched: set[Watched] = set()

    def __repr__(self) -> str:
        return f"<Watchdog watching={len(self._watched)} resolution={self.resolution}s>"

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, item: Watched) -> None:
        self._watched.add(item)

    def unwatch(self, item: Watched) -> None:
        self._watched.discard(item)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.resolution)
            now = trio.current_time()
            for item in self._watched:
                if item.deadline <= now and item.scope is not None:
                    item.scope.cancel()
