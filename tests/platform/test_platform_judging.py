"""The platform judges what devices send back: a sync answer or an async message whose id, name
or deviceId does not match its operation (or the device it was sent to) is counted
(``device.wrong_id`` / ``wrong_name`` / ``wrong_device``) and, with ``strict``, ends the
operation as an error. First the rule as a table, then the south API driven with floats, then
whole runs against hand-made answers (mock clock) and the virtual fleet's ``wrong_id`` fault."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomli_w
import trio
import trio.testing
from platform_fakes import FakeAnswer, device_of, request_of

from loadgen.campaign.runner import run_sides
from loadgen.campaign.scenario import load_scenario
from loadgen.http.client import Origin
from loadgen.metrics.registry import Metrics
from loadgen.platform import (
    Arrival,
    MixEntry,
    PlatformConfig,
    Stage,
    Targets,
    Timeouts,
    run_platform,
)
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.platform.measured import MeasuredTable
from loadgen.platform.south import SouthCore, misfits
from loadgen.protocol import DEFAULT_BASE_PATH

ID, NAME = "op-1", "UPDATE"

# (case, expected device, id, name, deviceId, device in the URL, the counters earned)
RULE: list[tuple[str, str | None, object, object, object, str | None, tuple[str, ...]]]
RULE = [
    ("all match", "dev-1", ID, NAME, "dev-1", None, ()),
    ("no deviceId", "dev-1", ID, NAME, None, None, ()),
    ("another id", "dev-1", "op-0", NAME, "dev-1", None, ("device.wrong_id",)),
    ("no id", "dev-1", None, NAME, None, None, ("device.wrong_id",)),
    ("numeric id", "dev-1", 1, NAME, None, None, ("device.wrong_id",)),
    ("numeric deviceId", "dev-1", ID, NAME, 1, None, ("device.wrong_device",)),
    ("another name", "dev-1", ID, "REBOOT_EQUIPMENT", None, None, ("device.wrong_name",)),
    ("no name", "dev-1", ID, None, None, None, ("device.wrong_name",)),
    ("another deviceId", "dev-1", ID, NAME, "dev-2", None, ("device.wrong_device",)),
    ("URL of another device", "dev-1", ID, NAME, None, "dev-2", ("device.wrong_device",)),
    ("URL right, body wrong", "dev-1", ID, NAME, "dev-2", "dev-1", ("device.wrong_device",)),
    ("body and URL agree, not the target", "dev-1", ID, NAME, "dev-2", "dev-2",
     ("device.wrong_device",)),
    ("target unknown: body vs URL", None, ID, NAME, "dev-2", "dev-1", ("device.wrong_device",)),
    ("target unknown, they agree", None, ID, NAME, "dev-1", "dev-1", ()),
    ("everything wrong", "dev-1", "x", "y", "z", None,
     ("device.wrong_id", "device.wrong_name", "device.wrong_device")),
]  # fmt: skip


def new_op(table: InflightTable, op_id: str = ID, device: int = 0) -> Operation:
    op = Operation(op_id, device, NAME, 0.0, Timeouts(), b"{}")
    table.open(op)
    table.written(op, 0.0)
    return op


@pytest.mark.parametrize(
    ("what", "device", "id_", "name", "device_id", "path_device", "wrong"),
    RULE,
    ids=[case[0] for case in RULE],
)
def test_the_rule(
    what: str,
    device: str | None,
    id_: object,
    name: object,
    device_id: object,
    path_device: str | None,
    wrong: tuple[str, ...],
) -> None:
    op = new_op(InflightTable(Metrics()))
    assert misfits(op, device, id_, name, device_id, path_device) == wrong


# --- async messages at the south API (pure, times are floats) --------------------------------


def message(op_id: str, name: str, device_id: str | None, code: str | None = "SUCCESSFUL") -> bytes:
    response: dict[str, Any] = {"id": op_id, "timestamp": 1, "name": name}
    if device_id is not None:
        response["deviceId"] = device_id
    if code is not None:
        response["resultCode"] = code
    return orjson.dumps({"operation": {"response": response}})


def path_of(device_id: str) -> bytes:
    return f"{DEFAULT_BASE_PATH}/{device_id}/operation/response".encode()


# (case, URL device, body name, body deviceId, counter or None)
ASYNC: list[tuple[str, str, str, str | None, str | None]] = [
    ("matches", "dev-1", NAME, "dev-1", None),
    ("matches, no deviceId", "dev-1", NAME, None, None),
    ("wrong name", "dev-1", "REFRESH_INFO", "dev-1", "device.wrong_name"),
    ("deviceId of another device", "dev-1", NAME, "dev-2", "device.wrong_device"),
    ("POSTed by another device", "dev-2", NAME, None, "device.wrong_device"),
]


@pytest.mark.parametrize("strict", [False, True], ids=["counted", "strict"])
@pytest.mark.parametrize(
    ("what", "url_device", "name", "device_id", "counter"), ASYNC, ids=[c[0] for c in ASYNC]
)
def test_async_messages_are_judged(
    what: str, url_device: str, name: str, device_id: str | None, counter: str | None, strict: bool
) -> None:
    metrics = Metrics()
    table = InflightTable(metrics, strict=strict)
    core = SouthCore(table, metrics)
    core.device_ids = ["dev-1", "dev-2"]
    op = new_op(table)  # sent to dev-1
    table.ack(op, 0.01)
    body = message(ID, name, device_id)
    assert core.handle(b"POST", path_of(url_device), None, body, 0.2) == (201, b"")
    c = metrics.counters
    judged = {k: v for k, v in c.items() if k.startswith("device.wrong")}
    assert judged == ({} if counter is None else {counter: 1})
    if counter is not None and strict:
        assert op.state is State.ERROR
        assert (c["ops.errors"], c["ops.strict_errors"], c["ops.completed"]) == (1, 1, 0)
        # what the device says next about it is late, as for any operation that has ended
        assert core.handle(b"POST", path_of("dev-1"), None, message(ID, NAME, None), 0.3)[0] == 201
        assert c["south.late"] == 1
    else:
        assert op.state is State.COMPLETED
        assert (c["ops.completed"], c["ops.errors"]) == (1, 0)
    assert c["ops.sent"] == c["ops.completed"] + c["ops.timed_out"] + c["ops.errors"]


def test_a_message_with_another_id_is_an_orphan_not_a_judgement() -> None:
    """The id finds the operation: a message with an id never sent cannot be told from a stray
    one, so it is an orphan (the operation it was meant for times out)."""
    metrics = Metrics()
    table = InflightTable(metrics, strict=True)
    core = SouthCore(table, metrics)
    op = new_op(table)
    table.ack(op, 0.01)
    assert core.handle(b"POST", path_of("dev-1"), None, message("op-9", NAME, None), 0.2)[0] == 201
    assert metrics.counters["south.orphan"] == 1
    assert not any(k.startswith("device.wrong") for k in metrics.counters)
    assert op.state is State.ACKED


def test_a_partial_is_judged_too_and_strict_ends_it_there() -> None:
    metrics = Metrics()
    table = InflightTable(metrics, strict=True)
    core = SouthCore(table, metrics)
    op = new_op(table)
    table.ack(op, 0.01)
    partial = message(ID, NAME, None, code=None)
    assert core.handle(b"POST", path_of("dev-1"), None, partial, 0.1)[0] == 201
    assert op.state is State.PARTIAL
    wrong = message(ID, "REBOOT_EQUIPMENT", None, code=None)
    assert core.handle(b"POST", path_of("dev-1"), None, wrong, 0.2)[0] == 201
    assert op.state is State.ERROR
    assert metrics.counters["device.wrong_name"] == 1


# --- sync answers in whole runs (mock clock) -------------------------------------------------


@dataclass
class Misanswering:
    """A sync device; request ``i`` (0-based) is answered as ``kinds[i % len(kinds)]`` says:
    ``ok``, ``id`` (another id), ``name`` (another name), ``device`` (another deviceId),
    ``bare`` (no id, no name, no deviceId)."""

    kinds: tuple[str, ...]
    served: int = 0

    async def __call__(
        self, origin: Origin, target: bytes, body: bytes, *, deadline: float = math.inf
    ) -> FakeAnswer:
        request = request_of(body)
        kind = self.kinds[self.served % len(self.kinds)]
        self.served += 1
        await trio.sleep(0.01)
        response: dict[str, Any] = {
            "id": request["id"] if kind != "id" else "not-" + request["id"],
            "timestamp": 1,
            "deviceId": device_of(target) if kind != "device" else "somebody-else",
            "name": request["name"] if kind != "name" else "SOMETHING_ELSE",
            "resultCode": "SUCCESSFUL",
            "steps": [],
        }
        if kind == "bare":
            for key in ("id", "name", "deviceId"):
                del response[key]
        return FakeAnswer(201, orjson.dumps({"operation": {"response": response}}))


KINDS = ("ok", "id", "ok", "name", "device", "ok", "bare", "ok", "ok", "ok")


def sync_config(strict: bool) -> PlatformConfig:
    return PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1.0, rate=20.0),)),
        targets=Targets(count=3),
        mix=(MixEntry(name="REBOOT_EQUIPMENT"),),
        strict=strict,
    )


async def test_sync_answers_are_judged_and_counted(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    result = await run_platform(sync_config(False), metrics, transport=Misanswering(KINDS))
    c = metrics.counters
    # 20 operations, the 10 kinds twice; "bare" is both a wrong id and a wrong name
    assert (c["device.wrong_id"], c["device.wrong_name"], c["device.wrong_device"]) == (4, 4, 2)
    assert (c["ops.completed"], c["ops.errors"], c["ops.sent"]) == (20, 0, 20)
    assert result.counters == dict(c)


async def test_strict_ends_the_misfits_as_errors(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    start = trio.current_time()
    result = await run_platform(sync_config(True), metrics, transport=Misanswering(KINDS))
    c = metrics.counters
    assert (c["device.wrong_id"], c["device.wrong_name"], c["device.wrong_device"]) == (4, 4, 2)
    # ok answers complete; the 8 misfits (4 kinds twice) end as errors, with no latency recorded
    assert (c["ops.completed"], c["ops.errors"], c["ops.strict_errors"]) == (12, 8, 8)
    assert c["ops.sent"] == c["ops.completed"] + c["ops.timed_out"] + c["ops.errors"]
    assert metrics.phase("complete").intended.count == 12
    assert result.achieved_rate == pytest.approx(12.0)
    # every answer was received: nothing is owed, so the south API does not linger
    assert trio.current_time() - start == 1.0  # the load window; the last answer came at 0.96


async def test_strict_is_off_by_default_and_validated() -> None:
    assert PlatformConfig().strict is False
    with pytest.raises(Exception, match="strict: expected true or false"):
        PlatformConfig(strict="yes")  # type: ignore[arg-type]


# --- the virtual fleet's wrong_id fault (real sockets) ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["counted", "strict"])
async def test_the_fleets_wrong_id_fault_is_caught(tmp_path: Path, strict: bool) -> None:
    """Real time: both sides in one process over loopback, as ``loadgen run`` runs them. Every
    sync answer carries another operation's id (the fault at probability 1)."""
    document = {
        "campaign": {"name": "judge", "sides": "both"},
        "devices": {"count": 4, "http_port": 0, "default": {"flow": "sync"},
                    "faults": {"wrong_id": 1.0}},
        "platform": {"strict": strict, "arrival": {"stages": [{"duration": "0.5s", "rate": 20}]}},
    }  # fmt: skip
    path = tmp_path / "judge.toml"
    path.write_text(tomli_w.dumps(document))
    metrics = Metrics()
    with trio.fail_after(30):
        await run_sides(load_scenario(path).scenario, metrics)
    c = metrics.counters
    assert c["ops.sent"] == 10
    assert c["device.fault.wrong_id"] == c["device.wrong_id"] == 10
    if strict:
        assert (c["ops.errors"], c["ops.completed"]) == (10, 0)
    else:
        assert (c["ops.errors"], c["ops.completed"]) == (0, 10)


def test_a_warm_up_operation_is_judged_into_the_warm_up() -> None:
    """A capacity step's warm-up is run but not counted: its judgement (and under strict, its
    error) lands with the rest of that operation, in the warm-up's metrics."""
    metrics = Metrics()
    table = MeasuredTable(metrics, measure_from=1.0, strict=True)
    warm = new_op(table, "warm")  # intended at 0.0
    measured = Operation("hold", 0, NAME, 1.5, Timeouts(), b"{}")
    table.open(measured)
    assert table.misfit(warm, ("device.wrong_name",), 0.5)
    assert table.misfit(measured, ("device.wrong_device",), 1.6)
    assert dict(table.warmup.counters) == {
        "ops.issued": 1, "ops.sent": 1, "device.wrong_name": 1, "ops.strict_errors": 1,
        "ops.errors": 1,
    }  # fmt: skip
    assert (metrics.counters["device.wrong_device"], metrics.counters["ops.errors"]) == (1, 1)
    assert "device.wrong_name" not in metrics.counters
