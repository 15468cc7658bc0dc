import httpx
import trio

from loadgen.campaign.prometheus import PrometheusExporter
from loadgen.metrics import Metrics
from loadgen.metrics.intervals import Interval


async def test_exposition_served_by_hypercorn():
    metrics = Metrics(["complete"])
    for ms in range(1, 101):
        metrics.phase("complete").record(ms / 1000, ms / 2000)
    metrics.count("ops.sent", 100)
    exporter = PrometheusExporter()
    histograms = {r.name: r.rollover() for r in metrics.recorders()}
    exporter(
        Interval(
            0,
            0.0,
            1.0,
            histograms,
            {"ops.sent": 100},
            {"ops.sent": 100},
            {"in_flight": 3, "stage": "hold"},
        )
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(exporter.serve, "127.0.0.1", 0)
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
            missing = await client.get(url.replace("/metrics", "/nope"))
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'loadgen_counter_total{name="ops.sent"} 100' in text
    assert 'loadgen_latency_seconds{phase="complete",quantile="0.99"} 0.099' in text
    assert 'loadgen_gauge{name="in_flight"} 3' in text
    assert "stage" not in text  # non-numeric gauges are not exposed
    assert missing.status_code == 404
