"""HTTP/1.1 transport benchmark: the fast path against h11 and httpx/hypercorn, in one run.

Each pair runs as two processes, the client pinned to core 0 and the server to core 1 (when there
are two), over keep-alive connections on loopback. The client counts answered requests in a
measured window after a warm-up; CPU time is read for both processes over that same window, so
the figure that matters, *requests per CPU-second* of each side, does not depend on which side
saturates first. "req/s per core" is the pair's figure for its busier side: what one core of this
machine sustains for that implementation.
"""

from __future__ import annotations

import timeit
from dataclasses import asdict, dataclass

from loadgen.bench.procs import measure_pair

__all__ = ["PairResult", "parser_figures", "run_pair"]


@dataclass(frozen=True, slots=True)
class PairResult:
    name: str
    requests: int
    errors: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    @property
    def client_us(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else float("inf")

    @property
    def server_us(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s / self.requests * 1e6

    @property
    def per_core(self) -> float:
        """Requests per CPU-second of the busier side."""
        busiest = max(self.client_cpu_s, self.server_cpu_s or 0.0)
        return self.requests / busiest if busiest else 0.0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        out.update(
            rps=round(self.rps, 1),
            client_us_per_request=round(self.client_us, 2),
            server_us_per_request=None if self.server_us is None else round(self.server_us, 2),
            requests_per_core_second=round(self.per_core, 1),
        )
        return out


def run_pair(
    name: str,
    server_kind: str,
    client_kind: str,
    *,
    duration: float = 3.0,
    warmup: float = 0.5,
    concurrency: int = 16,
) -> PairResult:
    result, server_cpu = measure_pair(
        ("loadgen.bench.peer", ["server", "--kind", server_kind]),
        (
            "loadgen.bench.peer",
            [
                "client",
                "--kind",
                client_kind,
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--concurrency",
                str(concurrency),
            ],
        ),
        f"{server_kind}/{client_kind}",
    )
    return PairResult(
        name=name,
        requests=result["requests"],
        errors=result["errors"],
        wall_s=result["wall_s"],
        client_cpu_s=result["cpu_s"],
        server_cpu_s=server_cpu,
    )


def parser_figures(number: int = 20000) -> dict[str, float]:
    """Microseconds to parse one typical request head+body: fast path and h11."""
    import h11

    from loadgen.bench.peer import BODY, TARGET
    from loadgen.http.parser import RequestReader

    wire = (
        f"POST {TARGET} HTTP/1.1\r\nHost: 127.0.0.1:1123\r\nContent-Type: application/json\r\n"
        f"X-ApiKey: secret\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    reader = RequestReader()

    def fast() -> None:
        reader.feed(wire)
        reader.next_request()

    def with_h11() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(wire)
        conn.next_event()
        conn.next_event()
        conn.next_event()

    return {
        "fast_parse_us": min(timeit.repeat(fast, number=number, repeat=5)) / number * 1e6,
        "h11_parse_us": min(timeit.repeat(with_h11, number=number // 10, repeat=5))
        / (number // 10)
        * 1e6,
    }
