"""The devices of a fleet: one small record each, and the per-device admission of operations.

Why records and not tasks: a fleet is 100,000 devices of which a few hundred are busy at any
time. An idle device is a ``Device`` with four slots (its id, a running count, a waiting queue
that exists only while someone waits, and the names of the exclusive operations it holds); the
whole fleet is one ``dict`` from id to record, so routing a request is one lookup and memory
grows with work in flight, not with fleet size (``make bench`` reports the bytes per device).

Admission (``Device.try_enter`` / ``line_up`` / ``leave``) is a tiny counting semaphore with a
FIFO of waiters: a device runs at most ``concurrency`` operations; others wait in arrival order
or are turned away, as the profile says, decided when the request arrives. A synchronous request
lines up a ``trio.Event`` and waits on it in its HTTP task (``wait_turn``); an asynchronous
operation has no task, so its record itself stands in the line. ``leave`` hands the slot straight to the first waiter, so a burst cannot overtake
the queue: it sets the Event, or returns the record for the engine to admit. ``exclusive`` remembers the REBOOT_EQUIPMENT/UPDATE
operations admitted (running or queued) so a second one gets ALREADY_IN_PROGRESS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from loadgen.device.config import FleetConfig, Profile
from loadgen.errors import ConfigError

__all__ = ["Device", "build_devices"]


class Device:
    """One virtual device: its id and the little state that admission needs."""

    __slots__ = ("exclusive", "id", "running", "waiting")

    def __init__(self, device_id: str) -> None:
        self.id = device_id
        self.running = 0
        self.waiting: deque[object] | None = None  # trio.Event (a sync request) or a record
        self.exclusive: tuple[str, ...] = ()

    def __repr__(self) -> str:
        waiting = len(self.waiting) if self.waiting else 0
        held = f" exclusive={list(self.exclusive)}" if self.exclusive else ""
        return f"<Device {self.id} running={self.running} waiting={waiting}{held}>"

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting and not self.exclusive

    # --- exclusive operations (ALREADY_IN_PROGRESS) ---------------------------------------

    def hold(self, name: str) -> bool:
        """Mark ``name`` as in progress; False if it already is (the caller answers
        ALREADY_IN_PROGRESS)."""
        if name in self.exclusive:
            return False
        self.exclusive = (*self.exclusive, name)
        return True

    def unhold(self, name: str) -> None:
        held = self.exclusive
        if len(held) == 1:
            self.exclusive = ()
        else:
            index = held.index(name)
            self.exclusive = held[:index] + held[index + 1 :]

    # --- admission -------------------------------------------------------------------------

    def try_enter(self, profile: Profile) -> bool:
        """Take a slot at once if one is free and nobody waits (the no-await fast path)."""
        if self.running < profile.concurrency and not self.waiting:
            self.running += 1
            return True
        return False

    async def wait_turn(self, turn: trio.Event, admit: Callable[[object], None] | None) -> None:
        """Wait until ``leave`` hands the slot to ``turn`` (lined up by ``line_up``). Cancelled,
        the waiter leaves the line, or passes on the slot handed to it meanwhile."""
        try:
            await turn.wait()
        except BaseException:
            waiting = self.waiting
            if turn.is_set():  # the slot was handed over as we were cancelled: pass it on
                handed = self.leave()
                if handed is not None and admit is not None:
                    admit(handed)
            elif waiting is not None:
                waiting.remove(turn)
                if not waiting:
                    self.waiting = None
            raise

    def line_up(self, waiter: object, profile: Profile) -> bool:
        """Put ``waiter`` (an operation record, or a sync request's ``trio.Event``) in the line
        for the next free slot; False when the profile turns it away (it rejects, or the line
        is full). A request lined up must then ``wait_turn``."""
        waiting = self.waiting
        queued = len(waiting) if waiting is not None else 0
        if profile.when_busy == "reject" or queued >= profile.queue_limit:
            return False
        if waiting is None:
            waiting = self.waiting = deque()
        waiting.append(waiter)
        return True

    def leave(self) -> object | None:
        """Give the slot back: to the first waiter if there is one, else to the pool. Returns
        the record that got the slot (the caller admits it), None otherwise."""
        waiting = self.waiting
        if waiting:
            turn = waiting.popleft()  # the slot passes over; ``running`` is unchanged
            if not waiting:
                self.waiting = None
            if isinstance(turn, trio.Event):
                turn.set()
                return None
            return turn
        self.running -= 1
        return None


def build_devices(config: FleetConfig) -> dict[str, Device]:
    """The fleet's routing table, id -> record, in index order."""
    pattern = config.id_pattern.format
    first = config.first_index
    devices: dict[str, Device] = {}
    for index in range(first, first + config.count):
        device_id = pattern(index)
        devices[device_id] = Device(device_id)
    if len(devices) != config.count:
        raise ConfigError(
            f"the pattern {config.id_pattern!r} gives only {len(devices)} distinct ids "
            f"for {config.count} devices",
            key="id_pattern",
        )
    return devices
