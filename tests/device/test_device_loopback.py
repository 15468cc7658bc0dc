"""The fleet end to end over loopback (port 0): independent clients (stdlib ``http.client``,
curl) send requests, an independent stdlib ``http.server`` plays the platform in a thread.

These use real sockets and real time (the platform runs in another thread, which the mock clock
cannot see), so every delay in them is a few milliseconds and every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import trio

from loadgen.device.config import (
    Delay,
    Delays,
    FleetConfig,
    Profile,
    Responder,
    Sleepy,
)
from loadgen.device.runner import FleetInfo, run_fleet
from loadgen.http.server import ServerLimits
from loadgen.metrics import Metrics

BASE = "/south/v80/devices"
WAIT = 10.0


@dataclass
class StdlibPlatform:
    """The platform's south API as a plain stdlib server (thread), recording what it gets."""

    fail_first: int = 0
    fail_status: int = 503
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    received: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def responses(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                json.loads(body)["operation"]["response"]
                for method, path, _, body in self.received
                if method == "POST" and path.endswith("/operation/response")
            ]


@contextmanager
def stdlib_platform(platform: StdlibPlatform) -> Iterator[StdlibPlatform]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if body:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with platform.lock:
                platform.received.append(("POST", self.path, dict(self.headers), body))
                failing = platform.fail_first > 0
                platform.fail_first -= 1
            self._answer(platform.fail_status if failing else 201)

        def do_GET(self) -> None:
            device_id = self.path.split("/")[-3]
            with platform.lock:
                platform.received.append(("GET", self.path, dict(self.headers), b""))
                waiting = platform.pending.pop(device_id, None)
            if waiting:
                self._answer(200, json.dumps(waiting).encode())
            else:
                self._answer(204)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    platform.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield platform
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def fleet(config: FleetConfig) -> AsyncIterator[tuple[FleetInfo, Metrics]]:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        info = await nursery.start(run_fleet, config, metrics)
        yield info, metrics
        nursery.cancel_scope.cancel()


def envelope(op_id: str, name: str, parameters: Any = None) -> bytes:
    request = {"id": op_id, "timestamp": 1_700_000_000_000, "name": name}
    if parameters is not None:
        request["parameters"] = parameters
    return orjson.dumps({"operation": {"request": request}})


def stdlib_post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def wait_until(predicate: Any, what: str) -> None:
    with trio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110 -- the platform is another thread
            await trio.sleep(0.005)
    assert predicate(), what


UPDATE_PARAMETERS = {
    "bundleName": "b",
    "bundleVersion": "2",
    "deploymentElements": [{"name": "e1"}, {"name": "e2"}],
}


async def test_async_multi_reaches_a_stdlib_platform() -> None:
    with stdlib_platform(StdlibPlatform()) as platform:
        profile = Profile(flow="async-multi", delays=Delays(step=Delay.fixed(0.002)))
        config = FleetConfig(
            count=10,
            http_port=0,
            default=profile,
            responder=Responder(platform_url=platform.url, api_key="platform-key"),
        )
        async with fleet(config) as (info, metrics):
            port = info.http[0][1]
            status, body = await trio.to_thread.run_sync(
                stdlib_post,
                port,
                f"{BASE}/dev-000007/operation/requests",
                envelope("u-1", "UPDATE", UPDATE_PARAMETERS),
            )
            assert (status, body) == (201, b"")
            await wait_until(lambda: len(platform.responses()) == 7, "6 partials and a final")
            # the platform has the 7th POST before the device has read its 201: wait for that too
            await wait_until(
                lambda: info.handle.statistics()["device.callback.sent"] >= 7, "7 answers read"
            )
            stats = info.handle.statistics()
        responses = platform.responses()
        assert {(r["id"], r["deviceId"], r["name"]) for r in responses} == {
            ("u-1", "dev-000007", "UPDATE")
        }
        steps = [s["name"] for r in responses for s in r["steps"]]
        assert steps == [
            "BEGINUPDATE",
            "DOWNLOADFILE",
            "DOWNLOADFILE",
            "BEGININSTALL",
            "ENDINSTALL",
            "ENDUPDATE",
        ]
        assert ["resultCode" in r for r in responses] == [False] * 6 + [True]
        assert "resultDescription" not in responses[0]
        assert responses[-1]["resultCode"] == "SUCCESSFUL"
        with platform.lock:
            _, path, headers, _ = platform.received[0]
        assert path == f"{BASE}/dev-000007/operation/response"
        assert headers["X-ApiKey"] == "platform-key"
        assert stats["device.callback.sent"] == 7
        assert metrics.phase("callback").intended.count == 7


async def test_retries_then_delivers_and_counts_undelivered() -> None:
    with stdlib_platform(StdlibPlatform(fail_first=2)) as platform:
        responder = Responder(platform_url=platform.url, retries=3, backoff_base=0.001)
        config = FleetConfig(
            count=2, http_port=0, default=Profile(flow="async"), responder=responder
        )
        async with fleet(config) as (info, _):
            port = info.http[0][1]
            await trio.to_thread.run_sync(
                stdlib_post,
                port,
                f"{BASE}/dev-000001/operation/request",
                envelope("r-1", "REBOOT_EQUIPMENT"),
            )
            await wait_until(lambda: len(platform.responses()) == 3, "two failures and a success")
            await wait_until(
                lambda: info.handle.statistics().get("device.callback.sent") == 1, "counted"
            )
            stats = info.handle.statistics()
            assert stats["device.callback.retried"] == 2
            assert stats["device.callback.status.503"] == 2
            assert "device.callback.undelivered" not in stats
            # Now a platform that never accepts: retries run out and it is counted.
            platform.fail_first = 10**6
            await trio.to_thread.run_sync(
                stdlib_post,
                port,
                f"{BASE}/dev-000000/operation/request",
                envelope("r-2", "REBOOT_EQUIPMENT"),
            )
            await wait_until(
                lambda: info.handle.statistics().get("device.callback.undelivered") == 1,
                "undelivered counted",
            )


async def test_unreachable_platform_is_counted() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    responder = Responder(platform_url=f"http://127.0.0.1:{closed}", retries=1, backoff_base=0.001)
    config = FleetConfig(count=2, http_port=0, default=Profile(flow="async"), responder=responder)
    async with fleet(config) as (info, _):
        await trio.to_thread.run_sync(
            stdlib_post,
            info.http[0][1],
            f"{BASE}/dev-000001/operation/request",
            envelope("x", "REBOOT_EQUIPMENT"),
        )
        await wait_until(
            lambda: info.handle.statistics().get("device.callback.undelivered") == 1, "counted"
        )
        stats = info.handle.statistics()
        assert stats["device.callback.error.connect"] == 2
        assert stats["device.callback.retried"] == 1


async def test_sleepy_devices_poll_and_answer() -> None:
    pending = {
        f"dev-00000{i}": [
            {"operation": {"request": {"id": f"p-{i}", "timestamp": 1, "name": "REFRESH_INFO"}}}
        ]
        for i in range(3)
    }
    with stdlib_platform(StdlibPlatform(pending=pending)) as platform:
        config = FleetConfig(
            count=3,
            http_port=0,
            responder=Responder(platform_url=platform.url),
            sleepy=Sleepy(share=1.0, poll_period=0.05, collect_after_refresh=True),
        )
        async with fleet(config) as (info, _):
            await wait_until(lambda: len(platform.responses()) == 3, "three finals")
            await wait_until(
                lambda: info.handle.statistics().get("device.collect.sent") == 3, "three collects"
            )
            stats = info.handle.statistics()
        assert {(r["id"], r["deviceId"], r["resultCode"]) for r in platform.responses()} == {
            (f"p-{i}", f"dev-00000{i}", "SUCCESSFUL") for i in range(3)
        }
        assert stats["device.sleepy.devices"] == 3
        assert stats["device.sleepy.polls"] >= 3
        assert stats["device.ops.pending"] == 3
        with platform.lock:
            paths = [p for m, p, _, _ in platform.received if m == "POST"]
        assert sum(p.endswith("/collect/iot") for p in paths) == 3


async def test_bad_requests_get_their_status_and_counter() -> None:
    limits = ServerLimits(max_body=2048, max_head=1024, read_timeout=0.2)
    config = FleetConfig(count=2, http_port=0, limits=limits)
    async with fleet(config) as (info, _):
        host, port = info.http[0]

        async def raw(data: bytes, drip: bool = False) -> bytes:
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                if drip:
                    await stream.send_all(data[:10])  # and then nothing
                else:
                    await stream.send_all(data)
                out = b""
                with trio.fail_after(WAIT):
                    while chunk := await stream.receive_some(65536):
                        out += chunk
                return out

        path = f"{BASE}/dev-000001/operation/request"
        good = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(envelope('g', 'REFRESH_INFO'))}"
            "\r\nConnection: close\r\n\r\n"
        ).encode() + envelope("g", "REFRESH_INFO")
        async with trio.open_nursery() as nursery:
            results: dict[str, bytes] = {}

            async def run(name: str, data: bytes, drip: bool = False) -> None:
                results[name] = await raw(data, drip)

            nursery.start_soon(run, "garbage", b"\x00\x01 not http at all\r\n\r\n")
            nursery.start_soon(
                run,
                "oversize",
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n".encode(),
            )
            nursery.start_soon(run, "head", b"POST / HTTP/1.1\r\nX: " + b"a" * 4000 + b"\r\n\r\n")
            nursery.start_soon(run, "drip", good, True)
            nursery.start_soon(run, "good", good)
        assert results["garbage"].startswith(b"HTTP/1.1 400")
        assert results["oversize"].startswith(b"HTTP/1.1 413")
        assert results["head"].startswith(b"HTTP/1.1 431")
        assert results["drip"].startswith(b"HTTP/1.1 408")
        assert results["good"].startswith(b"HTTP/1.1 201")
        stats = info.handle.statistics()
        for status in (400, 408, 413, 431):
            assert stats[f"device.http.{status}"] == 1, status
        assert stats["device.ops.completed"] == 1


async def test_shutdown_drains_operations_in_flight() -> None:
    with stdlib_platform(StdlibPlatform()) as platform:
        profile = Profile(flow="async", delays=Delays(final=Delay.fixed(0.2)))
        config = FleetConfig(
            count=2, http_port=0, default=profile, responder=Responder(platform_url=platform.url)
        )
        metrics = Metrics()
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_fleet, config, metrics)
            port = info.http[0][1]
            await trio.to_thread.run_sync(
                stdlib_post,
                port,
                f"{BASE}/dev-000001/operation/request",
                envelope("d-1", "REFRESH_INFO"),
            )
            assert info.handle.in_flight == 1
            info.handle.shutdown()
        # run_fleet returned by itself, after the final went out
        assert [r["id"] for r in platform.responses()] == ["d-1"]
        with pytest.raises(ConnectionRefusedError):
            await trio.to_thread.run_sync(
                stdlib_post, port, f"{BASE}/dev-000001/operation/request", b"{}"
            )


async def test_address_mode_binds_each_address() -> None:
    addresses = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    config = FleetConfig(count=3, http_port=0, addresses=addresses)
    async with fleet(config) as (info, _):
        assert [host for host, _ in info.http] == list(addresses)
        for host, port in info.http:
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                body = envelope(host, "REFRESH_INFO")
                await stream.send_all(
                    f"POST {BASE}/dev-000002/operation/request HTTP/1.1\r\nHost: {host}\r\n"
                    f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 201")
            assert f'"id":"{host}"'.encode() in data


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_gets_conformant_answers_for_every_flow(tmp_path: Any) -> None:
    with stdlib_platform(StdlibPlatform()) as platform:
        config = FleetConfig(
            count=5,
            http_port=0,
            https_port=0,
            api_key="k",
            profiles={"UPDATE": Profile(flow="async-multi"), "REFRESH_INFO": Profile(flow="async")},
            responder=Responder(platform_url=platform.url),
        )
        async with fleet(config) as (info, _):
            assert info.ca_pem is not None
            ca = tmp_path / "ca.pem"
            ca.write_bytes(info.ca_pem)
            answers = {}
            for name, url in (
                ("REBOOT_EQUIPMENT", info.http_url),
                ("UPDATE", info.https_url),
                ("REFRESH_INFO", info.http_url),
                ("CUSTOM_THING", info.https_url),
            ):
                result = await trio.run_process(
                    [
                        str(CURL), "-sS", "--cacert", str(ca), "-H", "X-ApiKey: k",
                        "-H", "Content-Type: application/json", "-w", "\n%{http_code}",
                        "--data-binary", envelope(f"c-{name}", name).decode(),
                        f"{url}{BASE}/dev-000003/operation/request",
                    ],
                    capture_stdout=True,
                )  # fmt: skip
                body, _, code = result.stdout.decode().rpartition("\n")
                answers[name] = (int(code), json.loads(body) if body else None)
            await wait_until(lambda: len(platform.responses()) >= 3, "async answers")
        assert answers["REBOOT_EQUIPMENT"][0] == 201
        sync = answers["REBOOT_EQUIPMENT"][1]
        assert sync is not None
        assert sync["operation"]["response"]["resultCode"] == "SUCCESSFUL"
        assert answers["UPDATE"] == (201, None)
        assert answers["REFRESH_INFO"] == (201, None)
        custom = answers["CUSTOM_THING"][1]
        assert custom is not None
        assert custom["operation"]["response"]["resultCode"] == "NOT_SUPPORTED"
        assert custom["operation"]["response"]["steps"] == []
        by_id = {r["id"]: r for r in platform.responses() if "resultCode" in r}
        assert by_id["c-UPDATE"]["resultCode"] == "SUCCESSFUL"
        assert by_id["c-REFRESH_INFO"]["resultCode"] == "SUCCESSFUL"


async def test_https_with_a_stdlib_client() -> None:
    config = FleetConfig(count=2, http_port=None, https_port=0)
    async with fleet(config) as (info, _):
        assert info.ca_pem is not None
        assert not info.http
        context = ssl.create_default_context(cadata=info.ca_pem.decode())

        def call() -> tuple[int, bytes]:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", info.https[0][1], context=context, timeout=WAIT
            )
            try:
                conn.request(
                    "POST", f"{BASE}/dev-000001/operation/request", envelope("t", "REFRESH_INFO")
                )
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        status, body = await trio.to_thread.run_sync(call)
        assert status == 201
        assert orjson.loads(body)["operation"]["response"]["id"] == "t"
