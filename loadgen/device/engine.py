"""The operation engine: runs one operation on one device, in any flow, with its faults.

Theory of operation
-------------------
``Engine.handle`` is called by the HTTP handler with a decoded request and returns the
``Reply`` for that request. The synchronous path does no ``await`` at all when the profile has
no sync delay and the device is free: profile lookup, admission (``try_enter``), one or two
draws, one ``orjson.dumps``, one ``Reply``. That path is what ``make bench`` measures.

An asynchronous operation is acknowledged by the handler (after the ``ack`` delay) and runs on
in a task of the engine's nursery, which owns it until its last POST: waiting for a slot when
the device is busy, sleeping each step's delay, POSTing partials and the final through the
``Platform`` (``loadgen.device.responder`` in production, a fake in tests). One task per
operation *in flight*, none per device. Operations a sleepy device fetched from
``operation/pending`` run the same way without an acknowledgement (``run_pending``).

Refusals are answered at once, without delays and without a slot: a name outside the catalogue
(and without a profile of its own) gets NOT_SUPPORTED, a second REBOOT_EQUIPMENT/UPDATE while
one is admitted gets ALREADY_IN_PROGRESS, a busy device that rejects gets ERROR_PROCESSING.

Every random choice comes from the fleet's one ``random.Random(seed)``, in arrival order, so a
run with the same seed and the same arrival order (a test under the mock clock; a sequential
client) repeats exactly. All waiting is ``trio.sleep`` (mock-clock friendly); wall-clock
milliseconds are read only for the JSON timestamps.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Final, Protocol

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
from loadgen.http.server import Action, Reply
from loadgen.metrics import Metrics
from loadgen.protocol import EXCLUSIVE_OPERATIONS, OPERATION_NAMES, ResultCode, StepResult

__all__ = ["DeviceObserver", "Engine", "Platform"]

REFRESH_INFO: Final = "REFRESH_INFO"
_KNOWN: Final = frozenset(OPERATION_NAMES)
_NOT_EXECUTED = StepResult.NOT_EXECUTED

_CLOSE: Final = Reply(200, action=Action.CLOSE)
_HANG: Final = Reply(200, action=Action.HANG)
_ERROR_500: Final = Reply(500, b"simulated internal error\n", content_type=b"text/plain")
#: Faults answered on the HTTP exchange instead of running the operation.
_NO_RUN: Final = {"close": _CLOSE, "hang": _HANG, "error_500": _ERROR_500}
#: Empty acknowledgements, one per selectable status, rendered once.
_ACKS: Final = {status: Reply(status) for status in (200, 201, 202, 204)}

_RESULT_COUNTERS: Final = {code: f"device.result.{code}" for code in ResultCode}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Platform(Protocol):
    """Where async answers go. Implementations count failures; they never raise for them."""

    async def post_response(self, device_id: str, body: bytes) -> bool: ...

    async def post_collect(self, device_id: str, body: bytes) -> bool: ...


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
        self.in_flight = 0
        self.last_id: str | None = None
        self._counters: Counter[str] = metrics.counters
        self._default = Behaviour(config.default, config.faults)
        self._behaviours = {
            name: Behaviour(profile, config.faults) for name, profile in config.profiles.items()
        }
        self._collect = config.sleepy.collect_after_refresh
        self._drip = config.faults

    def __repr__(self) -> str:
        return f"<Engine in_flight={self.in_flight} seed={self.config.seed}>"

    def behaviour(self, name: str) -> tuple[Behaviour, bool]:
        """The behaviour for operation ``name`` and whether the device supports it."""
        found = self._behaviours.get(name)
        if found is not None:
            return found, True
        return self._default, name in _KNOWN

    # --- the HTTP side -------------------------------------------------------------------

    async def handle(self, device: Device, request: Operation) -> Reply:
        """Run (or start) ``request`` on ``device``; the ``Reply`` answers its HTTP request."""
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
        handed_over = False
        try:
            fault = behaviour.draw_fault(self.rng) if behaviour.has_faults else None
            if fault is not None:
                counters["device.fault." + fault] += 1
                refused = _NO_RUN.get(fault)
                if refused is not None:
                    return refused
            if is_async:
                delay = behaviour.ack_delay
                if delay is not None:
                    await trio.sleep(delay.sample(self.rng))
                self.nursery.start_soon(self._run_async, device, request, behaviour, fault)
                handed_over = True
                reply = _ACKS[profile.ack_status]
                if fault == "drip":
                    reply = self._dripping(reply)
                return reply
            # Synchronous: no await at all on the fast path (free device, no sync delay).
            self.in_flight += 1
            try:
                if not device.try_enter(profile) and not await self._enter_busy(device, profile):
                    return self._refuse(device, request, profile, ResultCode.ERROR_PROCESSING)
                try:
                    delay = behaviour.sync_delay
                    if delay is not None:
                        await trio.sleep(delay.sample(self.rng))
                    return self._answer(device, request, behaviour, fault)
                finally:
                    device.leave()
            finally:
                self.in_flight -= 1
        finally:
            if exclusive and not handed_over:
                device.unhold(name)
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
            self.nursery.start_soon(self._post_collect, device)
        if fault is None:
            return Reply(profile.sync_status, body)
        if fault == "malformed_json":
            return Reply(profile.sync_status, malformed(body))
        reply = Reply(profile.sync_status, body)
        return self._dripping(reply) if fault == "drip" else reply

    async def _enter_busy(self, device: Device, profile: Profile) -> bool:
        """The slow admission path: queue (or not) as the profile says; counted."""
        if profile.when_busy == "queue":
            self._counters["device.busy.queued"] += 1
        if await device.enter(profile):
            return True
        self._counters["device.busy.rejected"] += 1
        return False

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
        self.nursery.start_soon(self._post, device, body)
        return _ACKS[profile.ack_status]

    # --- the asynchronous side -----------------------------------------------------------

    async def run_pending(self, device: Device, request: Operation) -> None:
        """Run an operation a sleepy device fetched: no acknowledgement, every answer POSTed."""
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
            await self._post(device, body)
            return
        fault = behaviour.draw_fault(self.rng) if behaviour.has_faults else None
        if fault in _NO_RUN or fault == "drip":
            fault = None  # there is no HTTP answer to misbehave on
        if fault is not None:
            counters["device.fault." + fault] += 1
        self.last_id = request.id
        await self._run_async(device, request, behaviour, fault)

    async def _run_async(
        self,
        device: Device,
        request: Operation,
        behaviour: Behaviour,
        fault: str | None,
    ) -> None:
        """The life of one async (or pending) operation after its acknowledgement."""
        profile = behaviour.profile
        name = request.name
        self.in_flight += 1
        try:
            if not device.try_enter(profile) and not await self._enter_busy(device, profile):
                self._counters[_RESULT_COUNTERS[ResultCode.ERROR_PROCESSING]] += 1
                self._counters["device.ops.completed"] += 1
                body = response_body(
                    request,
                    device.id,
                    version=profile.version,
                    now_ms=_now_ms(),
                    result=ResultCode.ERROR_PROCESSING,
                    steps=[],
                    description=BUSY_DESCRIPTION,
                )
                await self._post(device, body)
                return
            try:
                await self._steps_and_final(device, request, behaviour, fault)
            finally:
                device.leave()
        except trio.Cancelled:
            # The fleet was stopped (drain timeout, a second Ctrl-C) before this operation sent
            # its final response: counted, so nothing leaves without a trace.
            self._counters["device.ops.cancelled"] += 1
            raise
        finally:
            self.in_flight -= 1
            if name in EXCLUSIVE_OPERATIONS:
                device.unhold(name)

    async def _steps_and_final(
        self,
        device: Device,
        request: Operation,
        behaviour: Behaviour,
        fault: str | None,
    ) -> None:
        profile = behaviour.profile
        rng = self.rng
        result = behaviour.draw_result(rng)
        steps = step_results(behaviour.step_names(request), result, rng)
        operation_id = other_id(rng, self.last_id, request.id) if fault == "wrong_id" else None

        def body(result: ResultCode | None, done: list[tuple[str, StepResult]]) -> bytes:
            return response_body(
                request,
                device.id,
                version=profile.version,
                now_ms=(now := _now_ms()),
                result=result,
                steps=step_objects(request, done, now),
                operation_id=operation_id,
            )

        executed = [step for step in steps if step[1] is not _NOT_EXECUTED]
        final_steps = steps
        step_delay = behaviour.step_delay
        if profile.flow == "sync":  # a pending operation of a sync profile: one final POST
            if behaviour.sync_delay is not None:
                await trio.sleep(behaviour.sync_delay.sample(rng))
        elif profile.steps_mode == "partials":
            for step in executed:
                if step_delay is not None:
                    await trio.sleep(step_delay.sample(rng))
                await self._post(device, body(None, [step]))
            final_steps = steps[len(executed) :]
        else:
            if step_delay is not None:
                await trio.sleep(sum(step_delay.sample(rng) for _ in executed))
            if profile.flow == "async-multi" and steps:
                await self._post(device, body(None, steps))
                final_steps = []
        if behaviour.final_delay is not None:
            await trio.sleep(behaviour.final_delay.sample(rng))
        counters = self._counters
        counters[_RESULT_COUNTERS[result]] += 1
        counters["device.ops.completed"] += 1
        if fault == "no_final":
            return
        if self.observer is not None:  # the final answer is written now
            self.observer.answered(device.id, request.id, trio.current_time())
        final = body(result, final_steps)
        await self._post(device, malformed(final) if fault == "malformed_json" else final)
        if fault == "duplicate_final":
            await self._post(device, final)
        elif fault == "partial_after_final":
            late = steps[-1:] or [(request.name, StepResult.SUCCESSFUL)]
            await self._post(device, body(None, late))
        if self._collect and result is ResultCode.SUCCESSFUL and request.name == REFRESH_INFO:
            await self._post_collect(device)

    async def _post(self, device: Device, body: bytes) -> None:
        platform = self.platform
        if platform is None:
            self._counters["device.callback.undelivered"] += 1
            return
        await platform.post_response(device.id, body)

    async def _post_collect(self, device: Device) -> None:
        if self.platform is None:
            self._counters["device.collect.undelivered"] += 1
            return
        await self.platform.post_collect(device.id, collect_body(device.id, _now_ms(), self.rng))
