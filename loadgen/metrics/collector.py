"""The garbage collector while a load runs: start-up frozen, no automatic full collection.

Measured on the shipped firmware-update scenario (one process, both sides, ~4,000 HTTP exchanges
per second, ~45 % of a core) with CPython's default policy: gen1 collections of 2-5 ms twice a
second and a full collection of 6-26 ms every ~10 s, each a stall of the event loop that every
send due meanwhile waits out (send lateness p99 of 7-19 ms per interval, issue 17). A collection
costs what it walks: the objects of its generations and every reference they hold. So, while a
load runs (``quiet_collector``):

1. what start-up built (the fleet's devices, routes, tables, modules) is collected once and
   frozen (``gc.freeze``): no collection walks it again until the load is over;
2. the young generations are collected as usual (``YOUNG``): what survives them is the state
   of the operations in flight, which reference counting frees when they end;
3. no automatic full collection: the load's own structures make no reference cycles (the
   histograms were the one source, see ``loadgen.metrics.hdr.new_histogram``), so a full
   collection would walk the whole in-flight state to find nothing. Memory stays bounded all
   the same: every ``CHECK_EVERY`` gen1 collections the allocator's block count
   (``sys.getallocatedblocks``, a walk over arenas, not objects) is compared with its value after
   the last full collection, and once it has doubled (``GROWTH``), one full collection runs at
   the event loop's next pass (``run_sync_soon``: a collector callback cannot collect) and the
   mark moves to what is left.
   A steady load never reaches it (the in-flight state growing to its plateau at the start of
   a run may, once); a leak of cycles from a library does, and memory stays within twice what
   is alive;
4. on exit the thresholds are restored, the callback removed and the heap unfrozen.

Entered again while active (the fleet and the platform of one process each enter it when their
load begins), it collects and freezes once more (the later side's start-up); the policy holds
until the last of them has exited, in whatever order. The full collections it ran are counted
in ``statistics()``.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

__all__ = ["CHECK_EVERY", "GROWTH", "YOUNG", "CollectorStats", "quiet_collector", "statistics"]

#: Gen0 and gen1 thresholds during a load. A gen0 collection walks what was allocated since the
#: previous one and is still alive; a gen1 collection, what survived the last ``YOUNG[1]`` gen0
#: ones: in a load, the newest operations in flight. Measured in the firmware-update scenario
#: (CPU time of each pause, 18 s of load on a busy 2-core machine): CPython's (700, 10) made
#: gen1 pauses of 2-5 ms twice a second; (700, 3) 20-35 pauses over 1 ms (at most ~2 ms);
#: (400, 3) 2-6 over 1 ms, gen0 pauses under 0.6 ms; (250, 3) none over 1 ms but about a third
#: more collector CPU. Each survivor is walked about once in gen1 whatever the thresholds, so
#: smaller ones make shorter pauses for about the same work, down to where the per-collection
#: overhead shows. A larger gen0 threshold (a common server setting) is the wrong trade for
#: send lateness: (2000, 4) made gen0 pauses of up to 2.5 ms and gen1 of up to 6 ms.
YOUNG: Final = (400, 3)
#: Growth of the allocated blocks since the last full collection that runs the next one.
GROWTH: Final = 2.0
#: Memory is looked at after every this many gen1 collections (``sys.getallocatedblocks`` walks
#: the arenas: ~50 µs for a 100 MB heap, 0.6 ms for 1 GB; gen1 runs several times a second).
CHECK_EVERY: Final = 8
#: The gen2 threshold that never fires (counted in gen1 collections: decades of them).
_NEVER: Final = 2**31 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorStats:
    full_collections: int  # run by the policy (memory growth) since the process started
    full_ms: float  # their total duration
    blocks_mark: int  # the allocated blocks after the last full collection


class _Policy:
    """The installed policy's state (one per process, see ``quiet_collector``)."""

    def __init__(self, token: trio.lowlevel.TrioToken | None) -> None:
        self.token = token
        self.saved: tuple[int, int, int] = gc.get_threshold()
        self.mark = sys.getallocatedblocks()
        self.requested = False
        self.young = 0  # gen1 collections seen

    def after_collection(self, phase: str, info: dict[str, Any]) -> None:
        """The collector's callback: after a gen1 collection, ask for a full one if memory grew."""
        if phase != "stop" or info["generation"] != 1 or self.requested or self.token is None:
            return
        self.young += 1
        if self.young % CHECK_EVERY:
            return
        if sys.getallocatedblocks() > self.mark * GROWTH:
            self.requested = True
            try:
                self.token.run_sync_soon(self.collect_all)
            except trio.RunFinishedError:
                self.requested = False

    def collect_all(self) -> None:
        global _full, _full_seconds
        began = time.perf_counter()
        gc.collect()
        _full_seconds += time.perf_counter() - began
        _full += 1
        self.mark = sys.getallocatedblocks()
        self.requested = False


_policy: _Policy | None = None  # installed while at least one ``quiet_collector`` is open
_depth = 0  # how many are open
_full = 0
_full_seconds = 0.0


def statistics() -> CollectorStats:
    mark = _policy.mark if _policy is not None else 0
    return CollectorStats(full_collections=_full, full_ms=_full_seconds * 1000, blocks_mark=mark)


def _token() -> trio.lowlevel.TrioToken | None:
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:  # outside trio: the policy holds, without the memory bound's collection
        return None


@contextmanager
def quiet_collector() -> Iterator[None]:
    """Apply the load's collector policy (see the module docstring) for the ``with`` block."""
    global _policy, _depth
    gc.collect()
    gc.freeze()
    if _policy is None:
        _policy = _Policy(_token())
        gc.set_threshold(*YOUNG, _NEVER)
        gc.callbacks.append(_policy.after_collection)
    else:  # a second side starting in this process: what it built is start-up, not growth
        _policy.mark = sys.getallocatedblocks()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:  # the last one open, whichever entered first
            policy, _policy = _policy, None
            assert policy is not None
            gc.callbacks.remove(policy.after_collection)
            gc.set_threshold(*policy.saved)
            gc.unfreeze()
