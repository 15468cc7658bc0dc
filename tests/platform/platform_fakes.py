"""In-memory devices for the platform tests: transports that answer like a device would,
on whatever clock the test runs (``autojump_clock`` for exact timing tests).

A fake transport is what ``run_platform(..., transport=...)`` calls instead of the connection
pool: ``(origin, target, body, *, deadline) -> answer``, ``deadline`` being the operation's first
deadline on the trio clock (the pool closes the connection then). The async flavour POSTs its responses straight into
the platform's ``SouthCore.handle`` (the same function the HTTP server calls), so the whole
lifecycle runs without sockets.

``run_held`` runs the platform held (``hold=True``), for the tests that set something up on its
``PlatformInfo`` before the load begins or act on it while the load runs.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio.testing

from loadgen.errors import ReadTimeout
from loadgen.http.client import Origin
from loadgen.metrics.registry import Metrics
from loadgen.platform import PlatformConfig, PlatformInfo, PlatformResult, run_platform
from loadgen.platform.sender import Transport
from loadgen.platform.south import SouthCore
from loadgen.protocol import DEFAULT_BASE_PATH


@dataclass(frozen=True, slots=True)
class FakeAnswer:
    status: int
    body: bytes = b""


def response_body(
    op_id: str, name: str, code: str | None, steps: list[dict[str, Any]] | None = None
) -> bytes:
    response: dict[str, Any] = {"id": op_id, "timestamp": 1, "name": name}
    if code is not None:
        response["resultCode"] = code
    response["steps"] = steps if steps is not None else []
    return orjson.dumps({"version": "1.0", "operation": {"response": response}})


def step(name: str) -> dict[str, Any]:
    return {"name": name, "timestamp": 1, "result": "SUCCESSFUL"}


def request_of(body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(body)["operation"]["request"]
    return out


def device_of(target: bytes) -> str:
    return target.decode().removeprefix(DEFAULT_BASE_PATH + "/").split("/")[0]


@dataclass
class FreezingDevice:
    """Answers sync in ``service`` seconds, but nothing at all during ``[freeze_from,
    freeze_until)`` (relative to ``t0``): requests arriving then are answered after it."""

    service: float = 0.001
    freeze_from: float = float("inf")
    freeze_until: float = float("inf")
    t0: Callable[[], float] = lambda: 0.0
    served: int = 0

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        request = request_of(body)
        now = trio.current_time() - self.t0()
        if self.freeze_from <= now < self.freeze_until:
            await trio.sleep_until(self.t0() + self.freeze_until)
        await trio.sleep(self.service)
        self.served += 1
        return FakeAnswer(201, response_body(request["id"], request["name"], "SUCCESSFUL"))


@dataclass
class AsyncDevice:
    """Acknowledges with 201 and an empty body, then POSTs ``partials`` partial responses and a
    final one to the platform's south API, ``gap`` seconds apart, in a task of ``nursery``.

    ``behaviour(index)`` may return, per request (0-based), one of ``"ok"``, ``"silent"`` (ack,
    never answer), ``"no-ack"`` (never answer the HTTP request), ``"error"`` (500),
    ``"duplicate"`` (final twice), ``"fail"`` (final ERROR_PROCESSING) or a result code.
    """

    core: Callable[[], SouthCore]
    nursery: trio.Nursery
    partials: int = 1
    gap: float = 0.1
    behaviour: Callable[[int], str] = lambda index: "ok"
    seen: list[str] = field(default_factory=list)

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        request = request_of(body)
        index = len(self.seen)
        self.seen.append(request["id"])
        kind = self.behaviour(index)
        if kind == "no-ack":
            await trio.sleep_forever()
        if kind == "error":
            return FakeAnswer(500, b"boom")
        if kind != "silent":
            self.nursery.start_soon(self._respond, device_of(target), request, kind)
        return FakeAnswer(201)

    async def _respond(self, device_id: str, request: dict[str, Any], kind: str) -> None:
        path = f"{DEFAULT_BASE_PATH}/{device_id}/operation/response".encode()
        for i in range(self.partials):
            await trio.sleep(self.gap)
            body = response_body(request["id"], request["name"], None, [step(f"STEP{i}")])
            assert self.core().handle(b"POST", path, None, body, trio.current_time())[0] == 201
        await trio.sleep(self.gap)
        code = {"ok": "SUCCESSFUL", "duplicate": "SUCCESSFUL", "fail": "ERROR_PROCESSING"}.get(
            kind, kind
        )
        final = response_body(request["id"], request["name"], code, [step("END")])
        assert self.core().handle(b"POST", path, None, final, trio.current_time())[0] == 201
        if kind == "duplicate":
            self.core().handle(b"POST", path, None, final, trio.current_time())


@dataclass
class SilentDevice:
    """Never answers (a frozen device, or an async one holding its acknowledgement).

    It notes the deadline each request came with. With ``close_at_deadline`` it ends each exchange
    at that deadline with ``ReadTimeout``, as the connection pool does when it closes the
    connection of an operation that timed out (at the very instant the in-flight table's timer
    fires: which of the two trio runs first is not fixed, and must not matter).
    """

    close_at_deadline: bool = False
    deadlines: dict[str, float] = field(default_factory=dict)

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        self.deadlines[request_of(body)["id"]] = deadline
        if self.close_at_deadline:
            await trio.sleep_until(deadline)
            raise ReadTimeout("no complete answer by the request's deadline")
        await trio.sleep_forever()
        raise AssertionError("unreachable")


@dataclass
class StallingDevice:
    """Answers sync in ``service`` seconds; taking request number ``stall_at`` (0-based) blocks
    the whole event loop for ``stall`` seconds: the mock clock jumps while no task runs, as in a
    long GC pause or a CPU-bound callback. Every sleeper then wakes late, the sender included.
    """

    clock: trio.testing.MockClock
    stall_at: int
    stall: float
    service: float = 0.001
    seen: int = 0

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        request = request_of(body)
        if self.seen == self.stall_at:
            self.clock.jump(self.stall)
        self.seen += 1
        await trio.sleep(self.service)
        return FakeAnswer(201, response_body(request["id"], request["name"], "SUCCESSFUL"))


@dataclass
class HeldRun:
    """A run started by ``run_held``: its ``info`` at once, its ``result`` once the block is
    left; ``nursery`` takes tasks that are to end with the run (a sleepy device, say)."""

    info: PlatformInfo
    nursery: trio.Nursery
    returned: PlatformResult | None = None

    @property
    def result(self) -> PlatformResult:
        assert self.returned is not None, "the run has not returned yet"
        return self.returned


@asynccontextmanager
async def run_held(
    config: PlatformConfig, metrics: Metrics, transport: Transport
) -> AsyncIterator[HeldRun]:
    """Start ``run_platform(config, metrics, transport=transport, hold=True)`` in a nursery and
    yield a ``HeldRun`` as soon as the platform is up, before the load: the block sets things up
    on ``held.info`` (``table.on_end``, a clock reading), calls ``held.info.begin_load()`` and
    may act while the load runs. Leaving the block waits for the run to return and sets
    ``held.result``, then cancels whatever still runs in ``held.nursery``."""
    done: list[PlatformResult] = []
    returned = trio.Event()
    async with trio.open_nursery() as nursery:

        async def platform(task_status: trio.TaskStatus[PlatformInfo]) -> None:
            done.append(
                await run_platform(
                    config, metrics, transport=transport, hold=True, task_status=task_status
                )
            )
            returned.set()

        held = HeldRun(await nursery.start(platform), nursery)
        yield held
        await returned.wait()
        held.returned = done[0]
        nursery.cancel_scope.cancel()
