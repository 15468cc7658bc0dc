"""``loadgen.deadline_heap.DeadlineHeap``: one pending deadline per item, lazy cancellation,
compaction to ``2 x live + COMPACT_SLACK`` entries, everything due handed out in order."""

from __future__ import annotations

import random
import subprocess
import sys

from loadgen.deadline_heap import COMPACT_SLACK, NOT_ARMED, DeadlineHeap


class Item:
    __slots__ = ("name", "timer")

    def __init__(self, name: str) -> None:
        self.name = name
        self.timer = NOT_ARMED

    def __repr__(self) -> str:
        return f"<Item {self.name}>"


def names(fired: list[tuple[float, Item]]) -> list[tuple[float, str]]:
    return [(due, item.name) for due, item in fired]


def test_a_re_armed_item_fires_only_at_its_last_deadline() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    later, sooner = Item("later"), Item("sooner")
    heap.push(1.0, later)
    heap.push(5.0, later)  # moved later: the entry at 1.0 is stale
    heap.push(9.0, sooner)
    heap.push(3.0, sooner)  # moved sooner: the entry at 9.0 is stale
    assert (len(heap), heap.entries) == (2, 4)  # re-arming counts once
    assert list(heap.pop_due(2.0)) == []  # the stale 1.0 surfaces and is dropped
    assert names(list(heap.pop_due(4.0))) == [(3.0, "sooner")]
    assert names(list(heap.pop_due(100.0))) == [(5.0, "later")]  # not again at 9.0
    assert (len(heap), heap.entries, later.timer, sooner.timer) == (0, 0, NOT_ARMED, NOT_ARMED)


def test_a_cancelled_item_never_fires() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    gone, kept = Item("gone"), Item("kept")
    heap.push(1.0, gone)
    heap.push(2.0, kept)
    heap.push(1.5, gone)  # re-armed, then cancelled: neither entry may fire
    heap.cancel(gone)
    heap.cancel(gone)  # a second cancel changes nothing
    assert (len(heap), gone.timer) == (1, NOT_ARMED)
    assert heap.next_due == 2.0  # the stale heads are skipped
    assert names(list(heap.pop_due(10.0))) == [(2.0, "kept")]
    assert heap.next_due == float("inf")
    heap.cancel(kept)  # already fired: a no-op, the count stays right
    assert len(heap) == 0


def test_a_late_now_hands_out_everything_due_in_deadline_order() -> None:
    """A timer task that wakes late fires every deadline it missed, earliest first (ties in
    arming order), each with its own deadline, and leaves what is not due yet."""
    heap: DeadlineHeap[Item] = DeadlineHeap()
    for due, name in [(4.0, "d"), (1.0, "a"), (3.0, "c1"), (9.0, "z"), (3.0, "c2"), (2.0, "b")]:
        heap.push(due, Item(name))
    fired = names(list(heap.pop_due(5.0)))
    assert fired == [(1.0, "a"), (2.0, "b"), (3.0, "c1"), (3.0, "c2"), (4.0, "d")]
    assert (len(heap), heap.next_due) == (1, 9.0)
    assert names(list(heap.pop_due(9.0))) == [(9.0, "z")]  # due exactly at now


def test_compaction_keeps_the_order_and_the_bound() -> None:
    """Stale entries pile up as items are re-armed and cancelled; the heap never holds more than
    2 x live + COMPACT_SLACK entries after a push, and what comes out is exactly what a sorted
    list of the last deadlines says (ties in arming order)."""
    rng = random.Random(7)
    heap: DeadlineHeap[Item] = DeadlineHeap()
    items = [Item(str(i)) for i in range(3_000)]
    last: dict[str, tuple[float, int]] = {}  # name -> (last deadline, arming order)
    armed_at = 0
    compactions = 0
    for _ in range(20):
        for item in items:
            due = float(rng.randrange(1_000))  # coarse, so that ties happen
            before = heap.entries
            heap.push(due, item)
            armed_at += 1
            last[item.name] = (due, armed_at)
            compactions += heap.entries < before
            assert heap.entries <= 2 * len(heap) + COMPACT_SLACK
        for item in rng.sample(items, 300):
            heap.cancel(item)
            last.pop(item.name, None)
    assert compactions > 0  # the bound was reached and enforced
    assert len(heap) == len(last)
    expected = sorted(((due, order, name) for name, (due, order) in last.items()))
    assert names(list(heap.pop_due(1_000.0))) == [(due, name) for due, _, name in expected]


def test_the_loop_body_may_cancel_arm_and_compact() -> None:
    """Each entry is checked as it surfaces: the firing of one item may cancel another due in
    the same pass (skipped), or arm one already due (handed out in the same pass), and a
    compaction on the way (in place) loses nothing."""
    heap: DeadlineHeap[Item] = DeadlineHeap()
    first, victim, third = Item("first"), Item("victim"), Item("third")
    heap.push(1.0, first)
    heap.push(2.0, victim)
    heap.push(3.0, third)
    filler = [Item(f"f{i}") for i in range(COMPACT_SLACK + 10)]
    for item in filler:  # far ahead, then cancelled: stale entries enough to compact
        heap.push(50.0, item)
    for item in filler:
        heap.cancel(item)
    fired: list[str] = []
    for _due, item in heap.pop_due(10.0):
        fired.append(item.name)
        if item is first:
            heap.cancel(victim)
            heap.push(2.5, Item("new"))  # due by now, and this push compacts
            assert heap.entries == len(heap) == 2  # only "new" and "third" are left
    assert fired == ["first", "new", "third"]
    assert (len(heap), heap.entries, heap.next_due) == (0, 0, float("inf"))


def test_on_earlier_is_called_when_an_item_goes_before_every_entry() -> None:
    announced: list[float] = []
    heap: DeadlineHeap[Item] = DeadlineHeap(announced.append)
    a, b = Item("a"), Item("b")
    heap.push(10.0, a)  # the first
    heap.push(12.0, b)
    heap.push(4.0, b)  # re-armed before a
    heap.push(4.0, a)  # a tie is not earlier
    assert announced == [10.0, 4.0]
    heap.on_earlier = None
    heap.push(1.0, Item("c"))
    assert announced == [10.0, 4.0]


def test_clear_disarms_every_item() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    a, b = Item("a"), Item("b")
    heap.push(1.0, a)
    heap.push(2.0, b)
    heap.cancel(b)
    heap.clear()
    assert (len(heap), heap.entries, a.timer, b.timer) == (0, 0, NOT_ARMED, NOT_ARMED)
    heap.push(3.0, a)  # armed afresh: counted once
    assert len(heap) == 1


def test_the_module_imports_no_io() -> None:
    code = (
        "import loadgen.deadline_heap, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'trio', 'httpx', 'asyncio', 'h11', 'hypercorn', 'socket'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
