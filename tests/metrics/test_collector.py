"""The collector's load policy (``loadgen.metrics.collector``): installed for the load and
restored after it, nested entries leave it to the outermost, no automatic full collection during
the load, and one when memory has grown past the bound."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio

from loadgen.metrics import collector
from loadgen.metrics.collector import YOUNG, quiet_collector


class Node:
    """A reference cycle with a handle: the test holds a weak reference to know when it died."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def clean_collector() -> Iterator[None]:
    """Each test starts from CPython's policy and leaves it as it found it."""
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    yield
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_policy_is_installed_for_the_block_and_restored_after() -> None:
    before = gc.get_threshold()
    callbacks = list(gc.callbacks)
    with quiet_collector():
        threshold = gc.get_threshold()
        assert threshold[:2] == YOUNG
        assert threshold[2] >= 2**31 - 1  # no automatic full collection
        assert gc.get_freeze_count() > 0  # the start-up heap is frozen
        assert len(gc.callbacks) == len(callbacks) + 1
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert gc.callbacks == callbacks


def test_the_policy_is_restored_when_the_block_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(KeyError), quiet_collector():
        raise KeyError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_nested_entry_freezes_again_and_leaves_the_policy_to_the_outermost() -> None:
    before = gc.get_threshold()
    with quiet_collector():
        first = gc.get_freeze_count()
        later = [Node() for _ in range(100)]  # the later side's start-up
        with quiet_collector():
            assert gc.get_freeze_count() >= first + 100
            assert gc.get_threshold()[:2] == YOUNG
        # the inner exit changed nothing: still the load's policy, still frozen
        assert gc.get_threshold()[:2] == YOUNG
        assert gc.get_freeze_count() >= first + 100
        del later
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_policy_holds_until_the_last_open_one_exits_in_any_order() -> None:
    """The fleet enters first and may end last, or not: the platform of the same process can
    outlive it (a devices drain cut short). Whichever exits last restores."""
    before = gc.get_threshold()
    fleet, platform = quiet_collector(), quiet_collector()
    fleet.__enter__()
    platform.__enter__()
    fleet.__exit__(None, None, None)  # the first entered exits first
    assert gc.get_threshold()[:2] == YOUNG
    assert gc.get_freeze_count() > 0
    again = quiet_collector()  # a later side still finds the policy in place
    again.__enter__()
    again.__exit__(None, None, None)
    assert gc.get_threshold()[:2] == YOUNG
    platform.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def _promoted_cycle() -> weakref.ref[Node]:
    """A cycle that lived long enough to reach the oldest generation, then became garbage."""
    node = Node()
    gc.collect(0)
    gc.collect(1)  # survived both young collections: it is in gen2 now
    alive = weakref.ref(node)
    del node
    return alive


def _full_collections_while_allocating() -> int:
    """Automatic collections while 200,000 containers are made and kept (as a load's state
    grows): how many were full ones."""
    full = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal full
        full += phase == "start" and info["generation"] == 2

    gc.callbacks.append(count)
    try:
        kept = [[index] for index in range(200_000)]
    finally:
        gc.callbacks.remove(count)
    del kept
    return full


def test_without_the_policy_the_same_allocations_run_full_collections() -> None:
    """The control of the next test: CPython's own policy collects everything here."""
    assert _full_collections_while_allocating() > 0


async def test_no_full_collection_during_the_load_while_memory_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "GROWTH", 1000.0)  # this test's growth stays within bounds
    with quiet_collector():
        alive = _promoted_cycle()
        assert _full_collections_while_allocating() == 0
        for _ in range(10):
            await trio.lowlevel.checkpoint()
        assert alive() is not None  # the cycle waits: nothing walked the old generation
    gc.collect()
    assert alive() is None


async def test_a_full_collection_runs_once_memory_has_grown_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # any growth passes the bound; the full collection runs at the event loop's next pass
    monkeypatch.setattr(collector, "GROWTH", 0.0)
    before = collector.statistics().full_collections
    with quiet_collector():
        alive = _promoted_cycle()
        for _ in range(collector.CHECK_EVERY):  # gen1 collections: the last one looks at
            gc.collect(1)  # memory, sees the growth and asks for a full collection
        assert alive() is not None  # not inside the collector's callback
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        assert alive() is None
        assert collector.statistics().full_collections == before + 1


def test_a_nested_entry_counts_what_its_side_built_as_start_up_not_growth() -> None:
    """The memory bound is measured from the last start-up: a second side's tables (100k
    devices' routes) must not count towards the growth that sets off a full collection."""
    with quiet_collector():
        mark = collector.statistics().blocks_mark
        built = [[index] for index in range(200_000)]  # the later side's start-up
        with quiet_collector():
            assert collector.statistics().blocks_mark >= mark + 200_000
        del built
