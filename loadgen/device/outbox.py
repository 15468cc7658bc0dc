"""The fleet's outbox: one timer task and a few delivery workers for every async operation.

Theory of operation
-------------------
The pure ``StepMachine`` knows every operation's next due time (one ``TimerHeap``) and builds
its messages; this module is the thin trio shell around it:

- **the timer task** (one per fleet, alive while a timer is armed) sleeps until the earliest
  due time, calls ``machine.expire(now, wall_ms)`` and queues every message that came due, as
  one batch. An earlier timer armed while it sleeps moves its wake-up (``_earlier`` sets the
  deadline of the cancel scope it sleeps in), so it never polls.
- **the delivery workers** (at most ``connections``, the responder pool's own limit, so a POST
  never waits for a connection slot and the pool never opens more) take messages from
  ``ready`` in order and make one attempt each (``Platform.deliver``). A message to retry goes
  back into the heap at its backoff time (no task sleeps for it); a delivered one lets its
  operation go on (``machine.done_with``), whose next message, when there is one at once, the
  same worker sends next. Idle workers park; they leave when no operation is live and nothing
  is ready, so a drained fleet's work nursery closes by itself.

A late wake-up (a busy loop, a long GC pause) loses nothing: ``expire`` fires every timer due
by then in due order, each message stamped with its own due time (``steps`` rule 3).

Cancellation (the fleet stopped before its operations ended: drain timeout, second Ctrl-C):
whichever of these tasks sees it first counts every operation still live in
``device.ops.cancelled``, so none leaves without a trace.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from loadgen.device.steps import Message, StepMachine

__all__ = ["Outbox", "Platform", "wall_ms"]


def wall_ms() -> int:
    """Wall-clock milliseconds (the JSON timestamps; never used for scheduling)."""
    return time.time_ns() // 1_000_000


class Platform(Protocol):
    """Where async answers go (``loadgen.device.responder.PlatformLink``, a fake in tests)."""

    async def deliver(self, kind: str, device_id: str, body: bytes, attempt: int) -> float | None:
        """One attempt, counted: None when done with the message (delivered, refused or given
        up), else the seconds to wait before attempt ``attempt + 1``. Never raises for a
        failure of the platform."""
        ...


class Outbox:
    """The timer task and the delivery workers of one fleet (see the module docstring)."""

    def __init__(
        self,
        machine: StepMachine,
        platform: Platform | None,
        nursery: trio.Nursery,
        counters: Counter[str],
        *,
        connections: int,
    ) -> None:
        self.machine = machine
        self.platform = platform
        self.nursery = nursery
        self.counters = counters
        self.connections = connections
        self.ready: deque[Message] = deque()
        self.workers = 0  # alive (parked, starting or delivering)
        self.busy = 0  # delivering
        self.wall_ms: Callable[[], int] = wall_ms  # tests map it onto the mock clock
        self._lot = trio.lowlevel.ParkingLot()
        self._timing = False  # the timer task is alive
        self._sleep: trio.CancelScope | None = None  # where it sleeps (None: it is awake)
        machine.on_earlier = self._earlier

    def __repr__(self) -> str:
        return (
            f"<Outbox timers={len(self.machine.timers)} ready={len(self.ready)} "
            f"workers={self.workers} busy={self.busy} live={self.machine.live}>"
        )

    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages for delivery now (in order)."""
        platform = self.platform
        if platform is None:  # no platform URL: only sync flows were expected
            for message in messages:
                self.counters[f"device.{message.kind}.undelivered"] += 1
                self._done_with(message)
            return
        ready = self.ready
        ready.extend(messages)
        waiting = len(ready)
        parked = len(self._lot)
        if parked:
            self._lot.unpark(count=waiting)
        # Workers that exist but deliver nothing are about to take a message; add as many as
        # the messages left over need, up to the pool's connections.
        while self.workers < self.connections and self.workers - self.busy < waiting:
            self.workers += 1
            self.nursery.start_soon(self._worker)

    def ended(self) -> None:
        """An operation ended (the engine's ``on_end``): idle workers leave once none is live."""
        if not self.machine.live and not self.ready and self._lot:
            self._lot.unpark_all()

    # --- the timer task ------------------------------------------------------------------

    def _earlier(self, due: float) -> None:
        """A timer was armed before every other one: start the timer task, or wake it sooner."""
        if not self._timing:
            self._timing = True
            self.nursery.start_soon(self._timers)
        elif self._sleep is not None and due < self._sleep.deadline:
            self._sleep.deadline = due

    async def _timers(self) -> None:
        machine = self.machine
        timers = machine.timers
        current_time = trio.current_time
        try:
            while True:
                due = machine.expire(current_time(), self.wall_ms())
                if due:
                    self.send(due)
                if not timers:
                    return
                with trio.CancelScope(deadline=timers.next_due) as self._sleep:
                    await trio.sleep_forever()
                self._sleep = None
        except trio.Cancelled:
            self._abandon()
            raise
        finally:
            self._timing = False
            self._sleep = None

    # --- the workers ---------------------------------------------------------------------

    async def _worker(self) -> None:
        platform = self.platform
        assert platform is not None
        ready = self.ready
        machine = self.machine
        current_time = trio.current_time
        try:
            while True:
                if not ready:
                    if not machine.live:
                        return
                    await self._lot.park()
                    continue
                message = ready.popleft()
                self.busy += 1
                try:
                    wait = await platform.deliver(
                        message.kind, message.device_id, message.body, message.attempt
                    )
                finally:
                    self.busy -= 1
                if wait is not None:
                    message.attempt += 1
                    machine.retry(message, current_time() + wait)
                else:
                    following = self._done_with(message)
                    if following is not None:
                        ready.appendleft(following)
        except trio.Cancelled:
            self._abandon()
            raise
        finally:
            self.workers -= 1

    def _done_with(self, message: Message) -> Message | None:
        following = self.machine.done_with(message, trio.current_time(), self.wall_ms())
        if following is not None and self.platform is None:
            self.counters[f"device.{following.kind}.undelivered"] += 1
            return self._done_with(following)
        return following

    def _abandon(self) -> None:
        cut = self.machine.abandon()
        if cut:
            self.counters["device.ops.cancelled"] += cut
        self.ready.clear()
