"""The south API: status codes and counting, first as a pure function driven with floats, then
through the fast HTTP server of a running platform, then as an ASGI app under hypercorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
import trio
from platform_fakes import FreezingDevice, response_body, step

from loadgen.http.parser import DEFAULT_MAX_BODY, DEFAULT_MAX_HEAD
from loadgen.metrics.registry import Metrics
from loadgen.platform import PlatformConfig, PlatformInfo, SouthAPI, run_platform
from loadgen.platform.asgi import serve_asgi, south_asgi_app
from loadgen.platform.config import Timeouts
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.platform.south import SouthCore
from loadgen.protocol import DEFAULT_BASE_PATH, decode_pending

BASE = DEFAULT_BASE_PATH
RESPONSE = f"{BASE}/dev-1/operation/response".encode()
PENDING = f"{BASE}/dev-1/operation/pending".encode()
IOT = f"{BASE}/dev-1/collect/iot".encode()
IOT_BODY = orjson.dumps(
    {"version": "1.0.0", "datastreams": [{"id": "temperature", "datapoints": [{"value": 21.5}]}]}
)


def make_core(api_key: str | None = None) -> tuple[SouthCore, InflightTable, Metrics]:
    metrics = Metrics()
    table = InflightTable(metrics)
    return SouthCore(table, metrics, api_key=api_key), table, metrics


def new_op(table: InflightTable, op_id: str = "op-1") -> Operation:
    op = Operation(
        op_id, device=0, name="UPDATE", t_intended=0.0, timeouts=Timeouts(),
        body=b'{"operation":{"request":{"id":"%s","timestamp":1,"name":"UPDATE","parameters":{}}}}'
        % op_id.encode(),
    )  # fmt: skip
    table.open(op)
    table.written(op, 0.0)
    return op


def test_responses_partial_final_duplicate_orphan_late() -> None:
    core, table, metrics = make_core()
    op = new_op(table)
    table.ack(op, 0.01)
    partial_body = response_body("op-1", "UPDATE", None, [step("BEGINUPDATE")])
    final_body = response_body("op-1", "UPDATE", "SUCCESSFUL", [step("ENDUPDATE")])
    assert core.handle(b"POST", RESPONSE, None, partial_body, 0.1) == (201, b"")
    assert op.state is State.PARTIAL
    assert core.handle(b"POST", RESPONSE, None, final_body, 0.2) == (201, b"")
    assert op.state is State.COMPLETED
    assert len(op.steps or ()) == 2
    assert core.handle(b"POST", RESPONSE, None, final_body, 0.3) == (201, b"")
    assert core.handle(b"POST", RESPONSE, None, partial_body, 0.3) == (201, b"")
    orphan = response_body("nobody", "UPDATE", "SUCCESSFUL")
    assert core.handle(b"POST", RESPONSE, None, orphan, 0.4) == (201, b"")
    c = metrics.counters
    assert (c["south.duplicate"], c["south.late"], c["south.orphan"]) == (1, 1, 1)
    assert c["south.responses"] == 5
    assert c["ops.completed"] == 1


def envelope(**fields: Any) -> dict[str, Any]:
    """A final response for ``op-1``; ``fields`` replace (or with DROP remove) its keys."""
    response: dict[str, Any] = {
        "id": "op-1", "timestamp": 1, "name": "UPDATE", "resultCode": "SUCCESSFUL",
        "steps": [step("ENDUPDATE")],
    }  # fmt: skip
    response.update(fields)
    return {"operation": {"response": {k: v for k, v in response.items() if v is not DROP}}}


DROP: Any = object()
NULL_STEP = {**step("ENDUPDATE"), "timestamp": None}

# What real agents send that the protocol does not: 201, the operation completes, and each
# oddity is counted once per message (case, message, the south.odd.* counters).
ODD: list[tuple[str, Any, dict[str, int]]] = [
    ("clean", envelope(), {}),
    ("no timestamp", envelope(timestamp=DROP), {"south.odd.no_timestamp": 1}),
    ("null timestamp", envelope(timestamp=None), {"south.odd.no_timestamp": 1}),
    ("step null timestamp", envelope(steps=[NULL_STEP, NULL_STEP]),
     {"south.odd.step_no_timestamp": 1}),
    ("unknown fields", {**envelope(agent="x"), "source": 1}, {"south.odd.unknown_field": 1}),
    ("all three", envelope(timestamp=DROP, steps=[{**NULL_STEP, "progress": 1}]),
     {"south.odd.no_timestamp": 1, "south.odd.step_no_timestamp": 1,
      "south.odd.unknown_field": 1}),
]  # fmt: skip


@pytest.mark.parametrize(("what", "message", "odd"), ODD, ids=[case[0] for case in ODD])
def test_oddities_are_accepted_and_counted(what: str, message: Any, odd: dict[str, int]) -> None:
    core, table, metrics = make_core()
    op = new_op(table)
    table.ack(op, 0.01)
    assert core.handle(b"POST", RESPONSE, None, orjson.dumps(message), 0.2) == (201, b"")
    assert op.state is State.COMPLETED
    assert len(op.steps or ()) == len(message["operation"]["response"]["steps"])
    c = metrics.counters
    assert {k: v for k, v in c.items() if k.startswith("south.odd.")} == odd
    assert (c["south.responses"], c["ops.completed"], c["south.malformed"]) == (1, 1, 0)


# What the platform cannot use, or an invalid field: 400 naming the field, counted in total
# and per cause (case, body, cause, the field named), and the operation is untouched.
REFUSED: list[tuple[str, bytes, str, str]] = [
    ("not JSON", b"{not json", "not_json", "body: expected a JSON document"),
    ("an array", b"[]", "no_response", "body: expected an object"),
    ("no response", orjson.dumps({"operation": {"request": {}}}), "no_response",
     "operation.response: expected an object"),
    ("no id", orjson.dumps(envelope(id=DROP)), "no_id", "operation.response.id"),
    ("unknown resultCode", orjson.dumps(envelope(resultCode="GREAT")), "result_code",
     "operation.response.resultCode: expected one of SUCCESSFUL"),
    ("step without result", orjson.dumps(envelope(steps=[{"name": "s"}])), "invalid",
     "operation.response.steps[0].result"),
    ("timestamp a string", orjson.dumps(envelope(timestamp="1")), "invalid",
     "operation.response.timestamp"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "body", "cause", "field"), REFUSED, ids=[case[0] for case in REFUSED]
)
def test_unusable_responses_get_400_naming_the_field(
    what: str, body: bytes, cause: str, field: str
) -> None:
    core, table, metrics = make_core()
    op = new_op(table)
    table.ack(op, 0.01)
    status, text = core.handle(b"POST", RESPONSE, None, body, 0.0)
    assert status == 400
    assert field in text.decode()
    assert op.state is State.ACKED
    refusals = {k: v for k, v in metrics.counters.items() if k.startswith("south.malformed")}
    assert refusals == {"south.malformed": 1, f"south.malformed.{cause}": 1}
    assert metrics.counters["south.responses"] == 0


def test_pending_queue() -> None:
    core, table, metrics = make_core()
    assert core.handle(b"GET", PENDING, None, b"", 0.0) == (204, b"")
    first, second = new_op(table, "op-1"), new_op(table, "op-2")
    core.pending.put("dev-1", first)
    core.pending.put("dev-1", second)
    status, body = core.handle(b"GET", PENDING, None, b"", 0.5)
    assert status == 200
    assert [r.id for r in decode_pending(body)] == ["op-1", "op-2"]
    assert first.state is State.ACKED
    assert first.t_ack == 0.5
    assert core.handle(b"GET", PENDING, None, b"", 0.6) == (204, b"")
    assert metrics.counters["south.pending_served"] == 2
    assert metrics.counters["south.pending_empty"] == 2


def test_pending_skips_operations_that_ended_while_queued() -> None:
    core, table, _ = make_core()
    op = new_op(table)
    core.pending.put("dev-1", op)
    table.expire(100.0)
    assert core.handle(b"GET", PENDING, None, b"", 101.0) == (204, b"")


def test_collect_iot() -> None:
    core, _, metrics = make_core()
    assert core.handle(b"POST", IOT, None, IOT_BODY, 0.0) == (201, b"")
    status, text = core.handle(b"POST", IOT, None, b'{"datastreams": 5}', 0.0)
    assert status == 400
    assert b"datastreams" in text
    assert metrics.counters["south.collect"] == 1
    assert metrics.counters["south.malformed"] == 1
    assert metrics.counters["south.malformed.iot"] == 1


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"GET", RESPONSE, 405),
        (b"POST", PENDING, 405),
        (b"GET", IOT, 405),
        (b"POST", f"{BASE}/dev-1/operation/request".encode(), 404),
        (b"POST", b"/elsewhere", 404),
        (b"POST", f"{BASE}/dev-1/unknown".encode(), 404),
    ],
)
def test_wrong_method_and_unknown_path(method: bytes, target: bytes, status: int) -> None:
    core, _, _ = make_core()
    assert core.handle(method, target, None, IOT_BODY, 0.0)[0] == status


def test_api_key_check() -> None:
    core, _, metrics = make_core(api_key="s3cret")
    assert core.handle(b"POST", IOT, None, IOT_BODY, 0.0)[0] == 401
    assert core.handle(b"POST", IOT, b"wrong", IOT_BODY, 0.0)[0] == 401
    assert core.handle(b"POST", IOT, b"s3cret", IOT_BODY, 0.0)[0] == 201
    assert core.handle(b"POST", IOT + b"?X-ApiKey=s3cret", None, IOT_BODY, 0.0)[0] == 201
    assert metrics.counters["south.unauthorized"] == 2


# --- over the wire ---------------------------------------------------------------------------


@pytest.fixture
async def platform() -> AsyncIterator[PlatformInfo]:
    """A platform whose south API is up, holding its load (so only the south API runs)."""
    config = PlatformConfig(south=SouthAPI(api_key="k"))
    async with trio.open_nursery() as nursery:
        info = await nursery.start(
            partial(run_platform, config, Metrics(), hold=True, transport=FreezingDevice())
        )
        yield info
        nursery.cancel_scope.cancel()


async def exercise(base_url: str, core: SouthCore, table: InflightTable) -> None:
    op = new_op(table, "wire-1")
    core.pending.put("dev-1", new_op(table, "wire-2"))
    headers = {"X-ApiKey": "k", "Content-Type": "application/json"}
    final = response_body("wire-1", "UPDATE", "SUCCESSFUL", [step("ENDUPDATE")])
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as http:
        assert (await http.post(RESPONSE.decode(), content=final)).status_code == 201
        assert op.state is State.COMPLETED
        assert (await http.post(RESPONSE.decode(), content=final)).status_code == 201
        assert (await http.post(RESPONSE.decode(), content=b"{")).status_code == 400
        pending = await http.get(PENDING.decode())
        assert pending.status_code == 200
        assert [r.id for r in decode_pending(pending.content)] == ["wire-2"]
        assert (await http.get(PENDING.decode())).status_code == 204
        assert (await http.post(IOT.decode(), content=IOT_BODY)).status_code == 201
        assert (await http.get(IOT.decode())).status_code == 405
        assert (await http.post("/nowhere", content=b"")).status_code == 404
        no_key = await http.post(IOT.decode(), content=IOT_BODY, headers={"X-ApiKey": "bad"})
        assert no_key.status_code == 401
    c = core.counters
    assert c["south.duplicate"] == 1
    assert c["south.malformed"] == 1
    assert c["south.collect"] == 1


async def test_south_api_on_the_fast_server(platform: PlatformInfo) -> None:
    assert platform.south_url.startswith("http://127.0.0.1:")
    with trio.fail_after(10):
        await exercise(platform.south_url, platform.core, platform.table)


async def test_south_api_as_asgi_under_hypercorn() -> None:
    metrics = Metrics()
    table = InflightTable(metrics)
    core = SouthCore(table, metrics, api_key="k")
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_asgi, south_asgi_app(core), "127.0.0.1", 0)
        with trio.fail_after(10):
            await exercise(binds[0], core, table)
        nursery.cancel_scope.cancel()


async def raw_exchange(url: str, request: bytes) -> bytes:
    """Write ``request`` on a fresh connection to ``url``; everything the server answers."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


async def test_the_servers_own_refusals_are_counted() -> None:
    """413 (and 431) are answered by the HTTP server before the south API sees the request:
    they still reach the run's counters (``south.too_large``), as every refusal does."""
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        info = await nursery.start(
            partial(run_platform, PlatformConfig(), metrics, hold=True, transport=FreezingDevice())
        )
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        with trio.fail_after(10):
            too_large = await raw_exchange(info.south_url, head % (RESPONSE, DEFAULT_MAX_BODY + 1))
            long_head = await raw_exchange(
                info.south_url, b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * DEFAULT_MAX_HEAD + b"\r\n\r\n"
            )
        assert too_large.startswith(b"HTTP/1.1 413 ")
        assert long_head.startswith(b"HTTP/1.1 431 ")
        nursery.cancel_scope.cancel()
    assert metrics.counters["south.too_large"] == 1
    assert metrics.counters["south.head_too_large"] == 1
