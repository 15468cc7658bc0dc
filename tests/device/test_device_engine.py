"""Behaviour of the operation engine under the mock clock: flows, delays, steps, results,
exclusivity, per-device concurrency and every fault, with exact virtual times."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
import trio
from device_helpers import engine_rig, fleet_config, request

from loadgen.device.config import Delay, Delays, Faults, Profile
from loadgen.http.server import Action, Reply
from loadgen.protocol import decode_response, update_parameters

FIXED = Delays(
    sync=Delay.fixed(0.5), ack=Delay.fixed(0.1), step=Delay.fixed(1.0), final=Delay.fixed(2.0)
)


def sync_body(reply: Any) -> dict[str, Any]:
    return orjson.loads(reply.body)["operation"]["response"]  # type: ignore[no-any-return]


async def test_sync_answers_after_the_sync_delay(autojump_clock: trio.testing.MockClock) -> None:
    async with engine_rig(fleet_config(Profile(delays=FIXED))) as rig:
        req = request("REBOOT_EQUIPMENT")
        reply = await rig.engine.handle(rig.device(), req)
        assert trio.current_time() == 0.5
        assert reply.status == 201
        response = decode_response(reply.body)  # the codec accepts it
        assert (response.id, response.device_id, response.name) == (req.id, "dev-000000", req.name)
        assert response.result_code == "SUCCESSFUL"
        assert [(s.name, s.result) for s in response.steps] == [("REBOOT_EQUIPMENT", "SUCCESSFUL")]
        assert rig.counters["device.ops.sync"] == 1
        assert rig.counters["device.result.SUCCESSFUL"] == 1
        assert rig.platform.posts == []


@pytest.mark.parametrize(
    ("flow", "mode", "expected"),
    [
        # (virtual time, partial?, step names) of each POST; ack at 0.1, steps 1 s, final 2 s.
        ("async", "together", [(0.1 + 7.0 + 2.0, False, "B D D D BI EI EU")]),
        (
            "async-multi",
            "together",
            [(0.1 + 7.0, True, "B D D D BI EI EU"), (0.1 + 7.0 + 2.0, False, "")],
        ),
        (
            "async-multi",
            "partials",
            [
                (1.1, True, "B"),
                (2.1, True, "D"),
                (3.1, True, "D"),
                (4.1, True, "D"),
                (5.1, True, "BI"),
                (6.1, True, "EI"),
                (7.1, True, "EU"),
                (9.1, False, ""),
            ],
        ),
    ],
)
async def test_async_flows_post_steps_in_order(
    autojump_clock: trio.testing.MockClock,
    flow: str,
    mode: str,
    expected: list[tuple[float, bool, str]],
) -> None:
    short = {
        "BEGINUPDATE": "B",
        "DOWNLOADFILE": "D",
        "BEGININSTALL": "BI",
        "ENDINSTALL": "EI",
        "ENDUPDATE": "EU",
    }
    profile = Profile(flow=flow, steps_mode=mode, delays=FIXED)  # type: ignore[arg-type]
    async with engine_rig(fleet_config(profile)) as rig:
        req = request("UPDATE", parameters=update_parameters(3))
        reply = await rig.engine.handle(rig.device(1), req)
        assert (reply.status, reply.body, trio.current_time()) == (201, b"", 0.1)
    got = []
    for post in rig.platform.posts:
        response = decode_response(post.body)
        assert (response.id, response.device_id) == (req.id, "dev-000001")
        assert post.device_id == "dev-000001"
        got.append(
            (
                round(post.at, 6),
                not response.is_final,
                " ".join(short[s.name] for s in response.steps),
            )
        )
    assert got == expected
    # resultCode only on the last message
    codes = [decode_response(p.body).result_code for p in rig.platform.posts]
    assert codes[-1] == "SUCCESSFUL"
    assert all(code is None for code in codes[:-1])


async def test_explicit_steps_and_variables() -> None:
    profile = Profile(steps=("ONE", "TWO"))
    async with engine_rig(fleet_config(profile)) as rig:
        reply = await rig.engine.handle(rig.device(), request("EQUIPMENT_DIAGNOSTIC"))
        assert [s["name"] for s in sync_body(reply)["steps"]] == ["ONE", "TWO"]
    async with engine_rig(fleet_config()) as rig:
        reply = await rig.engine.handle(rig.device(), request("GET_DEVICE_PARAMETERS"))
        [step] = sync_body(reply)["steps"]
        assert {v["variableName"] for v in step["response"]} == {"id", "model", "firmwareVersion"}


async def test_result_mix_proportions_are_seeded() -> None:
    mix = {"SUCCESSFUL": 0.98, "ERROR_PROCESSING": 0.01, "NOT_SUPPORTED": 0.01}
    runs = []
    for _ in range(2):
        async with engine_rig(fleet_config(Profile(results=mix), seed=7)) as rig:  # type: ignore[arg-type]
            codes = [
                sync_body(await rig.engine.handle(rig.device(), request("UPDATE")))["resultCode"]
                for _ in range(5000)
            ]
        runs.append(codes)
    assert runs[0] == runs[1]  # same seed, same order: same answers
    counts = Counter(runs[0])
    assert 4850 <= counts["SUCCESSFUL"] <= 4950
    assert 25 <= counts["ERROR_PROCESSING"] <= 75
    assert 25 <= counts["NOT_SUPPORTED"] <= 75


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SUCCESSFUL", None),
        ("NOT_SUPPORTED", []),
        ("ERROR_IN_PARAM", ["ERROR", "NOT_EXECUTED", "NOT_EXECUTED", "NOT_EXECUTED"]),
    ],
)
async def test_step_results_match_the_result(code: str, expected: list[str] | None) -> None:
    profile = Profile(results={code: 1.0})  # type: ignore[dict-item]
    async with engine_rig(fleet_config(profile)) as rig:
        body = sync_body(
            await rig.engine.handle(
                rig.device(), request("UPDATE", parameters=update_parameters(0))
            )
        )
    assert body["resultCode"] == code
    results = [s["result"] for s in body["steps"]]
    assert results == (["SUCCESSFUL"] * 4 if expected is None else expected)


async def test_error_processing_fails_one_step_then_not_executed() -> None:
    profile = Profile(results={"ERROR_PROCESSING": 1.0})  # type: ignore[dict-item]
    async with engine_rig(fleet_config(profile, seed=3)) as rig:
        for _ in range(20):
            reply = await rig.engine.handle(
                rig.device(), request("UPDATE", parameters=update_parameters(2))
            )
            results = [s["result"] for s in sync_body(reply)["steps"]]
            failing = results.index("ERROR")
            assert results[:failing] == ["SUCCESSFUL"] * failing
            assert results[failing + 1 :] == ["NOT_EXECUTED"] * (len(results) - failing - 1)


async def test_unknown_name_is_not_supported_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with engine_rig(fleet_config(Profile(delays=FIXED))) as rig:
        body = sync_body(await rig.engine.handle(rig.device(), request("FORMAT_DISK")))
        assert trio.current_time() == 0
        assert (body["resultCode"], body["steps"]) == ("NOT_SUPPORTED", [])


async def test_second_reboot_is_already_in_progress(autojump_clock: trio.testing.MockClock) -> None:
    profile = Profile(flow="async", delays=FIXED, concurrency=4)
    async with engine_rig(fleet_config(profile)) as rig:
        first, second, other = request("REBOOT_EQUIPMENT"), request("REBOOT_EQUIPMENT"), request()
        await rig.engine.handle(rig.device(), first)
        await rig.engine.handle(rig.device(), second)
        await rig.engine.handle(rig.device(1), other)  # another device is not affected
        assert rig.device().exclusive == ("REBOOT_EQUIPMENT",)
    assert rig.platform.responses(second.id)[0]["resultCode"] == "ALREADY_IN_PROGRESS"
    assert rig.platform.responses(first.id)[-1]["resultCode"] == "SUCCESSFUL"
    assert rig.platform.responses(other.id)[-1]["resultCode"] == "SUCCESSFUL"
    assert rig.device().idle


async def test_busy_device_queues_in_order(autojump_clock: trio.testing.MockClock) -> None:
    profile = Profile(delays=Delays(sync=Delay.fixed(1.0)))
    async with engine_rig(fleet_config(profile)) as rig:
        done: list[tuple[str, float]] = []

        async def call(name: str) -> None:
            reply = await rig.engine.handle(rig.device(), request(name))
            done.append((sync_body(reply)["name"], trio.current_time()))

        async with trio.open_nursery() as nursery:
            for name in ("EQUIPMENT_DIAGNOSTIC", "REFRESH_INFO", "SET_CLOCK_EQUIPMENT"):
                nursery.start_soon(call, name)
                await trio.sleep(0.01)
            await trio.sleep(0.1)
            assert rig.engine.in_flight == 3
        assert done == [
            ("EQUIPMENT_DIAGNOSTIC", 1.0),
            ("REFRESH_INFO", 2.0),
            ("SET_CLOCK_EQUIPMENT", 3.0),
        ]
        assert rig.counters["device.busy.queued"] == 2
        assert rig.device().idle


async def test_busy_device_rejects(autojump_clock: trio.testing.MockClock) -> None:
    profile = Profile(delays=Delays(sync=Delay.fixed(1.0)), concurrency=2, when_busy="reject")
    async with engine_rig(fleet_config(profile)) as rig:
        bodies: list[dict[str, Any]] = []

        async def call() -> None:
            bodies.append(sync_body(await rig.engine.handle(rig.device(), request("REFRESH_INFO"))))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        codes = sorted(b["resultCode"] for b in bodies)
        assert codes == ["ERROR_PROCESSING", "SUCCESSFUL", "SUCCESSFUL"]
        assert rig.counters["device.busy.rejected"] == 1


async def test_cancelled_waiter_leaves_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    profile = Profile(delays=Delays(sync=Delay.fixed(1.0)))
    async with engine_rig(fleet_config(profile)) as rig:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rig.engine.handle, rig.device(), request("REFRESH_INFO"))
            await trio.sleep(0.1)
            with trio.move_on_after(0.2):
                await rig.engine.handle(rig.device(), request("REFRESH_INFO"))
            assert rig.device().waiting is None
        assert rig.device().idle
        assert rig.engine.in_flight == 0


def _faulty(name: str, flow: str = "sync") -> Any:
    faults = Faults(**{name: 1.0}, drip_bytes=5, drip_interval=0.01)
    return fleet_config(Profile(flow=flow), faults=faults)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fault", "status", "action"),
    [
        ("close", None, Action.CLOSE),
        ("hang", None, Action.HANG),
        ("error_500", 500, Action.SEND),
        ("drip", 201, Action.DRIP),
    ],
)
async def test_http_faults(fault: str, status: int | None, action: Action) -> None:
    for flow in ("sync", "async"):
        async with engine_rig(_faulty(fault, flow)) as rig:
            reply = await rig.engine.handle(rig.device(), request("REFRESH_INFO"))
            assert reply.action is action
            if status is not None:
                assert reply.status == status
            if action is Action.DRIP:
                assert (reply.drip_bytes, reply.drip_interval) == (5, 0.01)
            assert rig.counters[f"device.fault.{fault}"] == 1
        runs = fault == "drip"  # the others answer instead of running the operation
        assert bool(rig.platform.posts) == (runs and flow == "async")


async def test_malformed_and_wrong_id_sync() -> None:
    async with engine_rig(_faulty("malformed_json")) as rig:
        reply = await rig.engine.handle(rig.device(), request())
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(reply.body)
    async with engine_rig(_faulty("wrong_id")) as rig:
        first, second = request(), request()
        await rig.engine.handle(rig.device(), first)
        body = sync_body(await rig.engine.handle(rig.device(1), second))
        assert body["id"] == first.id  # another operation's id
        assert rig.counters["device.fault.wrong_id"] == 2


@pytest.mark.parametrize(
    ("fault", "finals", "partials_after"),
    [
        ("no_final", 0, 0),
        ("duplicate_final", 2, 0),
        ("partial_after_final", 1, 1),
        ("malformed_json", 0, 0),  # the final is there but not JSON
        ("wrong_id", 1, 0),
    ],
)
async def test_async_faults(fault: str, finals: int, partials_after: int) -> None:
    async with engine_rig(_faulty(fault, "async-multi")) as rig:
        req = request("REBOOT_EQUIPMENT")
        reply = await rig.engine.handle(rig.device(), req)
        assert reply.status == 201
    posts = rig.platform.responses()
    final_at = [i for i, r in enumerate(posts) if "resultCode" in r]
    assert len(final_at) == finals
    if finals:
        assert len(posts) - 1 - final_at[-1] == partials_after
    ids = {r["id"] for r in posts}
    assert ids == ({req.id} if fault != "wrong_id" else ids - {req.id})
    if fault == "malformed_json":
        assert len(rig.platform.posts) == 2  # the partial and the cut-off final
    assert rig.counters[f"device.fault.{fault}"] == 1


async def test_fault_probabilities_are_counted_with_a_seed() -> None:
    faults = Faults(error_500=0.1, close=0.05)
    async with engine_rig(fleet_config(faults=faults, seed=11)) as rig:
        for _ in range(2000):
            await rig.engine.handle(rig.device(), request("REFRESH_INFO"))
    assert 150 <= rig.counters["device.fault.error_500"] <= 250
    assert 60 <= rig.counters["device.fault.close"] <= 140


async def test_collect_after_refresh(autojump_clock: trio.testing.MockClock) -> None:
    from loadgen.device.config import Sleepy
    from loadgen.protocol import decode_iot

    async with engine_rig(fleet_config(sleepy=Sleepy(collect_after_refresh=True))) as rig:
        await rig.engine.handle(rig.device(2), request("REFRESH_INFO"))
    [post] = rig.platform.posts
    assert (post.kind, post.device_id) == ("collect", "dev-000002")
    decode_iot(post.body)


async def test_pending_operation_posts_everything(autojump_clock: trio.testing.MockClock) -> None:
    async with engine_rig(fleet_config(Profile(delays=FIXED))) as rig:
        req = request("REBOOT_EQUIPMENT")
        rig.engine.start_pending(rig.device(), req)
    [post] = rig.platform.posts
    assert post.at == 0.5 + 2.0  # the sync delay, then the final delay
    [response] = rig.platform.responses()
    assert (response["id"], response["resultCode"]) == (req.id, "SUCCESSFUL")
    assert rig.counters["device.ops.pending"] == 1


async def test_lognormal_delays_follow_median_and_p99() -> None:
    import random

    delay = Delay.lognormal(0.1, 1.0)
    rng = random.Random(5)
    draws = sorted(delay.sample(rng) for _ in range(20000))
    assert draws[10000] == pytest.approx(0.1, rel=0.05)
    assert draws[19800] == pytest.approx(1.0, rel=0.15)


async def test_operations_cut_by_a_fleet_stop_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An async operation whose final is never sent because the fleet stopped (drain timeout,
    a second Ctrl-C) is counted, not silently dropped."""
    slow = Profile(flow="async", delays=Delays(final=Delay(kind="fixed", value=100.0)))
    with trio.move_on_after(5):
        async with engine_rig(fleet_config(slow)) as rig:
            for index in (1, 2, 3):
                reply = await rig.engine.handle(rig.device(index), request("REFRESH_INFO"))
                assert reply.status == 201
            await trio.sleep(1)
            assert rig.engine.in_flight == 3
    assert rig.platform.posts == []
    assert rig.metrics.counters["device.ops.cancelled"] == 3
    assert rig.engine.in_flight == 0


# --- handle_now: the server mux's face (decisions at arrival, whatever runs after) ---------


async def test_a_busy_device_refuses_at_arrival_not_when_the_wait_would_begin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The mux answers a batch of connections before any hand-off task runs: the refusal must
    be decided when the request arrives (an answer at once), even if the slot frees before."""
    profile = Profile(delays=Delays(sync=Delay.fixed(1.0)), concurrency=1, when_busy="reject")
    async with engine_rig(fleet_config(profile)) as rig:
        first = rig.engine.handle_now(rig.device(), request("REFRESH_INFO"))
        second = rig.engine.handle_now(rig.device(), request("REFRESH_INFO"))
        assert not isinstance(first, Reply)  # it waits its sync delay
        assert isinstance(second, Reply)  # refused now, without a task
        assert sync_body(second)["resultCode"] == "ERROR_PROCESSING"
        assert rig.counters["device.busy.rejected"] == 1
        assert sync_body(await first)["resultCode"] == "SUCCESSFUL"  # type: ignore[misc]
        assert rig.device().idle


async def test_a_queued_request_keeps_its_place_before_its_task_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """FIFO from arrival: a request lined up behind a busy device gets the slot before one that
    arrives after the slot is given back, though its own coroutine has not started yet."""
    profile = Profile(delays=Delays(sync=Delay.fixed(1.0)), concurrency=1, when_busy="queue")
    async with engine_rig(fleet_config(profile)) as rig:
        device = rig.device()
        first = rig.engine.handle_now(device, request("REFRESH_INFO"))
        second = rig.engine.handle_now(device, request("REFRESH_INFO"))
        assert not isinstance(first, Reply)
        assert not isinstance(second, Reply)
        await first  # type: ignore[misc]
        third = rig.engine.handle_now(device, request("REFRESH_INFO"))
        assert not isinstance(third, Reply)  # behind the second, not ahead of it
        done: list[str] = []

        async def finish(name: str, outcome: Any) -> None:
            await outcome
            done.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish, "third", third)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(finish, "second", second)
        assert done == ["second", "third"]
        assert rig.counters["device.busy.queued"] == 2
        assert device.idle


async def test_a_free_device_draws_its_sync_delay_at_arrival(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The random sequence of a seed follows arrival order, not when the mux's hand-off
    tasks happen to run."""
    profile = Profile(delays=Delays(sync=Delay.uniform(0.1, 0.2)))
    async with engine_rig(fleet_config(profile)) as rig:
        before = rig.engine.rng.getstate()
        outcome = rig.engine.handle_now(rig.device(), request("REFRESH_INFO"))
        drawn = rig.engine.rng.getstate()
        assert drawn != before
        await outcome  # type: ignore[misc]
