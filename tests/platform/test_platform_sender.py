"""The sender over real sockets: workers reuse the pool's keep-alive connections, and give up
the connection of an operation that timed out."""

from __future__ import annotations

import re
from functools import partial

import orjson
import pytest
import trio
from platform_fakes import response_body

from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply
from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, Stage, Targets, Timeouts, run_platform


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


def length(head: bytes | bytearray) -> int:
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert found, head
    return int(found.group(1))


@pytest.mark.slow
async def test_a_timed_out_operations_connection_is_closed_not_reused(
    nursery: trio.Nursery,
) -> None:
    """Real sockets (the point is the connection the pool gives up): the device holds its first
    request forever; that operation times out at ``timeout`` (0.2 s, the ack timeout being
    10 s), its connection is closed, and the next operation gets a new one and its answer.

    Real time because the pool dials real TCP (a mock clock would jump past deadlines while the
    kernel connects); the recorded value is still exact: it is the deadline, not a clock reading.
    """
    connections: list[bool] = []  # per connection: closed by the client
    first_closed = trio.Event()

    async def device(stream: trio.SocketStream) -> None:
        index = len(connections)
        connections.append(False)
        buffer = bytearray()
        while True:
            while (end := buffer.find(b"\r\n\r\n")) < 0 or len(buffer) < end + 4 + length(
                buffer[:end]
            ):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    connections[index] = True
                    if index == 0:
                        first_closed.set()
                    return
                buffer += chunk
            request = orjson.loads(bytes(buffer[end + 4 :]))["operation"]["request"]
            buffer.clear()  # one request at a time: the pool waits for each answer
            if index == 0:
                continue  # hold it: never answer on the first connection
            body = response_body(request["id"], request["name"], "SUCCESSFUL")
            await stream.send_all(
                b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    [listener] = await nursery.start(partial(trio.serve_tcp, device, 0, host="127.0.0.1"))
    host, port = listener.socket.getsockname()[:2]
    config = PlatformConfig(
        targets=Targets(base_url=f"http://{host}:{port}", count=1),
        arrival=Arrival(stages=(Stage(duration=0.5, rate=4.0),)),  # at 0 and 0.25 s
        timeouts=Timeouts(ack_timeout=10.0, timeout=0.2),
        max_connections=1,
        drain_grace=5.0,
    )
    metrics = Metrics()
    result = await run_platform(config, metrics)
    c = result.counters
    assert c["ops.sent"] == 2
    assert c["ops.timed_out"] == 1
    assert c["ops.completed"] == c["result.SUCCESSFUL"] == 1
    assert c["ops.abandoned_exchanges"] == 1  # the held exchange, given up at the deadline
    assert result.cut_off == 0
    complete = metrics.phase("complete").intended.merged()
    assert complete.get_max_value() == complete.get_highest_equivalent_value(200_000)
    with trio.fail_after(5):
        await first_closed.wait()
    assert len(connections) == 2  # the answered operation went on a new connection


class WorkerSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._worker"):
            self.steps += 1


@pytest.mark.slow
async def test_below_saturation_the_issuer_writes_and_a_worker_wakes_once(
    nursery: trio.Nursery,
) -> None:
    """Real sockets (the point is the pool's held connections): an open-model load well below
    what the device serves. The issuer writes each operation on an idle worker's connection
    itself, so a worker runs once per operation (for its answer), not twice (woken to write,
    then for the answer). A structural count, not a speed: each extra pass is a wake-up."""
    answer = Reply(201, response_body("same-for-all", "REBOOT_EQUIPMENT", "SUCCESSFUL"))

    async def device(request: Request) -> Reply:
        return answer

    server = HTTPServer(device)
    [(host, port)] = await nursery.start(partial(server.serve, "127.0.0.1", 0))
    config = PlatformConfig(
        targets=Targets(base_url=f"http://{host}:{port}", count=10),
        arrival=Arrival(stages=(Stage(duration=0.6, rate=500.0),)),
        max_connections=8,
        drain_grace=1.0,
    )
    steps = WorkerSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        result = await run_platform(config, Metrics())
    finally:
        trio.lowlevel.remove_instrument(steps)
    counters = result.counters
    assert counters["ops.sent"] == counters["ops.completed"] == counters["ops.issued"] == 300
    assert steps.steps / counters["ops.completed"] < 1.5  # ~2 when each write needs a wake-up
    assert server.stats.connections_accepted <= 8
