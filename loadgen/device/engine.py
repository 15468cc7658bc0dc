"""The operation engine: runs one operation on one device, in any flow, with its faults.

Theory of operation
-------------------
``Engine.handle`` is called by the HTTP handler with a decoded request and returns the
``Reply`` for that request. The synchronous path does no ``await`` at all when the profile has
no sync delay and the device is free: profile lookup, admission (``try_enter``), one or two
draws, one ``orjson.dumps``, one ``Reply``. That path is what ``make bench`` measures.

An asynchronous operation is acknowledged by the handler (after the ``ack`` delay) and goes on
as a small record, not a task: ``loadgen.device.steps`` (pure) moves it through its steps and
builds its messages, and ``loadgen.device.outbox`` (one timer task per fleet, and at most as
many delivery workers as the responder has connections) sends them through the ``Platform``
(``loadgen.device.responder`` in production, a fake in tests). A busy device lines the record
up; the slot given back is handed to it (``_admit``). Operations a sleepy device fetched from
``operation/pending`` run the same way without an acknowledgement (``start_pending``).

Refusals are answered at once, without delays and without a slot: a name outside the catalogue
(and without a profile of its own) gets NOT_SUPPORTED, a second REBOOT_EQUIPMENT/UPDATE while
one is admitted gets ALREADY_IN_PROGRESS, a busy device that rejects gets ERROR_PROCESSING.

Every random choice comes from the fleet's one ``random.Random(seed)``, in arrival order, so a
run with the same seed and the same arrival order (a test under the mock clock; a sequential
client) repeats exactly. All waiting is on the trio clock (mock-clock friendly); wall-clock
milliseconds are read only for the JSON timestamps.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Final, Protocol

import trio

from loadgen.device.behaviour import (
    BUSY_DESCRIPTION,
    Behaviour,
    Operation,
    collect_body,
    malformed,
    other_id,
    response_body,
    step_objects,
    step_results,
)
from loadgen.device.config import FleetConfig, Profile
from loadgen.device.fleet import Device
from loadgen.device.outbox import Outbox, Platform, wall_ms
from loadgen.device.steps import CALLBACK, COLLECT, AsyncOp, Message, StepMachine
from loadgen.http.server import Action, Reply
from loadgen.metrics import Metrics
from loadgen.protocol import EXCLUSIVE_OPERATIONS, OPERATION_NAMES, ResultCode

__all__ = ["DeviceObserver", "Engine", "Platform"]

REFRESH_INFO: Final = "REFRESH_INFO"
_KNOWN: Final = frozenset(OPERATION_NAMES)

_CLOSE: Final = Reply(200, action=Action.CLOSE)
_HANG: Final = Reply(200, action=Action.HANG)
_ERROR_500: Final = Reply(500, b"simulated internal error\n", content_type=b"text/plain")
#: Faults answered on the HTTP exchange instead of running the operation.
_NO_RUN: Final = {"close": _CLOSE, "hang": _HANG, "error_500": _ERROR_500}
#: Empty acknowledgements, one per selectable status, rendered once.
_ACKS: Final = {status: Reply(status) for status in (200, 201, 202, 204)}

_RESULT_COUNTERS: Final = {code: f"device.result.{code}" for code in ResultCode}


_now_ms = wall_ms


class DeviceObserver(Protocol):
    """Told, on the run's clock, when a device receives an operation request and when it writes
    its final answer (the north side correlates jobs with the operations so, issue 10)."""

    def received(self, device_id: str, op_id: str, now: float) -> None: ...

    def answered(self, device_id: str, op_id: str, now: float) -> None: ...


class Engine:
    """Runs operations for the devices of one fleet (see the module docstring)."""

    def __init__(
        self,
        config: FleetConfig,
        metrics: Metrics,
        platform: Platform | None,
        nursery: trio.Nursery,
        observer: DeviceObserver | None = None,
    ) -> None:
        self.observer = observer
        self.config = config
        self.metrics = metrics
        self.platform = platform
        self.nursery = nursery
        self.rng = random.Random(config.seed)
        self.sync_in_flight = 0
        self.last_id: str | None = None
        self._counters: Counter[str] = metrics.counters
        self._default = Behaviour(config.default, config.faults)
        self._behaviours = {
            name: Behaviour(profile, config.faults) for name, profile in config.profiles.items()
        }
        self._collect = config.sleepy.collect_after_refresh
        self._drip = config.faults
        self.machine = StepMachine(
            self.rng,
            self._counters,
            collect=self._collect,
            on_end=self._ended,
            on_answer=None if observer is None else self._answered,
        )
        self.outbox = Outbox(
            self.machine,
            platform,
            nursery,
            self._counters,
            connections=config.responder.max_connections,
        )

    def __repr__(self) -> str:
        return f"<Engine in_flight={self.in_flight} seed={self.config.seed}>"

    @property
    def in_flight(self) -> int:
        """Sync requests being answered plus async operations not ended (queued included)."""
        return self.sync_in_flight + self.machine.live

    def behaviour(self, name: str) -> tuple[Behaviour, bool]:
        """The behaviour for operation ``name`` and whether the device supports it."""
        found = self._behaviours.get(name)
        if found is not None:
            return found, True
        return self._default, name in _KNOWN

    # --- the HTTP side -------------------------------------------------------------------

    async def handle(self, device: Device, request: Operation) -> Reply:
        """Run (or start) ``request`` on ``device``; the ``Reply`` answers its HTTP request."""
        outcome = self.handle_now(device, request)
        return outcome if isinstance(outcome, Reply) else await outcome

    def handle_now(self, device: Device, request: Operation) -> Reply | Coroutine[Any, Any, Reply]:
        """``handle`` without waiting when it can: the ``Reply`` when the answer needs no wait
        (a free device without a sync delay, an async operation without an ack delay, every
        refusal), else the coroutine that waits and gives it. That coroutine holds what was
        taken at arrival (the device's slot, the exclusive name) and gives it back when it ends:
        the caller must await it (the HTTP server does, in a task of its own)."""
        counters = self._counters
        counters["device.ops.received"] += 1
        if self.observer is not None:
            self.observer.received(device.id, request.id, trio.current_time())
        name = request.name
        behaviour = self._behaviours.get(name)
        if behaviour is None:
            behaviour = self._default
            supported = name in _KNOWN
        else:
            supported = True
        profile = behaviour.profile
        is_async = behaviour.is_async
        counters["device.ops.async" if is_async else "device.ops.sync"] += 1
        if not supported:
            return self._refuse(device, request, profile, ResultCode.NOT_SUPPORTED)
        exclusive = name in EXCLUSIVE_OPERATIONS
        if exclusive and not device.hold(name):
            return self._refuse(device, request, profile, ResultCode.ALREADY_IN_PROGRESS)
        later = False  # a coroutine took over the name (and the slot): it ends the request
        try:
            fault = behaviour.draw_fault(self.rng) if behaviour.has_faults else None
            if fault is not None:
                counters["device.fault." + fault] += 1
                refused = _NO_RUN.get(fault)
                if refused is not None:
                    return refused
            if is_async:
                delay = behaviour.ack_delay
                if delay is None:
                    exclusive = False  # from here the record holds the exclusive name
                    return self._acknowledge(device, request, behaviour, fault)
                later = True
                return self._ack_later(device, request, behaviour, fault, delay.sample(self.rng))
            # Synchronous: nothing to wait for on the fast path (free device, no sync delay).
            # Admission is decided here, at arrival, whatever comes after (FIFO, refusals).
            turn = None
            if not device.try_enter(profile):
                if profile.when_busy == "queue":
                    counters["device.busy.queued"] += 1
                turn = trio.Event()
                if not device.line_up(turn, profile):
                    counters["device.busy.rejected"] += 1
                    return self._refuse(device, request, profile, ResultCode.ERROR_PROCESSING)
            delay = behaviour.sync_delay
            if turn is None and delay is None:  # (in flight only within this call: not counted)
                try:
                    return self._answer(device, request, behaviour, fault)
                finally:
                    self._leave(device)
            self.sync_in_flight += 1  # until ``_sync_later`` ends
            later = True
            return self._sync_later(
                device, request, behaviour, fault, turn=turn,
                delay=None if delay is None or turn is not None else delay.sample(self.rng),
            )  # fmt: skip
        finally:
            if not later:
                if exclusive:
                    device.unhold(name)
                self.last_id = request.id

    async def _ack_later(
        self, device: Device, request: Operation, behaviour: Behaviour, fault: str | None,
        delay: float,
    ) -> Reply:  # fmt: skip
        """An async operation's acknowledgement after its ``ack`` delay (``handle_now``)."""
        handed_over = False
        try:
            await trio.sleep(delay)
            handed_over = True  # from here the record holds the exclusive name
            return self._acknowledge(device, request, behaviour, fault)
        finally:
            if not handed_over and request.name in EXCLUSIVE_OPERATIONS:
                device.unhold(request.name)
            self.last_id = request.id

    def _acknowledge(
        self, device: Device, request: Operation, behaviour: Behaviour, fault: str | None
    ) -> Reply:
        """Start the async operation (its record goes on alone) and acknowledge it."""
        self._start(device, request, behaviour, fault)
        reply = _ACKS[behaviour.profile.ack_status]
        return self._dripping(reply) if fault == "drip" else reply

    async def _sync_later(
        self, device: Device, request: Operation, behaviour: Behaviour, fault: str | None,
        *, turn: trio.Event | None, delay: float | None,
    ) -> Reply:  # fmt: skip
        """A sync answer that waits: for its ``turn`` at the busy device (lined up at arrival),
        then its sync delay (``delay``, drawn at arrival when the device was free; drawn once
        the slot is had otherwise, as before). ``sync_in_flight`` was counted in ``handle_now``."""
        try:
            if turn is not None:
                await device.wait_turn(turn, self._admit)
                sync_delay = behaviour.sync_delay
                if sync_delay is not None:
                    delay = sync_delay.sample(self.rng)
            try:
                if delay is not None:
                    await trio.sleep(delay)
                return self._answer(device, request, behaviour, fault)
            finally:
                self._leave(device)
        finally:
            self.sync_in_flight -= 1
            if request.name in EXCLUSIVE_OPERATIONS:
                device.unhold(request.name)
            self.last_id = request.id

    def _answer(
        self, device: Device, request: Operation, behaviour: Behaviour, fault: str | None
    ) -> Reply:
        """The synchronous answer (the operation is done: result, steps, body)."""
        profile = behaviour.profile
        rng = self.rng
        result = behaviour.draw_result(rng)
        now = _now_ms()
        body = response_body(
            request,
            device.id,
            version=profile.version,
            now_ms=now,
            result=result,
            steps=step_objects(
                request, step_results(behaviour.step_names(request), result, rng), now
            ),
            operation_id=None if fault != "wrong_id" else other_id(rng, self.last_id, request.id),
        )
        counters = self._counters
        counters[_RESULT_COUNTERS[result]] += 1
        counters["device.ops.completed"] += 1
        if self.observer is not None:
            self.observer.answered(device.id, request.id, trio.current_time())
        if self._collect and result is ResultCode.SUCCESSFUL and request.name == REFRESH_INFO:
            data = collect_body(device.id, now, rng)
            self.outbox.send((Message(None, device.id, COLLECT, data),))
        if fault is None:
            return Reply(profile.sync_status, body)
        if fault == "malformed_json":
            return Reply(profile.sync_status, malformed(body))
        reply = Reply(profile.sync_status, body)
        return self._dripping(reply) if fault == "drip" else reply

    def _dripping(self, reply: Reply) -> Reply:
        faults = self._drip
        return Reply(
            reply.status,
            reply.body,
            action=Action.DRIP,
            drip_bytes=faults.drip_bytes,
            drip_interval=faults.drip_interval,
        )

    def _refuse(
        self, device: Device, request: Operation, profile: Profile, result: ResultCode
    ) -> Reply:
        """Answer at once with ``result`` and no steps (sync body, or ack + final POST)."""
        self._counters[_RESULT_COUNTERS[result]] += 1
        self._counters["device.ops.completed"] += 1
        if self.observer is not None:
            self.observer.answered(device.id, request.id, trio.current_time())
        self.last_id = request.id
        description = BUSY_DESCRIPTION if result is ResultCode.ERROR_PROCESSING else None
        body = response_body(
            request,
            device.id,
            version=profile.version,
            now_ms=_now_ms(),
            result=result,
            steps=[],
            description=description,
        )
        if profile.flow == "sync":
            return Reply(profile.sync_status, body)
        self.outbox.send((Message(None, device.id, CALLBACK, body),))
        return _ACKS[profile.ack_status]

    # --- the asynchronous side -----------------------------------------------------------

    def start_pending(self, device: Device, request: Operation) -> None:
        """Start an operation a sleepy device fetched: no acknowledgement, every answer POSTed."""
        counters = self._counters
        counters["device.ops.received"] += 1
        counters["device.ops.pending"] += 1
        if self.observer is not None:
            self.observer.received(device.id, request.id, trio.current_time())
        behaviour, supported = self.behaviour(request.name)
        profile = behaviour.profile
        name = request.name
        if not supported or (name in EXCLUSIVE_OPERATIONS and not device.hold(name)):
            code = ResultCode.NOT_SUPPORTED if not supported else ResultCode.ALREADY_IN_PROGRESS
            counters[_RESULT_COUNTERS[code]] += 1
            counters["device.ops.completed"] += 1
            body = response_body(
                request,
                device.id,
                version=profile.version,
                now_ms=_now_ms(),
                result=code,
                steps=[],
            )
            if self.observer is not None:
                self.observer.answered(device.id, request.id, trio.current_time())
            self.outbox.send((Message(None, device.id, CALLBACK, body),))
            return
        fault = behaviour.draw_fault(self.rng) if behaviour.has_faults else None
        if fault in _NO_RUN or fault == "drip":
            fault = None  # there is no HTTP answer to misbehave on
        if fault is not None:
            counters["device.fault." + fault] += 1
        self.last_id = request.id
        self._start(device, request, behaviour, fault)

    def _start(
        self, device: Device, request: Operation, behaviour: Behaviour, fault: str | None
    ) -> None:
        """An async (or pending) operation after its acknowledgement: a record for the step
        machine, admitted now, lined up at its busy device, or refused (ERROR_PROCESSING)."""
        op = AsyncOp(device, request, behaviour, fault)
        machine = self.machine
        machine.open(op)
        profile = behaviour.profile
        if device.try_enter(profile):
            machine.begin(op, trio.current_time(), self.last_id)
            return
        counters = self._counters
        if profile.when_busy == "queue":
            counters["device.busy.queued"] += 1
        if device.line_up(op, profile):
            machine.queue(op)
            return
        counters["device.busy.rejected"] += 1
        self.outbox.send((machine.refuse(op, trio.current_time(), self.outbox.wall_ms()),))

    def _admit(self, waiter: object) -> None:
        """A queued async operation got the slot its device gave back."""
        assert isinstance(waiter, AsyncOp)
        self.machine.begin(waiter, trio.current_time(), self.last_id)

    def _leave(self, device: Device) -> None:
        handed = device.leave()
        if handed is not None:
            self._admit(handed)

    def _answered(self, op: AsyncOp, now: float) -> None:
        """The step machine wrote an async final (the observer's ``answered``)."""
        assert self.observer is not None
        self.observer.answered(op.device.id, op.id, now)

    def _ended(self, op: AsyncOp) -> None:
        """The step machine's ``on_end``: give back the device slot and the exclusive name."""
        device = op.device
        if op.slot:
            self._leave(device)
        if op.name in EXCLUSIVE_OPERATIONS:
            device.unhold(op.name)
        self.outbox.ended()
