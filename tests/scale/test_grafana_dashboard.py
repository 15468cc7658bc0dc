"""The shipped Grafana dashboard queries only what the endpoint serves: every metric name in
every expression is a sample the exporter writes, and every label it matches or groups by is a
label of those samples; fed with a real run's recorders, counters and gauges."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.campaign.prometheus import PrometheusExporter
from loadgen.cli import main
from loadgen.metrics.intervals import Interval
from loadgen.report.results import load_run

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "loadgen-dashboard.json"
SMOKE = REPO / "scenarios" / "smoke.toml"
_METRIC = re.compile(r"\b(loadgen_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-z_]+)\s*(?:=~|!=|!~|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|on|group_left|group_right)\s*\(([^)]*)\)")
_PROMETHEUS_LABELS = {"le", "instance", "job"}  # le: histograms; the others: the scrape's


def _expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in _expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in _expressions(value)]
    return []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[str, str]]]:
    """Sample name -> its (label, value) pairs, from a real run's last state. Real time: one
    short campaign in this process, ~2 s."""
    results = tmp_path_factory.mktemp("results")
    argv = ["run", str(SMOKE), "--results", str(results), "-q", "--no-html", "--set"]
    code = main([*argv, 'platform.arrival.stages=[{duration="0.5s", rate=20}]'])
    assert code == 0
    [folder] = [p for p in results.glob("*/*") if p.is_dir()]
    run = load_run(folder)
    assert {"complete", "complete.service", "lateness"} <= set(run.totals)
    gauges = {k: float(v) for k, v in run.timeseries[-1].items() if re.fullmatch(r"[\d.]+", v)}
    exporter = PrometheusExporter(campaign="smoke", shard="0/1")
    end = float(orjson.loads((folder / "summary.json").read_bytes())["duration_s"])
    exporter(Interval(0, 0.0, end, dict(run.totals), {}, dict(run.counters), gauges))
    out: dict[str, set[tuple[str, str]]] = {}
    for family in text_string_to_metric_families(generate_latest(exporter.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels.items())
    return out


def test_the_dashboard_has_queries() -> None:
    expressions = _expressions(orjson.loads(DASHBOARD.read_bytes()))
    assert len(expressions) >= 10
    assert all("loadgen_" in e for e in expressions)


@pytest.mark.slow
@pytest.mark.parametrize(
    "expression", _expressions(orjson.loads(DASHBOARD.read_bytes())), ids=lambda e: e[:60]
)
def test_every_queried_metric_and_label_is_served(
    expression: str, served: dict[str, set[tuple[str, str]]]
) -> None:
    """Real time: see the fixture."""
    labels: set[str] = set(_PROMETHEUS_LABELS)
    for name, matchers in _METRIC.findall(expression):
        assert name in served, f"{name} is not served (served: {sorted(served)})"
        names = {label for label, _ in served[name]}
        labels |= names
        for label, value in _MATCHER.findall(matchers):
            assert label in names, f"{name} has no label {label}"
            if "$" not in value and not set(value) & set("|.*+"):
                assert (label, value) in served[name], f"{name}{{{label}={value!r}}} never served"
    for group in _GROUPING.findall(expression):
        for label in filter(None, (part.strip() for part in group.split(","))):
            assert label in labels, f"grouping by {label}, a label none of its metrics has"
