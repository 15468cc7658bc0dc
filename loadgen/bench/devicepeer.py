"""One side of a device-fleet benchmark pair, run as its own process pinned to its own core.

    python -m loadgen.bench.devicepeer server --kind fast|h11|hypercorn [--count N] [--cpu N]
        [--tls CA_FILE]
        prints "READY <port>" and serves a fleet until terminated; with ``--tls`` (fast only)
        on its HTTPS port alone, with a generated certificate whose CA it writes to CA_FILE.
    python -m loadgen.bench.devicepeer client --port P [--devices N] [--duration S]
        [--warmup S] [--concurrency C] [--cpu N]
        prints "WARM" after the warm-up, then one JSON line with the measured window.
    python -m loadgen.bench.devicepeer memory --count N
        prints one JSON line: the RSS of a started fleet of N devices.

The three server kinds run the very same ``DeviceHandler`` (routing, decoding, the engine's
synchronous fast path, encoding): on the project's fast path (``HTTPServer``), on the same
server forced through h11, and on hypercorn through a small ASGI adapter. The client is always
the project's fast pool, sending sync REBOOT_EQUIPMENT requests round-robin over ``--devices``
device ids, so the figure that differs between kinds is the server's CPU per operation.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from loadgen.bench.procs import pin
from loadgen.device.config import FleetConfig
from loadgen.device.engine import Engine
from loadgen.device.fleet import build_devices
from loadgen.device.handler import DeviceHandler
from loadgen.device.runner import run_fleet
from loadgen.http.asgi import acknowledge_lifespan
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer
from loadgen.metrics import Metrics

BASE = "/south/v80/devices"
ID_PATTERN = "dev-{:06d}"


def request_body(index: int) -> bytes:
    return orjson.dumps(
        {
            "operation": {
                "request": {
                    "id": f"072b08d1-0fcb-4a0c-a2d8-{index:012d}",
                    "timestamp": 1432454277950,
                    "name": "REBOOT_EQUIPMENT",
                    "parameters": {"type": "HARDWARE"},
                }
            }
        }
    )


def _asgi(handler: Callable[[Request], Awaitable[Any]]) -> Callable[..., Awaitable[None]]:
    """The fleet handler as an ASGI app (what hypercorn serves)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        request = Request(scope["method"].encode(), target, list(scope["headers"]), body)
        reply = await handler(request)
        headers = list(reply.headers)
        if reply.body:
            headers.append((b"content-type", reply.content_type))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    return app


async def serve(kind: str, count: int, tls_ca: str | None = None) -> None:
    config = FleetConfig(count=count, http_port=0, id_pattern=ID_PATTERN)
    if tls_ca is not None:
        config = FleetConfig(count=count, http_port=None, https_port=0, id_pattern=ID_PATTERN)
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        if kind == "fast":  # the fleet exactly as `loadgen devices` runs it
            info = await nursery.start(run_fleet, config, metrics)
            if tls_ca is not None:
                assert info.ca_pem is not None
                await trio.Path(tls_ca).write_bytes(info.ca_pem)
                port = info.https[0][1]
            else:
                port = info.http[0][1]
        else:
            engine = Engine(config, metrics, None, nursery)
            handler = DeviceHandler(build_devices(config), engine, base_path=BASE, api_key=None)
            if kind == "hypercorn":
                from hypercorn.config import Config
                from hypercorn.trio import serve as hypercorn_serve

                hconfig = Config()
                hconfig.bind = ["127.0.0.1:0"]
                hconfig.accesslog = None
                hconfig.errorlog = None
                binds = await nursery.start(hypercorn_serve, _asgi(handler), hconfig)
                port = int(binds[0].rsplit(":", 1)[1])
            else:
                server = HTTPServer(handler, force_h11=True)
                [(_, port)] = await nursery.start(server.serve, "127.0.0.1", 0)
        print(f"READY {port}", flush=True)


async def client(port: int, devices: int, duration: float, warmup: float, concurrency: int) -> None:
    origin = Origin("http", "127.0.0.1", port)
    work = [
        (f"{BASE}/{ID_PATTERN.format(i)}/operation/request".encode(), request_body(i))
        for i in range(devices)
    ]
    count = errors = 0
    measuring = False
    stop = False
    async with open_pool(limits=ClientLimits(max_connections=concurrency)) as pool:

        async def loop(offset: int) -> None:
            nonlocal count, errors
            i = offset
            while not stop:
                target, body = work[i % devices]
                i += concurrency
                try:
                    status = (await pool.request(origin, target, body)).status
                except Exception:
                    errors += 1
                    continue
                if status != 201:
                    errors += 1
                elif measuring:
                    count += 1

        async with trio.open_nursery() as nursery:
            for offset in range(concurrency):
                nursery.start_soon(loop, offset)
            await trio.sleep(warmup)
            print("WARM", flush=True)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            measuring = True
            await trio.sleep(duration)
            measuring = False
            cpu1, wall1 = time.process_time(), time.perf_counter()
            stop = True
    result = {"requests": count, "errors": errors, "cpu_s": cpu1 - cpu0, "wall_s": wall1 - wall0}
    print(orjson.dumps(result).decode(), flush=True)


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


async def memory(count: int) -> None:
    """RSS of a started fleet of ``count`` devices (listening, idle)."""
    config = FleetConfig(count=count, http_port=0)
    async with trio.open_nursery() as nursery:
        info = await nursery.start(run_fleet, config, Metrics())
        gc.collect()
        rss = _rss_bytes()
        print(orjson.dumps({"count": count, "rss_bytes": rss}).decode(), flush=True)
        info.handle.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.devicepeer")
    parser.add_argument("role", choices=["server", "client", "memory"])
    parser.add_argument("--kind", default="fast", choices=["fast", "h11", "hypercorn"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--tls", metavar="CA_FILE", default=None, help="serve HTTPS (fast only)")
    args = parser.parse_args(argv)
    pin(args.cpu)
    if args.role == "server":
        trio.run(serve, args.kind, args.count, args.tls)
    elif args.role == "client":
        trio.run(client, args.port, args.devices, args.duration, args.warmup, args.concurrency)
    else:
        trio.run(memory, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
