"""Whole runs of the platform against in-memory devices on the mock clock: asynchronous flows,
faults, retries, sleepy devices, the closed model and the in-flight cap. Every operation must
end exactly once, and the counters must add up."""

from __future__ import annotations

import math
from collections.abc import Callable

import orjson
import pytest
import trio
import trio.testing
from platform_fakes import (
    AsyncDevice,
    FakeAnswer,
    FreezingDevice,
    request_of,
    response_body,
    run_held,
    step,
)

from loadgen.http.client import Origin
from loadgen.metrics.registry import Metrics
from loadgen.platform import (
    Arrival,
    MixEntry,
    PlatformConfig,
    PlatformInfo,
    PlatformResult,
    Stage,
    Targets,
    Timeouts,
    run_platform,
)
from loadgen.protocol import DEFAULT_BASE_PATH


def assert_accounted(metrics: Metrics) -> None:
    c = metrics.counters
    assert c["ops.sent"] == c["ops.completed"] + c["ops.timed_out"] + c["ops.errors"]
    assert c["ops.completed"] == c["ops.succeeded"] + c["ops.failed"]
    results = sum(v for k, v in c.items() if k.startswith("result."))
    assert results == c["ops.completed"] + c["ops.timed_out"]
    assert metrics.phase("complete").intended.count == c["ops.completed"] + c["ops.timed_out"]


async def run_async(
    config: PlatformConfig,
    behaviour: Callable[[int], str],
    *,
    partials: int = 1,
    holder: list[AsyncDevice] | None = None,
) -> tuple[Metrics, PlatformResult, AsyncDevice]:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        # ``held`` (below) is bound before the device is first called
        device = AsyncDevice(
            core=lambda: held.info.core, nursery=nursery, partials=partials, gap=0.1,
            behaviour=behaviour,
        )  # fmt: skip
        if holder is not None:
            holder.append(device)
        async with run_held(config, metrics, device) as held:
            held.info.begin_load()
        nursery.cancel_scope.cancel()  # the device's own tasks end with the run
    return metrics, held.result, device


KINDS = ["ok", "ok", "silent", "no-ack", "error", "duplicate", "fail", "ok", "ok", "ok"]


async def test_async_flows_end_exactly_once(autojump_clock: trio.testing.MockClock) -> None:
    config = PlatformConfig(
        targets=Targets(count=10),
        arrival=Arrival(stages=(Stage(duration=5, rate=100),)),
        timeouts=Timeouts(ack_timeout=2.0, timeout=5.0),
    )
    metrics, result, device = await run_async(config, lambda i: KINDS[i % len(KINDS)], partials=2)
    n = 500
    per_kind = n // len(KINDS)
    c = metrics.counters
    assert c["ops.sent"] == len(device.seen) == n
    assert c["ops.completed"] == 7 * per_kind  # ok x5, duplicate, fail
    assert c["ops.succeeded"] == 6 * per_kind
    assert c["ops.failed"] == c["result.ERROR_PROCESSING"] == per_kind
    assert c["ops.timed_out"] == c["result.ERROR_TIMEOUT"] == 2 * per_kind  # silent, no-ack
    assert c["ops.errors"] == c["http.status.500"] == per_kind
    assert c["south.duplicate"] == per_kind
    assert c["ops.partials"] == 2 * 7 * per_kind
    assert c["ops.acked"] == n - 2 * per_kind  # all but no-ack and 500
    assert c.get("south.orphan", 0) == 0
    assert_accounted(metrics)
    # Exact latencies on the mock clock: partials at +0.1 and +0.2, the final at +0.3.
    complete = metrics.phase("complete").intended.merged()
    assert complete.get_value_at_percentile(50) == complete.get_highest_equivalent_value(300_000)
    first = metrics.phase("first_response").intended.merged()
    assert first.get_max_value() == first.get_highest_equivalent_value(100_000)
    # Timeouts are recorded at their deadlines: 2 s (no ack) and 5 s (acked, then silence).
    assert complete.get_max_value() == complete.get_highest_equivalent_value(5_000_000)
    assert complete.get_count_at_value(2_000_000) == per_kind
    assert result.cut_off == 0
    assert result.offered_rate == 100


async def test_retries_resend_until_success(autojump_clock: trio.testing.MockClock) -> None:
    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1, rate=50),)),
        timeouts=Timeouts(
            ack_timeout=2.0, timeout=5.0, retries=3, retries_delay=0.5,
            retry_result_list=("ERROR_PROCESSING",),
        ),
    )  # fmt: skip
    seen_ids: dict[str, int] = {}
    holder: list[AsyncDevice] = []

    def behaviour(index: int) -> str:
        # Every first attempt fails with a listed code; the retry (same id) succeeds.
        seen = holder[0].seen if holder else []
        return "ok" if seen[index] in seen[:index] else "fail"

    metrics, _, device = await run_async(config, behaviour, partials=0, holder=holder)
    for op_id in device.seen:
        seen_ids[op_id] = seen_ids.get(op_id, 0) + 1
    c = metrics.counters
    assert c["ops.sent"] == 50
    assert len(device.seen) == 100
    assert set(seen_ids.values()) == {2}
    assert c["ops.retries"] == 50
    assert c["ops.succeeded"] == c["ops.completed"] == 50
    assert c.get("result.ERROR_PROCESSING", 0) == 0
    complete = metrics.phase("complete").intended.merged()
    # fail at +0.1, re-sent at +0.6, final at +0.7: from the first intended time.
    assert complete.get_value_at_percentile(0.1) == complete.get_highest_equivalent_value(700_000)
    assert complete.get_max_value() == complete.get_highest_equivalent_value(700_000)
    assert_accounted(metrics)


@pytest.mark.parametrize("late_status", [201, 500])
async def test_an_earlier_attempts_late_answer_does_not_move_the_retry(
    autojump_clock: trio.testing.MockClock, late_status: int
) -> None:
    """The device POSTs a retryable final before its 201 is read, and that 201 (or a 500)
    arrives after the re-send: it belongs to the first attempt, so it neither acknowledges nor
    fails the retry (it used to raise ``illegal ack`` and end the whole run)."""
    config = PlatformConfig(
        targets=Targets(count=1),
        arrival=Arrival(stages=(Stage(duration=1, rate=1),)),
        timeouts=Timeouts(
            ack_timeout=2.0, timeout=5.0, retries=1, retries_delay=0.5,
            retry_result_list=("ERROR_PROCESSING",),
        ),
    )  # fmt: skip
    metrics = Metrics()
    infos: list[PlatformInfo] = []
    nurseries: list[trio.Nursery] = []
    seen: list[str] = []
    path = f"{DEFAULT_BASE_PATH}/dev-000000/operation/response".encode()

    async def post(final: bytes, after: float) -> None:
        await trio.sleep(after)
        infos[0].core.handle(b"POST", path, None, final, trio.current_time())

    async def device(
        origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        request = request_of(body)
        first = request["id"] not in seen
        seen.append(request["id"])
        code = "ERROR_PROCESSING" if first else "SUCCESSFUL"
        final = response_body(request["id"], request["name"], code)
        if first:  # the final first; the HTTP answer 0.6 s later, after the re-send at 0.5
            infos[0].core.handle(b"POST", path, None, final, trio.current_time())
            await trio.sleep(0.6)
            return FakeAnswer(late_status)
        await trio.sleep(0.2)  # acknowledged at 0.7, final at 0.8
        nurseries[0].start_soon(post, final, 0.1)
        return FakeAnswer(201)

    async with trio.open_nursery() as nursery:
        nurseries.append(nursery)

        async def platform(task_status: trio.TaskStatus[PlatformInfo]) -> None:
            await run_platform(config, metrics, transport=device, task_status=task_status)
            nursery.cancel_scope.cancel()

        infos.append(await nursery.start(platform))

    c = metrics.counters
    assert len(seen) == 2
    assert c["ops.retries"] == 1
    assert c["ops.completed"] == c["ops.succeeded"] == 1
    assert c.get("ops.errors", 0) == 0
    assert c["ops.abandoned_exchanges"] == 1
    assert c.get(f"http.status.{late_status}", 0) == 0
    assert_accounted(metrics)
    # acknowledged by the retry's own 201 at 0.7; completed at 0.8, from the first intended time
    ack = metrics.phase("ack").intended.merged()
    assert ack.get_max_value() == ack.get_highest_equivalent_value(700_000)
    complete = metrics.phase("complete").intended.merged()
    assert complete.get_max_value() == complete.get_highest_equivalent_value(800_000)


async def test_sleepy_devices_get_their_operations_when_they_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PlatformConfig(
        targets=Targets(count=2),
        device_choice="round-robin",
        sleepy_devices=frozenset({"dev-000000"}),
        arrival=Arrival(stages=(Stage(duration=2, rate=10),)),
        timeouts=Timeouts(ack_timeout=5, timeout=10),
    )
    metrics = Metrics()
    device = FreezingDevice(service=0.01)
    served: list[int] = []
    async with run_held(config, metrics, device) as held:  # its end stops the sleepy device too
        core = held.info.core
        pending = f"{DEFAULT_BASE_PATH}/dev-000000/operation/pending".encode()
        response = f"{DEFAULT_BASE_PATH}/dev-000000/operation/response".encode()

        async def sleepy() -> None:
            while True:
                await trio.sleep(1.0)  # wakes up every second
                status, body = core.handle(b"GET", pending, None, b"", trio.current_time())
                if status == 204:
                    served.append(0)
                    continue
                assert status == 200
                requests = [request_of(orjson.dumps(env)) for env in orjson.loads(body)]
                served.append(len(requests))
                for request in requests:
                    final = response_body(request["id"], request["name"], "SUCCESSFUL", [step("S")])
                    assert (
                        core.handle(b"POST", response, None, final, trio.current_time())[0] == 201
                    )

        held.nursery.start_soon(sleepy)
        held.info.begin_load()
    c = metrics.counters
    assert c["ops.sent"] == 20
    assert device.served == 10  # the awake device's half
    assert sum(served) == c["south.pending_served"] == 10
    assert c["ops.completed"] == 20
    assert served[0] >= 5  # what was queued during the first second, all at once
    assert_accounted(metrics)


async def test_closed_model_keeps_n_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    config = PlatformConfig(
        arrival=Arrival(model="closed", concurrency=5, stages=(Stage(duration=1, rate=1),)),
    )
    metrics = Metrics()
    device = FreezingDevice(service=0.01)
    result = await run_platform(config, metrics, transport=device)
    c = metrics.counters
    # Each of the 5 slots runs back to back, 10 ms per operation, for 1 s.
    assert c["ops.sent"] == 5 * 100
    assert c["ops.completed"] == 500
    assert result.peak_in_flight == 5
    assert result.offered_rate is None
    lateness = metrics.single("lateness").merged()
    assert lateness.get_max_value() == 0
    assert_accounted(metrics)


async def test_closed_model_one_per_device(autojump_clock: trio.testing.MockClock) -> None:
    config = PlatformConfig(
        targets=Targets(count=3),
        arrival=Arrival(model="closed", per_device=True, stages=(Stage(duration=0.5, rate=1),)),
    )
    metrics = Metrics()
    device = FreezingDevice(service=0.1)
    result = await run_platform(config, metrics, transport=device)
    assert metrics.counters["ops.sent"] == 3 * 5
    assert result.peak_in_flight == 3


async def test_in_flight_cap_counts_what_it_refuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=2, rate=100),)),
        max_in_flight=10,
        max_connections=1000,
    )
    metrics = Metrics()
    device = FreezingDevice(service=0.5)
    await run_platform(config, metrics, transport=device)
    c = metrics.counters
    # 100/s with 0.5 s each needs 50 in flight; 10 are allowed: 1 in 5 is sent.
    assert c["ops.sent"] + c["ops.rejected"] == 200
    assert c["ops.sent"] == 40
    assert c["ops.completed"] == 40
    assert_accounted(metrics)


async def test_grace_period_cuts_off_at_the_deadline_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1, rate=10),)),
        timeouts=Timeouts(ack_timeout=100.0, timeout=200.0),
        drain_grace=2.0,
    )
    metrics = Metrics()
    device = FreezingDevice(service=1000.0)  # never answers within the grace period
    start = trio.current_time()
    result = await run_platform(config, metrics, transport=device)
    assert result.duration_s == 1.0 + 2.0  # then the south API lingers (its own close only)
    assert trio.current_time() - start == 1.0 + 2.0 + config.south.linger
    assert result.cut_off == 10
    c = metrics.counters
    assert c["ops.timed_out"] == 10
    complete = metrics.phase("complete").intended.merged()
    assert complete.get_max_value() == complete.get_highest_equivalent_value(100_000_000)
    assert_accounted(metrics)


async def test_breakdown_by_operation_name(autojump_clock: trio.testing.MockClock) -> None:
    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1, rate=100),)),
        mix=(MixEntry(name="REBOOT_EQUIPMENT", weight=1), MixEntry(name="REFRESH_INFO", weight=1)),
        breakdown_by_name=True,
        seed=3,
    )
    metrics = Metrics()
    await run_platform(config, metrics, transport=FreezingDevice(service=0.002))
    reboot = metrics.phase("complete.REBOOT_EQUIPMENT").intended.count
    refresh = metrics.phase("complete.REFRESH_INFO").intended.count
    assert reboot + refresh == 100
    assert 30 < reboot < 70
