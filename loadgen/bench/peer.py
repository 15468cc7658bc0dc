"""One side of an HTTP benchmark pair, run as its own process pinned to its own core.

    python -m loadgen.bench.peer server --kind fast|h11|hypercorn [--cpu N]
        prints "READY <port>" and serves until terminated.
    python -m loadgen.bench.peer client --kind fast|h11|httpx --port P [--duration S]
        [--warmup S] [--concurrency C] [--cpu N]
        prints "WARM" after the warm-up, then one JSON line with the measured window.

The handler and the request are the same for every kind: a POST of a small OpenGate request
answered by 201 with a small JSON body, over keep-alive connections.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson
import trio

from loadgen.bench.procs import pin
from loadgen.http.asgi import acknowledge_lifespan
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply

TARGET = "/south/v80/devices/dev-000001/operation/request"
BODY = orjson.dumps(
    {
        "operation": {
            "request": {
                "id": "072b08d1-0fcb-4a0c-a2d8-99773f9b9327",
                "timestamp": 1432454277950,
                "name": "REBOOT_EQUIPMENT",
                "parameters": {"type": "HARDWARE"},
            }
        }
    }
)
ANSWER = orjson.dumps(
    {
        "version": "1.0",
        "operation": {
            "response": {
                "id": "072b08d1-0fcb-4a0c-a2d8-99773f9b9327",
                "timestamp": 1432454278950,
                "deviceId": "dev-000001",
                "name": "REBOOT_EQUIPMENT",
                "resultCode": "SUCCESSFUL",
                "resultDescription": "Success",
                "steps": [],
            }
        },
    }
)
_REPLY = Reply(201, ANSWER)


async def _handler(request: Request) -> Reply:
    return _REPLY


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await acknowledge_lifespan(receive, send)
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


async def serve(kind: str) -> None:
    async with trio.open_nursery() as nursery:
        if kind == "hypercorn":
            from hypercorn.config import Config
            from hypercorn.trio import serve as hypercorn_serve

            config = Config()
            config.bind = ["127.0.0.1:0"]
            config.accesslog = None
            config.errorlog = None
            binds = await nursery.start(hypercorn_serve, _asgi_app, config)
            port = int(binds[0].rsplit(":", 1)[1])
        else:
            server = HTTPServer(_handler, force_h11=kind == "h11")
            [(_, port)] = await nursery.start(server.serve, "127.0.0.1", 0)
        print(f"READY {port}", flush=True)


async def client(kind: str, port: int, duration: float, warmup: float, concurrency: int) -> None:
    count = 0
    errors = 0
    measuring = False
    stop_at = 0.0

    async def loop(send: Any) -> None:
        nonlocal count, errors
        while trio.current_time() < stop_at:
            try:
                status = await send()
            except Exception:
                errors += 1
                continue
            if status != 201:
                errors += 1
            elif measuring:
                count += 1

    async def window(send: Any) -> None:
        nonlocal measuring, stop_at
        stop_at = trio.current_time() + warmup + duration + 3600
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(loop, send)
            await trio.sleep(warmup)
            print("WARM", flush=True)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            measuring = True
            await trio.sleep(duration)
            measuring = False
            cpu1, wall1 = time.process_time(), time.perf_counter()
            stop_at = 0.0
        result = {
            "requests": count,
            "errors": errors,
            "cpu_s": cpu1 - cpu0,
            "wall_s": wall1 - wall0,
        }
        print(orjson.dumps(result).decode(), flush=True)

    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        url = f"http://127.0.0.1:{port}{TARGET}"
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(limits=limits) as http:

            async def send_httpx() -> int:
                response = await http.post(url, content=BODY, headers=headers)
                return response.status_code

            await window(send_httpx)
        return
    origin = Origin("http", "127.0.0.1", port)
    target = TARGET.encode()
    async with open_pool(
        limits=ClientLimits(max_connections=concurrency), force_h11=kind == "h11"
    ) as pool:

        async def send_fast() -> int:
            return (await pool.request(origin, target, BODY)).status

        await window(send_fast)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.peer")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--kind", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)
    if args.role == "server":
        trio.run(serve, args.kind)
    else:
        trio.run(client, args.kind, args.port, args.duration, args.warmup, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
