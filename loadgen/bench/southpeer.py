"""Both sides of the callback-loop benchmark: the platform's south API and a device-side poster.

    python -m loadgen.bench.southpeer server --kind fast|h11|hypercorn [--cpu N]
        prints "READY <port>" and serves the south API until terminated.
    python -m loadgen.bench.southpeer client --port P [--duration S] [--warmup S]
        [--concurrency C] [--cpu N]
        POSTs final operation responses, prints "WARM", then one JSON line.

The server is the real ``SouthCore`` (parse the path, check the body against PROTOCOL.md,
correlate the id with the in-flight table, count), served by the fast HTTP server, by the same
server forced through h11, or as the ASGI app under hypercorn. The responses carry ids the table
has never seen, so each is answered 201 and counted as an orphan: the receiver's full per-message
work except the latency recording of a live operation.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import orjson
import trio

from loadgen.bench.procs import pin
from loadgen.http.client import ClientLimits, Origin, open_pool
from loadgen.http.server import HTTPServer
from loadgen.metrics.registry import Metrics
from loadgen.platform.asgi import serve_asgi, south_asgi_app
from loadgen.platform.inflight import InflightTable
from loadgen.platform.south import SouthCore
from loadgen.protocol import PathTemplate


def _body(index: int) -> bytes:
    return orjson.dumps(
        {
            "version": "1.0",
            "operation": {
                "response": {
                    "id": str(uuid.UUID(int=index)),
                    "timestamp": 1764100000000 + index,
                    "deviceId": "dev-000001",
                    "name": "REFRESH_INFO",
                    "resultCode": "SUCCESSFUL",
                    "resultDescription": "Success",
                    "steps": [
                        {
                            "name": "REFRESH_INFO",
                            "timestamp": 1764100000000 + index,
                            "result": "SUCCESSFUL",
                            "description": "done",
                        }
                    ],
                }
            },
        }
    )


async def serve(kind: str) -> None:
    metrics = Metrics()
    core = SouthCore(InflightTable(metrics), metrics)
    async with trio.open_nursery() as nursery:
        if kind == "hypercorn":
            binds = await nursery.start(serve_asgi, south_asgi_app(core), "127.0.0.1", 0)
            port = int(binds[0].rsplit(":", 1)[1])
        else:
            server = HTTPServer(core.http_handler, force_h11=kind == "h11")
            [(_, port)] = await nursery.start(server.serve, "127.0.0.1", 0)
        print(f"READY {port}", flush=True)


async def client(port: int, duration: float, warmup: float, concurrency: int) -> None:
    origin = Origin("http", "127.0.0.1", port)
    target = PathTemplate().response_path("dev-000001").encode()
    bodies = [_body(i) for i in range(1024)]
    count = errors = 0
    measuring = False

    async def loop(worker: int) -> None:
        nonlocal count, errors
        i = worker
        while True:
            i = (i + concurrency) % len(bodies)
            try:
                response = await pool.request(origin, target, bodies[i])
            except Exception:
                errors += 1
                continue
            if response.status != 201:
                errors += 1
            elif measuring:
                count += 1

    limits = ClientLimits(max_connections=concurrency)
    async with open_pool(limits=limits) as pool, trio.open_nursery() as nursery:
        for worker in range(concurrency):
            nursery.start_soon(loop, worker)
        await trio.sleep(warmup)
        print("WARM", flush=True)
        measuring = True
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await trio.sleep(duration)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        measuring = False
        nursery.cancel_scope.cancel()
    print(
        orjson.dumps(
            {"requests": count, "errors": errors, "cpu_s": cpu1 - cpu0, "wall_s": wall1 - wall0}
        ).decode(),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.southpeer")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--kind", default="fast", choices=["fast", "h11", "hypercorn"])
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
        trio.run(client, args.port, args.duration, args.warmup, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
