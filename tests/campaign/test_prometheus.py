"""The live endpoint: ``prometheus_client``'s registry and format, served by hypercorn; one family
per meaning with HELP and TYPE, histograms cumulative over intervals and exact in their counts."""

from __future__ import annotations

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from loadgen.campaign.prometheus import FAMILIES, PrometheusExporter
from loadgen.metrics import Metrics
from loadgen.metrics.intervals import Interval


def _interval(metrics: Metrics, index: int, totals: dict[str, int], **gauges: object) -> Interval:
    histograms = {r.name: r.rollover() for r in metrics.recorders()}
    return Interval(index, float(index), index + 1.0, histograms, {}, totals, dict(gauges))


async def _scrape(
    exporter: PrometheusExporter, path: str = "/metrics", **headers: str
) -> httpx.Response:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(exporter.serve, "127.0.0.1", 0)
        async with httpx.AsyncClient() as client:
            response = await client.get(url.replace("/metrics", path), headers=headers)
        nursery.cancel_scope.cancel()
    return response


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_families_counts_and_cumulative_histograms() -> None:
    metrics = Metrics(["complete"])
    for seconds in (0.0007, 0.0007, 0.0007, 0.020, 0.020):
        metrics.phase("complete").record(seconds, seconds / 2)
    metrics.single("lateness").record(0.0003)
    exporter = PrometheusExporter(campaign="smoke", shard="1/4")
    totals = {"ops.sent": 9, "ops.succeeded": 5, "ops.timed_out": 1, "transport.connect": 2}
    exporter(_interval(metrics, 0, totals, in_flight=3, stage="hold", cpu_percent=42.0))
    metrics.phase("complete").record(2.0, 1.0)  # the next interval adds to the same histogram
    exporter(_interval(metrics, 1, totals, in_flight=2, offered_rate=9.5))

    response = await _scrape(exporter)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    for family in FAMILIES:  # HELP and TYPE on every family, even one without samples yet
        name = family.removesuffix("_total")
        assert f"# HELP {name}" in text or f"# HELP {family}" in text, family
        assert f"# TYPE {name}" in text or f"# TYPE {family}" in text, family
    samples = _samples(text)
    assert samples[("loadgen_operations_sent_total", ())] == 9
    outcomes = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "loadgen_operations_total"
    }
    assert outcomes == {"succeeded": 5, "failed": 0, "timed_out": 1, "error": 0}
    assert samples[("loadgen_events_total", (("name", "transport.connect"),))] == 2
    assert ("loadgen_events_total", (("name", "ops.sent"),)) not in samples  # not twice

    def bucket(family: str, label: str, value: str, le: str) -> float:
        return samples[(f"{family}_bucket", tuple(sorted(((label, value), ("le", le)))))]

    latency = "loadgen_latency_seconds"
    assert bucket(latency, "phase", "complete", "0.0005") == 0
    assert bucket(latency, "phase", "complete", "0.001") == 3
    assert bucket(latency, "phase", "complete", "0.025") == 5
    assert bucket(latency, "phase", "complete", "1.0") == 5
    assert bucket(latency, "phase", "complete", "2.5") == 6
    assert bucket(latency, "phase", "complete", "+Inf") == 6
    assert samples[(f"{latency}_count", (("phase", "complete"),))] == 6
    assert samples[(f"{latency}_sum", (("phase", "complete"),))] == pytest.approx(
        3 * 0.0007 + 2 * 0.020 + 2.0, rel=1e-3
    )
    service = "loadgen_service_time_seconds"
    assert bucket(service, "phase", "complete", "0.001") == 3  # the 0.35 ms halves
    assert bucket(service, "phase", "complete", "0.025") == 5  # and the 10 ms ones
    assert bucket(service, "phase", "complete", "+Inf") == 6
    delay = "loadgen_generator_delay_seconds"
    assert bucket(delay, "measure", "lateness", "0.0005") == 1
    assert samples[("loadgen_in_flight", ())] == 2  # the last interval's
    assert samples[("loadgen_offered_operations_per_second", ())] == 9.5
    assert ("loadgen_cpu_ratio", ()) not in samples  # not in the last interval
    assert samples[("loadgen_elapsed_seconds", ())] == 2.0
    assert samples[("loadgen_info", (("campaign", "smoke"), ("shard", "1/4")))] == 1
    assert "stage" not in text  # non-numeric gauges are not exposed


async def test_cpu_is_a_ratio_and_openmetrics_on_request() -> None:
    exporter = PrometheusExporter()
    exporter(_interval(Metrics(), 0, {}, cpu_percent=42.0))
    response = await _scrape(exporter, Accept="application/openmetrics-text; version=1.0.0")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "loadgen_cpu_ratio 0.42" in response.text
    assert response.text.rstrip().endswith("# EOF")


async def test_before_any_interval_and_elsewhere() -> None:
    exporter = PrometheusExporter()
    empty = await _scrape(exporter)
    missing = await _scrape(exporter, "/nope")
    assert empty.status_code == 200
    assert _samples(empty.text)[("loadgen_operations_sent_total", ())] == 0
    assert missing.status_code == 404
