"""The fleet's one timer structure: every due time of every asynchronous operation (pure).

Why one heap and not a task per operation: an UPDATE keeps a device busy for minutes, so a
fleet of 100,000 devices in a roll-out has 100,000 operations waiting at once. A sleeping trio
task (its coroutine frames, its cancel scope, its entry in trio's deadline heap) costs
kilobytes; an entry here is one tuple ``(due, seq, item)`` of about 120 bytes. One task per
fleet (``loadgen.device.outbox``) sleeps until ``next_due`` and takes the earliest with ``pop()``
while ``next_due <= now`` (one at a time: firing one may push another already due).

A binary heap rather than a hashed timer wheel: pushes and pops are O(log n) in C
(``heapq``), the order is exact (no tick to round to: the mock-clock tests assert due times to
the microsecond), and nothing here is ever cancelled early, which is where a wheel would win.
(Deadlines that are, the platform's and the north side's, use ``loadgen.deadline_heap``, which
marks an entry stale rather than removing it; here nothing goes stale, so items carry no
``timer`` and no entry is ever skipped.)
``seq`` breaks ties in arrival order, so two items due at the same instant come out in the
order they were pushed (and the items themselves are never compared).

Time is an argument: nothing here reads a clock or imports trio.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Final, Generic, TypeVar

__all__ = ["TimerHeap"]

T = TypeVar("T")
_INF: Final = float("inf")


class TimerHeap(Generic[T]):
    """Items by due time; ``pop()`` hands out the earliest (ties: push order)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"<TimerHeap {len(self._heap)} due from {self.next_due:.6f}>"

    @property
    def next_due(self) -> float:
        """The earliest due time (inf when empty)."""
        heap = self._heap
        return heap[0][0] if heap else _INF

    def push(self, due: float, item: T) -> bool:
        """Add ``item`` at ``due``. True when it is now the earliest (the timer task, asleep
        until a later time, must wake sooner)."""
        heap = self._heap
        earliest = not heap or due < heap[0][0]
        heapq.heappush(heap, (due, next(self._seq), item))
        return earliest

    def pop(self) -> tuple[float, T]:
        """The earliest ``(due, item)``, removed (IndexError when empty)."""
        due, _, item = heapq.heappop(self._heap)
        return due, item

    def clear(self) -> list[T]:
        """Remove and return every item, in due order (a fleet stopped before their time)."""
        items = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        return items
