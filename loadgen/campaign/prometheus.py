"""Live metrics in the Prometheus text exposition format, served by hypercorn (optional).

For users who watch runs in Grafana: ``[output] metrics_port = 9464`` (bound to 127.0.0.1
unless ``metrics_host`` says otherwise). It is an interval sink too: each interval it refreshes
the exposition from the counters and the interval histograms, so a scrape never touches the hot
path and always sees whole intervals.

Exposed: ``loadgen_counter_total{name="ops.sent"}`` for every counter, and
``loadgen_latency_seconds{phase="complete",quantile="0.99"}`` (p50/p90/p99/p999/max of the last
interval) for every recorder, plus ``loadgen_gauge{name="in_flight"}`` for numeric gauges.
"""

from __future__ import annotations

from typing import Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from loadgen.http.asgi import Receive, Scope, Send, acknowledge_lifespan
from loadgen.metrics.intervals import Interval

__all__ = ["PrometheusExporter"]

_QUANTILES: Final = (("0.5", 50.0), ("0.9", 90.0), ("0.99", 99.0), ("0.999", 99.9))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PrometheusExporter:
    def __init__(self) -> None:
        self.text = b"# no interval yet\n"

    def __repr__(self) -> str:
        return f"<PrometheusExporter {len(self.text)} bytes>"

    def __call__(self, interval: Interval) -> None:
        lines = [
            "# HELP loadgen_counter_total Cumulative counters of the run.",
            "# TYPE loadgen_counter_total counter",
        ]
        for name, value in sorted(interval.totals.items()):
            lines.append(f'loadgen_counter_total{{name="{_label(name)}"}} {value}')
        lines += [
            "# HELP loadgen_latency_seconds Latency of the last interval (HdrHistogram).",
            "# TYPE loadgen_latency_seconds gauge",
        ]
        for name, histogram in sorted(interval.histograms.items()):
            if not histogram.get_total_count():
                continue
            for quantile, percentile in _QUANTILES:
                value = histogram.get_value_at_percentile(percentile) / 1e6
                lines.append(
                    f'loadgen_latency_seconds{{phase="{_label(name)}",quantile="{quantile}"}} '
                    f"{value:.6f}"
                )
            lines.append(
                f'loadgen_latency_seconds{{phase="{_label(name)}",quantile="1"}} '
                f"{histogram.get_max_value() / 1e6:.6f}"
            )
        lines += ["# TYPE loadgen_gauge gauge"]
        for gauge, reading in sorted(interval.gauges.items()):
            if isinstance(reading, int | float):
                lines.append(f'loadgen_gauge{{name="{_label(gauge)}"}} {reading}')
        lines.append(f"loadgen_interval_end_seconds {interval.end:.3f}")
        self.text = ("\n".join(lines) + "\n").encode()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        found = scope["path"] in ("/metrics", "/")
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": self.text if found else b"not found\n"})

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status`` gets the URL."""
        config = Config()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, self.app, config)
            task_status.started(f"{binds[0]}/metrics")
