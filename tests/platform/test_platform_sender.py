"""The sender over real sockets: workers reuse the pool's keep-alive connections."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from platform_fakes import response_body

from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply
from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, Stage, Targets, run_platform


@pytest.mark.slow
async def test_each_worker_keeps_its_connection(nursery: trio.Nursery) -> None:
    """Real sockets (the point is the connections): a short closed-model run at full speed."""
    answer = Reply(201, response_body("same-for-all", "REBOOT_EQUIPMENT", "SUCCESSFUL"))

    async def device(request: Request) -> Reply:
        return answer

    server = HTTPServer(device)
    [(host, port)] = await nursery.start(partial(server.serve, "127.0.0.1", 0))
    config = PlatformConfig(
        targets=Targets(base_url=f"http://{host}:{port}", count=10),
        arrival=Arrival(model="closed", stages=(Stage(duration=0.3, rate=1.0),), concurrency=4),
        max_connections=4,
        drain_grace=1.0,
    )
    result = await run_platform(config, Metrics())
    counters = result.counters
    assert counters["ops.completed"] > 100
    assert counters["ops.sent"] == counters["ops.completed"] == counters["result.SUCCESSFUL"]
    assert counters["ops.acked"] == counters["ops.completed"]
    assert server.stats.connections_accepted == 4  # one per worker, kept alive the whole run
