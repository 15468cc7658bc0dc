"""The south API lingers after the last operation ended (``SouthAPI.linger``), so a duplicate
final or a partial after the final arriving right behind it is answered 201 and counted
(PROTOCOL.md §5) instead of refused, without changing the run's durations, rates or outcomes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import httpx
import pytest
import trio
import trio.testing
from platform_fakes import (
    FakeAnswer,
    FreezingDevice,
    device_of,
    request_of,
    response_body,
    run_held,
    step,
)

from loadgen.errors import ConfigError
from loadgen.http.client import Origin
from loadgen.metrics.registry import Metrics
from loadgen.platform import (
    Arrival,
    PlatformConfig,
    PlatformInfo,
    PlatformResult,
    SouthAPI,
    Stage,
    Timeouts,
    run_platform,
)
from loadgen.protocol import DEFAULT_BASE_PATH


@dataclass
class LateEcho:
    """An async device: acknowledges, POSTs the final ``final_after`` s later and, ``late_after``
    s after the final, a duplicate of it (``late = "duplicate"``) or a partial
    (``"partial"``). Each late POST is logged as ``(time, platform phase, status)``."""

    info: list[PlatformInfo]
    nursery: trio.Nursery
    final_after: float = 0.25
    late_after: float = 1.0
    late: str = "duplicate"
    log: list[tuple[float, str, int]] = field(default_factory=list)

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        self.nursery.start_soon(self._respond, device_of(target), request_of(body))
        return FakeAnswer(201)

    async def _respond(self, device_id: str, request: dict[str, str]) -> None:
        core = self.info[0].core
        path = f"{DEFAULT_BASE_PATH}/{device_id}/operation/response".encode()
        final = response_body(request["id"], request["name"], "SUCCESSFUL", [step("END")])
        await trio.sleep(self.final_after)
        assert core.handle(b"POST", path, None, final, trio.current_time())[0] == 201
        await trio.sleep(self.late_after)
        late = final
        if self.late == "partial":
            late = response_body(request["id"], request["name"], None, [step("AFTER")])
        status, _ = core.handle(b"POST", path, None, late, trio.current_time())
        self.log.append((trio.current_time(), self.info[0].phase, status))


def config_of(rate: float = 10.0, duration: float = 1.0, **south: float) -> PlatformConfig:
    return PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=duration, rate=rate),)),
        timeouts=Timeouts(ack_timeout=2.0, timeout=5.0),
        south=SouthAPI(**south),  # type: ignore[arg-type]
    )


async def run_with(
    config: PlatformConfig, make: type[LateEcho] = LateEcho, **options: object
) -> tuple[PlatformResult, LateEcho, float]:
    """Run ``config`` against a ``LateEcho``; (result, device, the run's length on the clock)."""
    infos: list[PlatformInfo] = []
    async with trio.open_nursery() as nursery:
        device = make(infos, nursery, **options)  # type: ignore[arg-type]
        async with run_held(config, Metrics(), device) as held:
            infos.append(held.info)
            start = trio.current_time()
            held.info.begin_load()
        nursery.cancel_scope.cancel()  # what the device still holds ends with the run
    return held.result, device, trio.current_time() - start


@pytest.mark.parametrize(
    ("late", "counter"), [("duplicate", "south.duplicate"), ("partial", "south.late")]
)
async def test_a_late_message_right_behind_the_last_operation_is_counted(
    autojump_clock: trio.testing.MockClock, late: str, counter: str
) -> None:
    result, device, length = await run_with(config_of(), late=late)
    # 10 operations at 0.0 .. 0.9 s; each final 0.25 s later; the last ends the drain at 1.15 s;
    # each late message comes 1 s after its final: the last one at 2.15 s, in the linger.
    assert result.counters[counter] == 10
    assert [status for _, _, status in device.log] == [201] * 10
    assert device.log[-1][0] - device.log[0][0] == pytest.approx(0.9)
    assert device.log[-1][1] == "linger"
    # The linger delays only the server's close: durations, rates and outcomes are unchanged.
    assert result.duration_s == pytest.approx(1.15, abs=1e-9)
    assert result.load_duration_s == pytest.approx(1.0, abs=1e-9)
    assert result.achieved_rate == pytest.approx(10.0)
    assert result.counters["ops.completed"] == result.counters["ops.sent"] == 10
    assert length == pytest.approx(1.15 + 3.0, abs=1e-9)  # the default linger


async def test_the_linger_is_configurable_and_zero_turns_it_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    result, device, length = await run_with(config_of(linger=0.5), late_after=1.05)
    assert length == pytest.approx(1.15 + 0.5, abs=1e-9)
    # the duplicates of the finals at 0.25 .. 0.55 s came by 1.6 s; the others came too late
    assert result.counters["south.duplicate"] == 4
    assert [phase for _, phase, _ in device.log] == ["linger"] * 4
    result, device, length = await run_with(config_of(linger=0.0), late_after=0.0)
    assert length == pytest.approx(1.15, abs=1e-9)


async def test_a_cut_drain_ends_the_linger_at_once(autojump_clock: trio.testing.MockClock) -> None:
    infos: list[PlatformInfo] = []
    async with trio.open_nursery() as nursery:
        device = LateEcho(infos, nursery, late_after=10.0)
        async with run_held(config_of(linger=60.0), Metrics(), device) as held:
            infos.append(held.info)
            start = trio.current_time()
            infos[0].begin_load()
            await trio.sleep_until(start + 2.0)  # the drain ended at 1.15 s
            assert infos[0].phase == "linger"
            infos[0].cut_drain()  # a second Ctrl-C
        # leaving the block waited for the run to return
        assert trio.current_time() == start + 2.0
        assert infos[0].phase == "done"
        nursery.cancel_scope.cancel()


async def test_sync_answers_all_received_leave_nothing_to_linger_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nobody talked to the south API and nothing is owed: the run ends with its last answer."""
    start = trio.current_time()
    result = await run_platform(config_of(), Metrics(), transport=FreezingDevice(service=0.25))
    assert trio.current_time() - start == pytest.approx(1.15, abs=1e-9)
    assert result.duration_s == pytest.approx(1.15, abs=1e-9)


@pytest.mark.slow
async def test_duplicates_over_http_right_behind_the_last_operation_are_all_counted() -> None:
    """Real time: "connection refused" is a property of a closed socket, which an in-memory
    device cannot meet. 100 ops/s for 0.5 s; each device POSTs its final 50 ms after the
    acknowledgement and the same final again 0.2 s later, over HTTP: 50 of 50 are counted."""
    refused: list[BaseException] = []
    statuses: list[int] = []

    async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:

        async def respond(device_id: str, request: dict[str, str]) -> None:
            url = f"{held.info.south_url}{DEFAULT_BASE_PATH}/{device_id}/operation/response"
            final = response_body(request["id"], request["name"], "SUCCESSFUL", [step("END")])
            try:
                await trio.sleep(0.05)
                statuses.append((await http.post(url, content=final)).status_code)
                await trio.sleep(0.2)
                statuses.append((await http.post(url, content=final)).status_code)
            except httpx.TransportError as exc:
                refused.append(exc)

        async def device(
            origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
        ) -> FakeAnswer:
            nursery.start_soon(respond, device_of(target), request_of(body))
            return FakeAnswer(201)

        config = config_of(rate=100.0, duration=0.5, linger=1.0)
        with trio.fail_after(30):
            async with run_held(config, Metrics(), device) as held:
                held.info.begin_load()
    assert refused == []
    assert statuses == [201] * 100
    counters = held.result.counters
    assert (counters["ops.completed"], counters["south.duplicate"]) == (50, 50)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), "3s"])
def test_a_bad_linger_names_its_key(bad: object) -> None:
    with pytest.raises(ConfigError, match="linger: expected"):
        SouthAPI(linger=bad)  # type: ignore[arg-type]
    assert SouthAPI().linger == 3.0
