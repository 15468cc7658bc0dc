"""Pending deadlines of many live items, each with at most one, in one heap (pure).

Theory of operation
-------------------
The platform's in-flight table (``loadgen.platform.inflight``) and the application side's job
tracker (``loadgen.north.jobs``) give every live item (an operation, a job) exactly one pending
deadline, which moves as the item changes state (re-armed) and goes when it ends (cancelled),
usually long before it is due. One task per side sleeps until ``next_due`` and fires what
``pop_due(now)`` hands out; there is no task or cancel scope per item. ``on_earlier(due)`` is
called when an item is armed before every entry, so that the task, asleep until a later time,
wakes sooner (the check is here, not in the caller, so that arming is one call: the in-flight
table arms up to twice per operation at 50k operations a second).

Lazy cancellation: an entry is a tuple ``(due, seq, item)`` pushed in O(log n) and never searched
for (that would be O(n)). The item itself carries the ``seq`` of its one valid entry in a
``timer`` attribute (``NOT_ARMED`` when it has none), so re-arming is a push with a fresh
``seq`` and cancelling is one store; an entry whose ``seq`` is not its item's is *stale* and is
skipped when it surfaces. Stale entries of deadlines far ahead would pile up (an operation
answered in a millisecond leaves an entry due ``timeout`` later), so the heap is rebuilt from its
valid entries when it holds more than ``2 x live + COMPACT_SLACK`` entries: at most that many
entries whatever the run's length, and the O(n) rebuild, which drops at least ``live +
COMPACT_SLACK`` entries, costs O(1) amortised per push. The rebuild is in place, so a
``pop_due`` loop whose body re-arms items (and so may compact) goes on over the same heap.

``seq`` also breaks ties: entries due at the same instant come out in the order they were armed,
and items are never compared. An item belongs to at most one heap (its ``timer`` is that heap's
``seq``).

Why not ``loadgen.device.timers.TimerHeap``: the device side's due times are never cancelled
early (an operation's next step is always reached), so that heap has no ``timer`` on its items,
no stale entries to skip, no live count to keep and no compaction; giving it this protocol would
add a store and a comparison per entry for nothing. And it lives in ``device/``, which
``platform/`` may not import: this module sits below both sides (tests/test_layers.py).

Time is an argument (``now``, ``due``): nothing here reads a clock or imports trio.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from heapq import heappop, heappush
from typing import Final, Generic, Protocol, TypeVar

__all__ = ["COMPACT_SLACK", "NOT_ARMED", "Armed", "DeadlineHeap"]

#: ``item.timer`` of an item without a pending deadline (every ``seq`` is >= 0).
NOT_ARMED: Final = -1
#: Stale entries tolerated beyond ``live``: a small heap is never rebuilt, and a rebuild drops at
#: least this many entries (the amortised bound above).
COMPACT_SLACK: Final = 4096
_INF: Final = float("inf")


class Armed(Protocol):
    """What the heap needs of an item: where to keep the ``seq`` of its one valid entry."""

    timer: int


T = TypeVar("T", bound=Armed)


class DeadlineHeap(Generic[T]):
    """Items by pending deadline, at most one each; ``len()`` counts the armed items."""

    __slots__ = ("_heap", "_next_seq", "live", "on_earlier")

    def __init__(self, on_earlier: Callable[[float], None] | None = None) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._next_seq = itertools.count().__next__
        self.live = 0  # armed items: each has exactly one valid entry
        self.on_earlier = on_earlier

    def __len__(self) -> int:
        return self.live

    def __repr__(self) -> str:
        return f"<DeadlineHeap live={self.live} entries={len(self._heap)}>"

    @property
    def entries(self) -> int:
        """Entries held, stale ones included (at most ``2 x live + COMPACT_SLACK`` after a push)."""
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        """Arm ``item`` at ``due``, replacing its pending deadline if it had one; calls
        ``on_earlier(due)`` first when no entry is earlier."""
        heap = self._heap
        on_earlier = self.on_earlier
        if on_earlier is not None and (not heap or due < heap[0][0]):
            on_earlier(due)
        if item.timer < 0:
            self.live += 1
        seq = self._next_seq()
        item.timer = seq
        heappush(heap, (due, seq, item))
        if len(heap) > 2 * self.live + COMPACT_SLACK:
            self._compact()

    def cancel(self, item: T) -> None:
        """``item`` no longer has a pending deadline (a no-op when it had none)."""
        if item.timer >= 0:
            item.timer = NOT_ARMED
            self.live -= 1

    @property
    def next_due(self) -> float:
        """The earliest pending deadline (inf when none); drops the stale entries in front."""
        heap = self._heap
        while heap:
            due, seq, item = heap[0]
            if item.timer == seq:
                return due
            heappop(heap)
        return _INF

    def pop_due(self, now: float) -> Iterator[tuple[float, T]]:
        """Every ``(due, item)`` with ``due <= now``, earliest first (ties: in arming order),
        each disarmed as it is handed out. Lazy: each entry is checked as it surfaces, so the
        loop's body may cancel an item not yet handed out (it is then skipped) or arm one (handed
        out in this same loop if due by ``now``)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, seq, item = heappop(heap)
            if item.timer == seq:
                item.timer = NOT_ARMED
                self.live -= 1
                yield due, item

    def clear(self) -> None:
        """Disarm every item and drop every entry (the run is over)."""
        for _, seq, item in self._heap:
            if item.timer == seq:
                item.timer = NOT_ARMED
        self._heap.clear()
        self.live = 0

    def _compact(self) -> None:
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2].timer == entry[1]]
        heapq.heapify(heap)
