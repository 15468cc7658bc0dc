"""The stand-in's north API over real sockets: N1 creates a job whose operations the sender
runs against a virtual fleet, N2/N3 show it, N4 moves an operation, the job's callback gets each
finished record, an unknown job is a 404 with a JSON error.

Real clock (marked ``slow``): the fleet, the platform and a small callback receiver talk over
loopback sockets, which the mock clock cannot drive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest
import trio

from loadgen.device.config import FleetConfig
from loadgen.device.runner import run_fleet
from loadgen.http.client import ConnectionPool, Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import Arrival, NorthAPI, PlatformConfig, Stage, Targets, Timeouts
from loadgen.platform.runner import PlatformInfo, run_platform
from loadgen.protocol.north import (
    JobRequest,
    OperationParameters,
    decode_callback,
    decode_job_status,
    decode_operations_page,
    encode_job_request,
    job_id_from,
)

pytestmark = pytest.mark.slow


@dataclass
class Stand:
    info: PlatformInfo
    pool: ConnectionPool
    origin: Origin
    callback_url: str
    metrics: Metrics
    received: list[bytes] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def _stand(devices: int = 3, sync_delay: str | None = None) -> AsyncIterator[Stand]:
    metrics = Metrics()
    fleet = FleetConfig(count=devices, http_port=0, seed=1)
    platform = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=30.0, rate=0.0),)),
        north=NorthAPI(keep_finished=100),
        timeouts=Timeouts(timeout=5.0, ack_timeout=5.0),
        seed=1,
    )
    async with trio.open_nursery() as nursery:
        info: PlatformInfo = await nursery.start(
            lambda task_status: run_platform(platform, metrics, hold=True, task_status=task_status)
        )
        fleet_info = await nursery.start(run_fleet, fleet, metrics)
        assert fleet_info.http_url is not None
        info.begin_load(
            Targets(base_url=fleet_info.http_url, id_pattern=fleet.id_pattern, count=devices)
        )
        received: list[bytes] = []
        arrived = trio.Event()

        async def callback(request: Request) -> Reply:
            received.append(request.body)
            arrived.set()
            return Reply(204)

        server = HTTPServer(callback)
        [(host, port), *_] = await nursery.start(server.serve, "127.0.0.1", 0)
        assert info.north_url is not None
        origin, _ = Origin.parse(info.north_url)
        async with open_pool() as pool:
            stand = Stand(info, pool, origin, f"http://{host}:{port}/cb", metrics, received)
            stand.arrived = arrived
            yield stand
        info.cut_drain()
        fleet_info.handle.shutdown()
        nursery.cancel_scope.cancel()


def _job(stand: Stand, *entities: str, **kw: object) -> bytes:
    return encode_job_request(
        JobRequest(
            name="REFRESH_INFO",
            entities=entities or ("dev-000000",),
            operation_parameters=OperationParameters(timeout=2.0),
            callback=stand.callback_url,
            **kw,  # type: ignore[arg-type]
        )
    )


async def test_a_job_runs_on_the_fleet_and_is_reported_everywhere() -> None:
    async with _stand() as stand:
        pool, origin = stand.pool, stand.origin
        answer = await pool.request(
            origin, b"/north/v80/operation/jobs", _job(stand, "dev-000000", "dev-000001")
        )
        assert answer.status == 201
        location = answer.header(b"location")
        job_id = job_id_from(location, answer.body)
        assert location == f"/north/v80/operation/jobs/{job_id}".encode()
        assert orjson.loads(answer.body) == {"id": job_id}

        with trio.fail_after(5):
            while len(stand.received) < 2:
                await stand.arrived.wait()
                stand.arrived = trio.Event()
                await trio.sleep(0.01)
        records = [r for body in stand.received for r in decode_callback(body)]
        assert {r.entity_id for r in records} == {"dev-000000", "dev-000001"}
        assert {(r.job_id, r.status, r.result) for r in records} == {
            (job_id, "FINISHED", "SUCCESSFUL")
        }
        assert all(r.started_ms is not None and r.finished_ms is not None for r in records)

        n2 = await pool.request(
            origin, f"/north/v80/operation/jobs/{job_id}".encode(), method=b"GET"
        )
        status = decode_job_status(n2.body)
        assert (status.status, status.total, status.finished, status.failed) == (
            "FINISHED",
            2,
            2,
            0,
        )

        n3 = await pool.request(
            origin, f"/north/v80/operation/jobs/{job_id}/operations?start=2&size=5".encode(),
            method=b"GET",
        )  # fmt: skip
        [second] = decode_operations_page(n3.body)
        assert second.entity_id == "dev-000001"
        assert stand.metrics.counters["platform.north.callbacks_sent"] == 2
        assert stand.metrics.counters["ops.completed"] == 2


async def test_unknown_job_is_404_json_and_bad_input_is_400_json() -> None:
    async with _stand() as stand:
        pool, origin = stand.pool, stand.origin
        missing = await pool.request(origin, b"/north/v80/operation/jobs/nope", method=b"GET")
        assert missing.status == 404
        assert orjson.loads(missing.body)["errors"][0]["code"] == 404
        bad = await pool.request(origin, b"/north/v80/operation/jobs", b'{"job": {}}')
        assert bad.status == 400
        assert "job.request" in orjson.loads(bad.body)["errors"][0]["message"]
        unknown = await pool.request(origin, b"/north/v80/operation/jobs", _job(stand, "ghost"))
        assert unknown.status == 400
        assert "ghost" in orjson.loads(unknown.body)["errors"][0]["message"]
        wrong = await pool.request(origin, b"/north/v80/operation/jobs", method=b"GET")
        assert wrong.status == 405
        assert stand.metrics.counters["platform.north.bad_request"] == 2


async def test_n4_moves_an_operation_and_refuses_what_the_table_forbids() -> None:
    async with _stand() as stand:
        pool, origin = stand.pool, stand.origin
        created = await pool.request(origin, b"/north/v80/operation/jobs", _job(stand))
        job_id = job_id_from(created.header(b"location"), created.body)
        with trio.fail_after(5):
            await stand.arrived.wait()
        [record] = decode_callback(stand.received[0])
        base = f"/north/v80/operation/jobs/{job_id}/operations/{record.operation_id}"
        again = await pool.request(origin, f"{base}?state=IN_PROGRESS".encode(), method=b"PUT")
        assert again.status == 409  # finished already
        none = await pool.request(origin, base.encode(), method=b"PUT")
        assert none.status == 400
        other = await pool.request(origin, f"{base}x?state=FINISHED".encode(), method=b"PUT")
        assert other.status == 404
