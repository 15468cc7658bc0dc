"""Live metrics for Prometheus: the official ``prometheus_client`` registry and text format,
served by hypercorn (optional).

For users who watch runs in Grafana: ``[output] metrics_port = 9464`` (bound to ``metrics_host``,
127.0.0.1 unless it says otherwise; 0.0.0.0 in a Kubernetes pod, where Prometheus scrapes it).
It is an interval sink too: each interval it folds the counters, gauges and interval histograms
into its state, and a scrape renders that state, so a scrape never touches the hot path and
always sees whole intervals. The format is ``prometheus_client``'s, negotiated from the
scraper's ``Accept`` header (the classic text format, or OpenMetrics when asked for).

Families (one per meaning, HELP and TYPE on each; every pod of a sharded run serves its own,
labelled with its shard, so ``sum`` over pods is the campaign):

- ``loadgen_operations_sent_total`` and ``loadgen_operations_total{outcome}`` (counters; the
  outcomes succeeded, failed, timed_out and error partition what was sent and answered);
- ``loadgen_events_total{name}``: every other counter of the run (errors by cause, device and
  south API events), by its name in ``counters.jsonl``;
- ``loadgen_latency_seconds{phase}`` (from the intended time), ``loadgen_service_time_seconds
  {phase}`` (from the actual send) and ``loadgen_generator_delay_seconds{measure}`` (scheduler
  lateness, event-loop lag): cumulative histograms, so quantiles over pods are
  ``histogram_quantile(0.99, sum by (le) (rate(...[1m])))``. Bucket counts come from the
  HdrHistograms, exact to their 3 significant digits;
- gauges: ``loadgen_in_flight``, ``loadgen_offered_operations_per_second``,
  ``loadgen_cpu_ratio``, ``loadgen_elapsed_seconds`` and ``loadgen_info{campaign,shard}``.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import trio
from hdrh.histogram import HdrHistogram
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from loadgen.http.asgi import Receive, Scope, Send, acknowledge_lifespan
from loadgen.metrics.hdr import mean_us, new_histogram
from loadgen.metrics.intervals import Interval

__all__ = ["BUCKETS", "FAMILIES", "PrometheusExporter"]

#: Upper bounds of the latency buckets, seconds (+Inf is added).
BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
#: counter -> outcome label of ``loadgen_operations_total``
OUTCOMES: Final = {
    "ops.succeeded": "succeeded",
    "ops.failed": "failed",
    "ops.timed_out": "timed_out",
    "ops.errors": "error",
}
#: Every family the endpoint serves (the Grafana dashboard may query only these).
FAMILIES: Final = (
    "loadgen_operations_sent_total",
    "loadgen_operations_total",
    "loadgen_events_total",
    "loadgen_latency_seconds",
    "loadgen_service_time_seconds",
    "loadgen_generator_delay_seconds",
    "loadgen_in_flight",
    "loadgen_offered_operations_per_second",
    "loadgen_cpu_ratio",
    "loadgen_elapsed_seconds",
    "loadgen_info",
)
_SERVICE: Final = ".service"


@dataclass(slots=True)
class _Buckets:
    """A cumulative histogram of one recorder since the start: counts per bucket and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: int = 0
    sum: float = 0.0

    def add(self, histogram: HdrHistogram) -> None:
        """Fold one interval in: a value counts in the first bucket whose bound is at or above
        its HDR bucket's highest equivalent value. Vectorised over the counts array (walking
        HdrHistogram_py's recorded iterator in Python took ~25 ms per recorder and interval,
        inside the event loop, which made the sender late)."""
        count = histogram.get_total_count()
        if not count:
            return
        counts = np.frombuffer(histogram.counts, dtype=np.uint64)[: histogram.counts_len]
        below = np.cumsum(counts, dtype=np.uint64)
        last = _edges(histogram)  # per bound: the last counts index inside it
        cumulative = [int(below[i]) if i >= 0 else 0 for i in last] + [int(below[-1])]
        previous = 0
        for index, running in enumerate(cumulative):
            self.counts[index] += running - previous
            previous = running
        self.total += count
        self.sum += mean_us(histogram) * count / 1e6

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@functools.cache
def _edges_of(lowest: int, highest: int, digits: int) -> tuple[int, ...]:
    """For one histogram layout: the last counts index at or below each bound."""
    probe = HdrHistogram(lowest, highest, digits)
    tops = [
        probe.get_highest_equivalent_value(probe.get_value_from_index(index)) / 1e6
        for index in range(probe.counts_len)
    ]
    return tuple(bisect_right(tops, bound) - 1 for bound in BUCKETS)


def _edges(histogram: HdrHistogram) -> tuple[int, ...]:
    return _edges_of(
        histogram.lowest_trackable_value,
        histogram.highest_trackable_value,
        histogram.significant_figures,
    )


def _kind(name: str, names: set[str]) -> tuple[str, str]:
    """(family, label value) of a recorder: a phase, its service-time twin, or a single."""
    if name.endswith(_SERVICE):
        return "loadgen_service_time_seconds", name[: -len(_SERVICE)]
    if name + _SERVICE in names:
        return "loadgen_latency_seconds", name
    return "loadgen_generator_delay_seconds", name


_HELP: Final = {
    "loadgen_latency_seconds": "Latency of operations from their intended send time, by phase.",
    "loadgen_service_time_seconds": "Latency of operations from their actual send, by phase.",
    "loadgen_generator_delay_seconds": "The generator's own delays: scheduler lateness and "
    "event-loop lag.",
}
_LABEL: Final = {
    "loadgen_latency_seconds": "phase",
    "loadgen_service_time_seconds": "phase",
    "loadgen_generator_delay_seconds": "measure",
}


class PrometheusExporter:
    """An interval sink and a ``prometheus_client`` collector, served over HTTP by hypercorn."""

    def __init__(self, *, campaign: str = "", shard: str = "0/1") -> None:
        self.campaign = campaign
        self.shard = shard
        self.totals: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.elapsed = 0.0
        self.histograms: dict[str, _Buckets] = {}
        self.names: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # The bucket bounds of our histograms' layout (a Python walk over its 23,552 buckets)
        # are found now, at start-up, not in the first interval, inside the event loop.
        _edges(new_histogram())

    def __repr__(self) -> str:
        return f"<PrometheusExporter {self.campaign} {self.shard}>"

    def __call__(self, interval: Interval) -> None:
        self.totals = dict(interval.totals)
        self.gauges = {
            name: float(value)
            for name, value in interval.gauges.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        self.elapsed = interval.end
        self.names |= set(interval.histograms)
        for name, histogram in interval.histograms.items():
            self.histograms.setdefault(name, _Buckets()).add(histogram)

    def collect(self) -> Iterator[Metric]:
        """The families (``prometheus_client``'s collector protocol, called at each scrape)."""
        sent = CounterMetricFamily(
            "loadgen_operations_sent", "Operations sent to the devices (or targets)."
        )
        sent.add_metric([], self.totals.get("ops.sent", 0))
        yield sent
        outcomes = CounterMetricFamily(
            "loadgen_operations",
            "Operations that ended, by outcome: succeeded, failed (answered with an error "
            "result), timed_out, error (transport or protocol).",
            labels=["outcome"],
        )
        for counter, outcome in OUTCOMES.items():
            outcomes.add_metric([outcome], self.totals.get(counter, 0))
        yield outcomes
        events = CounterMetricFamily(
            "loadgen_events",
            "Every other counter of the run, by its name in counters.jsonl.",
            labels=["name"],
        )
        for name, value in sorted(self.totals.items()):
            if name != "ops.sent" and name not in OUTCOMES:
                events.add_metric([name], value)
        yield events
        families: dict[str, HistogramMetricFamily] = {
            family: HistogramMetricFamily(family, help_text, labels=[_LABEL[family]])
            for family, help_text in _HELP.items()
        }
        for name, buckets in sorted(self.histograms.items()):
            family, label = _kind(name, self.names)
            families[family].add_metric([label], buckets.cumulative(), buckets.sum)
        yield from families.values()
        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        specs = (
            ("loadgen_in_flight", "Operations sent and not yet ended.", "in_flight", 1.0),
            (
                "loadgen_offered_operations_per_second",
                "What the schedule asked for over the last interval.",
                "offered_rate",
                1.0,
            ),
            ("loadgen_cpu_ratio", "CPU time of this process per second.", "cpu_percent", 0.01),
        )
        for family, help_text, gauge, scale in specs:
            metric = GaugeMetricFamily(family, help_text)
            if gauge in self.gauges:
                metric.add_metric([], self.gauges[gauge] * scale)
            yield metric
        yield GaugeMetricFamily(
            "loadgen_elapsed_seconds",
            "Seconds since the load started, at the end of the last interval.",
            value=self.elapsed,
        )
        info = GaugeMetricFamily(
            "loadgen_info",
            "The campaign and shard this process runs.",
            labels=["campaign", "shard"],
        )
        info.add_metric([self.campaign, self.shard], 1)
        yield info

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] not in ("/metrics", "/"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"not found\n"})
            return
        accept = ",".join(
            value.decode("latin-1") for key, value in scope["headers"] if key.lower() == b"accept"
        )
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status`` gets the URL."""
        config = Config()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, self.app, config)
            task_status.started(f"{binds[0]}/metrics")
