"""Coarse deadlines for many connections: one watchdog task instead of a timer per I/O call.

Why: moving a ``trio.CancelScope`` deadline re-registers it in trio's deadline structure through a
context manager; a request/response cycle that sets three deadlines spends more CPU on that than on
parsing. Here a connection only stores ``deadline`` (a float) when its phase changes, and the
watchdog wakes every ``resolution`` seconds and expires each item whose deadline has
passed (``expire()``: a server connection cancels its scope, a client connection closes its
socket). Timeouts therefore fire up to one ``resolution`` late, which is what they are for: bounding
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

    def expire(self) -> None:
        """Called once the deadline has passed; must end what it bounds (cancel or close)."""


def resolution_for(*timeouts: float) -> float:
    """A tenth of the shortest finite timeout, clamped to [MIN_RESOLUTION, MAX_RESOLUTION]."""
    finite = [t for t in timeouts if math.isfinite(t) and t > 0]
    if not finite:
        return MAX_RESOLUTION
    return min(MAX_RESOLUTION, max(MIN_RESOLUTION, min(finite) / 10))


class Watchdog:
    """Calls ``expire()`` on every watched item whose ``deadline`` has passed."""

    __slots__ = ("_watched", "now", "resolution")

    def __init__(self, resolution: float = MAX_RESOLUTION) -> None:
        self.resolution = resolution
        self._watched: set[Watched] = set()
        # trio.current_time() as of the last wake-up. Hot paths compute deadlines from it instead
        # of reading the clock per request: ``now + timeout + resolution`` never fires early, and
        # fires at most two resolutions late.
        self.now = 0.0

    def span(self, timeout: float) -> float:
        """What to add to ``now`` for a deadline ``timeout`` seconds away (never early)."""
        return timeout + self.resolution

    def __repr__(self) -> str:
        return f"<Watchdog watching={len(self._watched)} resolution={self.resolution}s>"

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, item: Watched) -> None:
        self._watched.add(item)

    def unwatch(self, item: Watched) -> None:
        self._watched.discard(item)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.now = trio.current_time()
        task_status.started()
        while True:
            await trio.sleep(self.resolution)
            self.now = now = trio.current_time()
            expired = [item for item in self._watched if item.deadline <= now]
            for item in expired:
                item.expire()
