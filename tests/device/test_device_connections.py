"""No self-inflicted connection errors (issue 14, item 3): the fleet's responder stays within its
pool and reuses it, both sides listen with the configured backlog, a refused connection is
retried with its backoff and counted.

Real loopback sockets and real time (the platform is the project's own server on port 0): every
delay is a few milliseconds and every wait is bounded.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from loadgen.cli import main
from loadgen.device.config import Delay, Delays, FleetConfig, Profile, Responder
from loadgen.device.engine import Engine
from loadgen.device.fleet import build_devices
from loadgen.device.responder import open_platform
from loadgen.device.runner import run_fleet
from loadgen.http.parser import Request
from loadgen.http.server import DEFAULT_BACKLOG, HTTPServer, Reply
from loadgen.metrics import Metrics
from loadgen.platform import PlatformConfig, SouthAPI, run_platform
from loadgen.protocol import OperationRequest

WAIT = 10.0
BASE = "/south/v80/devices"


async def test_many_messages_due_at_once_use_the_pool_and_reuse_it() -> None:
    """200 finals due at the same instant, a pool of 4: 4 connections opened, every other POST
    on one of them, nothing waits for a connection slot, nothing fails."""
    received: list[bytes] = []

    async def platform(request: Request) -> Reply:
        received.append(request.body)
        await trio.sleep(0.001)  # a platform that takes a moment: the workers overlap
        return Reply(201)

    server = HTTPServer(platform)
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        [(host, port), *_] = await nursery.start(server.serve, "127.0.0.1", 0)
        responder = Responder(platform_url=f"http://{host}:{port}", max_connections=4)
        config = FleetConfig(
            count=200,
            http_port=0,
            responder=responder,
            default=Profile(flow="async", delays=Delays(final=Delay.fixed(0.05))),
        )
        async with open_platform(responder, metrics) as link, trio.open_nursery() as work:
            engine = Engine(config, metrics, link, work)
            for index, device in enumerate(build_devices(config).values()):
                request = OperationRequest(id=f"op-{index}", timestamp=1, name="REFRESH_INFO")
                await engine.handle(device, request)
            with trio.fail_after(WAIT):
                while engine.in_flight:  # noqa: ASYNC110 -- the deliveries are real exchanges
                    await trio.sleep(0.01)
            assert engine.outbox.workers <= 4
        stats = link.pool.stats
        nursery.cancel_scope.cancel()
    assert len(received) == 200
    assert metrics.counters["device.callback.sent"] == 200
    assert stats.connections_opened == 4
    assert stats.reused == 196
    assert stats.errors == {}
    assert server.stats.connections_accepted == 4


async def test_a_refused_connection_is_retried_with_backoff_and_counted() -> None:
    """Nobody listens at first: each attempt is refused, retried after 10, 20, 40 ms (in the
    fleet's timer heap), counted as ``error.connect`` and ``retried``; when the platform comes
    up the message goes through on the next attempt."""
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    received: list[float] = []

    async def platform(request: Request) -> Reply:
        received.append(trio.current_time())
        return Reply(201)

    responder = Responder(
        platform_url=f"http://127.0.0.1:{port}", retries=8, backoff_base=0.01, backoff_max=0.04
    )
    config = FleetConfig(count=1, http_port=0, responder=responder, default=Profile(flow="async"))
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        async with open_platform(responder, metrics) as link, trio.open_nursery() as work:
            engine = Engine(config, metrics, link, work)
            [device] = build_devices(config).values()
            started = trio.current_time()
            await engine.handle(device, OperationRequest(id="x", timestamp=1, name="REFRESH_INFO"))
            with trio.fail_after(WAIT):
                while metrics.counters["device.callback.error.connect"] < 3:  # noqa: ASYNC110
                    await trio.sleep(0.001)
            await nursery.start(HTTPServer(platform).serve, "127.0.0.1", port)
            with trio.fail_after(WAIT):
                while engine.in_flight:  # noqa: ASYNC110 -- the deliveries are real exchanges
                    await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    counters = metrics.counters
    refused = counters["device.callback.error.connect"]
    assert refused >= 3
    assert counters["device.callback.retried"] == refused
    assert counters["device.callback.sent"] == 1
    assert "device.callback.undelivered" not in counters
    # the first three waits alone are 10 + 20 + 40 ms
    assert received[0] - started >= 0.07
    assert metrics.notes["device.callback.error.connect"].startswith("cannot connect")


@pytest.fixture
def backlogs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The backlog every listener of the test is opened with."""
    seen: list[Any] = []
    opened = trio.open_tcp_listeners

    async def spy(port: int, *, host: Any = None, backlog: Any = None) -> Any:
        seen.append(backlog)
        return await opened(port, host=host, backlog=backlog)

    monkeypatch.setattr(trio, "open_tcp_listeners", spy)
    return seen


async def test_the_fleet_listens_with_its_backlog(backlogs: list[Any]) -> None:
    for backlog, expected in ((None, DEFAULT_BACKLOG), (128, 128)):
        extra = {} if backlog is None else {"backlog": backlog}
        config = FleetConfig(count=1, http_port=0, https_port=0, **extra)
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_fleet, config, Metrics())
            info.handle.shutdown()
        assert backlogs == [expected, expected]  # HTTP and HTTPS
        backlogs.clear()


async def test_the_south_api_listens_with_its_backlog(
    backlogs: list[Any], autojump_clock: trio.testing.MockClock
) -> None:
    config = PlatformConfig(south=SouthAPI(backlog=512, linger=0))
    async with trio.open_nursery() as nursery:
        info = await nursery.start(partial(run_platform, config, Metrics(), hold=True))
        assert info.south_url.startswith("http://127.0.0.1:")
        nursery.cancel_scope.cancel()
    assert backlogs == [512]
    assert SouthAPI().backlog == DEFAULT_BACKLOG


@pytest.mark.slow
def test_the_report_shows_refused_posts_with_their_first_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real time, in process: ``loadgen devices`` for 2 s whose platform refuses connections;
    a thread sends it 3 async operations. The summary and the console name the cause, its count
    and its first message, beside the retries and the POSTs given up."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def send() -> None:
        deadline = time.monotonic() + WAIT
        for index in range(3):
            while True:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
                    body = orjson.dumps(
                        {"operation": {"request": {"id": f"r-{index}", "timestamp": 1,
                                                   "name": "REFRESH_INFO"}}}
                    )  # fmt: skip
                    connection.request("POST", f"{BASE}/dev-000001/operation/request", body)
                    assert connection.getresponse().status == 201
                    connection.close()
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    code = main(
        ["devices", "--count", "2", "--http-port", str(port), "--flow", "async",
         "--platform-url", "http://127.0.0.1:9", "--retries", "1", "--backoff-base", "10ms",
         "--duration", "2s", "--results", str(tmp_path), "--progress", "lines"]
    )  # fmt: skip
    sender.join(WAIT)
    out = capsys.readouterr().out
    assert code == 0, out
    [folder] = (tmp_path / "devices").iterdir()
    summary = orjson.loads((folder / "summary.json").read_bytes())
    causes = {item["cause"]: item for item in summary["errors_by_cause"]}
    refused = causes["device.callback.error.connect"]
    assert refused["count"] == 6  # 3 finals, each tried twice
    assert refused["first"].startswith("cannot connect")
    assert causes["device.callback.undelivered"]["count"] == 3
    assert summary["counters"]["device.callback.retried"] == 3
    assert "posted 0  retried 3  undelivered 3  rejected 0  connections 0" in out
    assert re.search(r"\n  device\.callback\.error\.connect +6  cannot connect: ", out), out
