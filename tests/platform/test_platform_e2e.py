"""End to end over real sockets, against an independent device: the standard library's
``http.server`` in a thread, answering every operation synchronously after a fixed delay.

These tests run on the real clock (the device is a thread with ``time.sleep``), so they are
marked ``slow``; each takes a few seconds.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from loadgen.cli import main
from loadgen.metrics.registry import Metrics
from loadgen.platform import Arrival, PlatformConfig, Stage, Targets, run_platform

DELAY = 0.050


class _Device(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the platform's pool expects
    # One write per answer, without Nagle: otherwise the body waits ~40 ms for the delayed ACK
    # of the head (the stdlib writes them separately), which is the device's cost, not ours.
    wbufsize = 65536
    disable_nagle_algorithm = True
    delay = DELAY
    count = 0
    keys: set[str | None] = set()  # noqa: RUF012 -- shared across handler instances on purpose
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(body)["operation"]["request"]
        time.sleep(self.delay)
        answer = json.dumps(
            {
                "version": "1.0",
                "operation": {
                    "response": {
                        "id": request["id"],
                        "timestamp": int(time.time() * 1000),
                        "name": request["name"],
                        "resultCode": "SUCCESSFUL",
                        "resultDescription": "Success",
                        "steps": [],
                    }
                },
            }
        ).encode()
        with self.lock:
            type(self).count += 1
            self.keys.add(self.headers.get("X-ApiKey"))
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def device() -> Iterator[tuple[str, type[_Device]]]:
    handler = type("Device", (_Device,), {"count": 0, "keys": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
async def test_complete_p50_is_the_device_delay(device: tuple[str, type[_Device]]) -> None:
    """Real time: the device is a stdlib server in a thread that sleeps 50 ms per request."""
    url, handler = device
    config = PlatformConfig(
        targets=Targets(base_url=url, count=20),
        arrival=Arrival(stages=(Stage(duration=3.0, rate=100.0),)),
        api_key="platform-key",
    )
    metrics = Metrics()
    with trio.fail_after(30):
        result = await run_platform(config, metrics)
    c = metrics.counters
    assert c["ops.sent"] == c["ops.completed"] == c["ops.succeeded"] == handler.count == 300
    assert handler.keys == {"platform-key"}
    complete = metrics.phase("complete").intended.merged()
    p50 = complete.get_value_at_percentile(50) / 1e6
    # The delay, within 1 ms plus loopback and thread-server cost (a few ms on a shared machine).
    assert DELAY <= p50 <= DELAY + 0.004, p50
    assert metrics.single("lateness").count == 300
    assert result.offered_rate == 100.0
    assert result.achieved_rate == pytest.approx(100.0, rel=0.02)


@pytest.mark.slow
async def test_new_connection_per_operation(device: tuple[str, type[_Device]]) -> None:
    """Real time: same device, with keep-alive off (one connection per operation)."""
    url, handler = device
    handler.delay = 0.005
    config = PlatformConfig(
        targets=Targets(base_url=url, count=3),
        arrival=Arrival(stages=(Stage(duration=1.0, rate=50.0),)),
        keep_alive=False,
    )
    metrics = Metrics()
    with trio.fail_after(30):
        await run_platform(config, metrics)
    assert metrics.counters["ops.completed"] == handler.count == 50


@pytest.mark.slow
def test_cli_writes_summary_and_hlogs(device: tuple[str, type[_Device]], tmp_path: Path) -> None:
    """Real time: ``loadgen platform`` for one second against the stdlib device."""
    url, handler = device
    handler.delay = 0.002
    code = main(
        [
            "platform", "--url", url, "--devices", "5", "--rate", "50", "--duration", "1",
            "--op", "REBOOT_EQUIPMENT:3", "--op", "REFRESH_INFO:1", "--breakdown",
            "--results", str(tmp_path), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    [results] = (tmp_path / "platform").iterdir()
    assert {"run.json", "scenario.toml", "timeseries.csv", "counters.jsonl", "report.html"} <= {
        p.name for p in results.iterdir()
    }
    summary = orjson.loads((results / "summary.json").read_bytes())
    assert summary["operations"]["sent"] == summary["operations"]["completed"] == 50
    assert summary["offered_rate"] == 50.0
    assert summary["latency_ms"]["complete"]["count"] == 50
    assert summary["generator"]["late_sends"] >= 0
    assert "saturated" in summary["generator"]
    assert set(summary["latency_by_operation_ms"]) == {"REBOOT_EQUIPMENT", "REFRESH_INFO"}
    hlogs = {p.name for p in results.glob("*.hlog")}
    assert {"complete.hlog", "complete.service.hlog", "ack.hlog", "lateness.hlog"} <= hlogs
    assert (results / "complete.hlog").read_text().startswith("#[Histogram log format")
