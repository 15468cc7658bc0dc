"""The capacity step runner, its report, and the real search against a target of known capacity.

Most tests drive ``StepRunner`` / ``run_capacity`` with a stub in place of ``run_sides`` (a model
target whose latency grows as 10 ms / (1 - utilisation) and that errs past its capacity), so the
verdicts, the generator-limit mapping and the report are checked in milliseconds. One real-time
test runs the whole search on loopback against ``scenarios/reference-capacity.toml``.
"""

from __future__ import annotations

import math
import re
import time
from html import escape
from pathlib import Path

import orjson
import pytest
import trio

from loadgen.campaign.capacity import SearchConfig, search
from loadgen.campaign.capacity_run import (
    RunSides,
    StepPlan,
    StepRunner,
    judge,
    run_capacity,
    step_scenario,
)
from loadgen.campaign.runner import SidesOutcome
from loadgen.campaign.scenario import Scenario, load_scenario
from loadgen.commands.capacity import register
from loadgen.errors import ConfigError
from loadgen.metrics.registry import Metrics
from loadgen.metrics.thresholds import parse_threshold
from loadgen.platform.runner import PlatformResult
from loadgen.report.capacity_html import knee_rule

REFERENCE = Path(__file__).parents[2] / "scenarios" / "reference-capacity.toml"
#: 60 devices x 1 operation at a time / 200 ms each.
REFERENCE_CAPACITY = 60 / 0.200
SLO = parse_threshold("p99(complete) < 100ms")


def stub_sides(
    capacity: float, *, ceiling: float = math.inf, max_devices: int | None = None
) -> RunSides:
    """A model of both sides: records the hold a target of ``capacity`` ops/s would give; the
    generator saturates above ``ceiling``; with ``max_devices``, more devices than that err."""

    async def run(scenario: Scenario, metrics: Metrics) -> SidesOutcome:
        assert scenario.platform is not None
        stages = scenario.platform.arrival.stages
        assert [s.name for s in stages] == ["warm-up", "hold"]
        assert scenario.platform.measure_from == stages[0].duration
        rate, hold = stages[-1].rate, stages[-1].duration
        sent = round(rate * hold)
        latency_us = round(10_000 / (1 - min(rate / capacity, 0.999)))
        for phase in ("complete", "ack"):
            recorder = metrics.phase(phase)
            recorder.intended.record_us(latency_us, sent)
            recorder.service.record_us(latency_us, sent)
        too_many = max_devices is not None and scenario.devices is not None
        too_many = too_many and scenario.devices.count > max_devices  # type: ignore[union-attr]
        failed = sent // 2 if rate > capacity or too_many else 0
        metrics.counters.update(
            {"ops.sent": sent, "ops.completed": sent, "ops.succeeded": sent - failed,
             "ops.failed": failed}
        )  # fmt: skip
        saturated = rate > ceiling
        result = PlatformResult(
            started_at=1.7e9, load_duration_s=hold, duration_s=hold + 1.0, offered_rate=rate,
            achieved_rate=sent / hold, sent_rate=sent / hold, counters=dict(metrics.counters),
            peak_in_flight=1, cut_off=0, saturated=saturated,
            reasons=("CPU 99% of a core > 95%",) if saturated else (),
        )  # fmt: skip
        return SidesOutcome(platform=result, devices=None)

    return run


def plan(**changes: object) -> StepPlan:
    values: dict[str, object] = {"warmup": 1.0, "hold": 2.0, "slos": (SLO,)}
    values.update(changes)
    return StepPlan(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference() -> Scenario:
    return load_scenario(REFERENCE).scenario


# --- the step runner and its verdicts ------------------------------------------------------------


async def test_saturated_generator_is_a_generator_limit_never_a_capacity(reference):
    # every SLO holds, achieved = offered, no errors: only the generator's health says no
    runner = StepRunner(reference, plan(), run=stub_sides(10_000.0, ceiling=0.0))
    step = await runner(100.0)
    assert step.verdict == "generator_limit"
    assert step.reasons == ("generator saturated: CPU 99% of a core > 95%",)
    assert all(t["ok"] for t in step.summary["thresholds"])


async def test_search_with_the_step_runner_stops_at_the_generator_limit(reference):
    runner = StepRunner(reference, plan(), run=stub_sides(10_000.0, ceiling=700.0))
    result = await search(runner, SearchConfig(start_rate=100))
    assert [s.verdict for s in result.steps] == ["pass", "pass", "pass", "generator_limit"]
    assert result.generator_limited
    assert result.breaking_rate is None
    assert "not the target's capacity" in result.verdict_text()


async def test_search_with_the_step_runner_finds_the_model_capacity(reference):
    runner = StepRunner(reference, plan(), run=stub_sides(1000.0))
    result = await search(runner, SearchConfig(start_rate=100, resolution=0.02))
    # p99 < 100 ms  <=>  10 / (1 - u) < 100  <=>  u < 0.9
    assert result.max_sustainable_rate is not None
    assert 900 / 1.02 <= result.max_sustainable_rate < 900
    assert result.first_degraded_phase in ("complete", "ack")


@pytest.mark.parametrize(
    ("sent", "completed", "failed", "latency_ms", "verdict", "reason"),
    [
        (1000, 1000, 0, 50, "pass", None),
        (1000, 1000, 0, 150, "fail", "SLO p99(complete) < 100ms failed"),
        (1000, 970, 0, 50, "fail", "achieved 97.0/s < 98% of offered 100.0/s"),
        (1000, 1000, 11, 50, "fail", "error rate 1.10% > 1.00%"),
        (1000, 1000, 10, 50, "pass", None),
        (0, 0, 0, None, "fail", "no data for p99(complete)"),
    ],
)
def test_judge(sent, completed, failed, latency_ms, verdict, reason):
    latency = {"complete": {"count": 0 if latency_ms is None else sent, "p99": latency_ms}}
    summary = {
        "achieved_rate": completed / 10,
        "error_rate": failed / sent if sent else 0.0,
        "latency_ms": latency,
    }
    step = judge(100.0, 100.0, False, (), summary, plan())
    assert step.verdict == verdict
    if reason is None:
        assert step.reasons == ()
    else:
        assert any(reason in text for text in step.reasons), step.reasons


def test_step_scenario_replaces_the_stages_and_measures_the_hold(reference):
    step, rate = step_scenario(reference, plan(warmup=1.5, hold=4.0), 123.0)
    assert rate == 123.0
    assert step.platform is not None
    assert [(s.name, s.duration, s.rate) for s in step.platform.arrival.stages] == [
        ("warm-up", 1.5, 123.0),
        ("hold", 4.0, 123.0),
    ]
    assert step.platform.measure_from == 1.5
    assert step.devices == reference.devices
    no_warmup, _ = step_scenario(reference, plan(warmup=0.0), 10.0)
    assert no_warmup.platform is not None
    assert [s.name for s in no_warmup.platform.arrival.stages] == ["hold"]


def test_step_scenario_devices_dimension_resizes_the_fleet(reference):
    step, rate = step_scenario(reference, plan(dimension="devices"), 17.0)
    assert step.devices is not None
    assert step.devices.count == 17
    assert rate == 240.0  # the scenario's highest stage
    _, fixed = step_scenario(reference, plan(dimension="devices", rate=50.0), 17.0)
    assert fixed == 50.0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("platform.arrival.model='closed'", "platform.arrival.model"),
        ("campaign.duration='5s'", "campaign.sides"),
    ],
)
def test_scenarios_a_search_cannot_drive_are_refused(override, key):
    overrides = [override]
    if "duration" in override:
        overrides.append("campaign.sides='devices'")
    scenario = load_scenario(REFERENCE, overrides).scenario
    with pytest.raises(ConfigError, match=re.escape(key)):
        StepRunner(scenario, plan())


async def test_devices_dimension_searches_whole_device_counts(reference, tmp_path):
    loaded = load_scenario(REFERENCE)
    outcome = await run_capacity(
        loaded,
        plan(dimension="devices"),
        SearchConfig(start_rate=10, resolution=0.01),
        directory=tmp_path,
        run=stub_sides(10_000.0, max_devices=57),
        html=False,
    )
    tried = [s.offered_rate for s in outcome.result.steps]
    assert all(value == int(value) for value in tried)
    assert outcome.result.max_sustainable_rate == 57
    assert outcome.result.breaking_rate == 58
    assert outcome.document["dimension"] == "devices"
    assert outcome.document["fixed_rate"] == 240.0


# --- the run folder and capacity.html ------------------------------------------------------------


async def test_capacity_folder_json_and_self_contained_html(tmp_path):
    loaded = load_scenario(REFERENCE, ["thresholds=['p99(complete) < 100ms']"])
    written: list[int] = []
    outcome = await run_capacity(
        loaded,
        plan(),
        SearchConfig(start_rate=100, resolution=0.05),
        directory=tmp_path,
        on_step=lambda index, step: written.append(index),
        run=stub_sides(1000.0),
    )
    assert written == list(range(1, len(outcome.result.steps) + 1))
    document = orjson.loads((tmp_path / "capacity.json").read_bytes())
    assert document["finished"] is True
    assert document["max_sustainable_rate"] == outcome.result.max_sustainable_rate
    assert document["verdict"] == outcome.result.verdict_text()
    assert document["plan"]["slo_limits_ms"] == {"complete": [["p99(complete) < 100ms", 100.0]]}
    for step in document["steps"]:
        assert {"offered_rate", "achieved_rate", "verdict", "p99_ms"} <= set(step)
        assert {"p50", "p99", "p999"} <= set(step["summary"]["latency_ms"]["complete"])
        assert "error_rate" in step["summary"]
    assert (tmp_path / "scenario.toml").is_file()

    page = (tmp_path / "capacity.html").read_text(encoding="utf-8")
    assert outcome.report == tmp_path / "capacity.html"
    assert escape(outcome.result.verdict_text()) in page
    for title in (
        "Achieved vs offered rate",
        "complete: p50 / p99 / p99.9 vs offered rate",
        "ack: p50 / p99 / p99.9 vs offered rate",
        "Errors vs offered rate",
    ):
        assert f'<img alt="{title}" src="data:image/png;base64,' in page
    # the knee, and the rule that named it (p99 = 10 ms / (1 - u) bends at 800 of 1000 ops/s)
    assert outcome.result.knee_rate == 800
    assert document["knee_rate"] == 800
    assert escape(knee_rule(document)) in page
    assert "more than 2 times the p99 at the lowest rate measured" in page
    assert "p99 did not bend" not in page
    # self-contained: nothing to fetch, no script
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "@import" not in page
    assert "url(" not in page


async def test_partial_capacity_json_after_each_step(tmp_path):
    loaded = load_scenario(REFERENCE)
    seen: list[dict[str, object]] = []

    def read(index: int, step: object) -> None:
        seen.append(orjson.loads((tmp_path / "capacity.json").read_bytes()))

    await run_capacity(
        loaded,
        plan(),
        SearchConfig(start_rate=100, max_rate=200),
        directory=tmp_path,
        on_step=read,
        run=stub_sides(1000.0),
        html=False,
    )
    assert [(d["finished"], len(d["steps"])) for d in seen] == [(False, 1), (False, 2)]  # type: ignore[arg-type]


# --- the real thing --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_reference_target_capacity_is_found_within_10_percent(tmp_path):
    """Real time on loopback (a fixed 200 ms service time cannot run on the mock clock: the
    sockets are real). About 30 s: 7 steps of 1 s warm-up + 3 s hold."""
    loaded = load_scenario(REFERENCE)
    hold = 3.0
    started = time.perf_counter()
    with trio.fail_after(120):
        outcome = await run_capacity(
            loaded,
            StepPlan(warmup=1.0, hold=hold, slos=tuple(loaded.scenario.parsed_thresholds())),
            SearchConfig(start_rate=75, growth=2.0, resolution=0.05),
            directory=tmp_path,
            html=False,
        )
    elapsed = time.perf_counter() - started
    result = outcome.result
    print(f"found {result.max_sustainable_rate} ops/s in {elapsed:.1f} s: {result.verdict_text()}")
    for step in result.steps:
        print(step.offered_rate, step.verdict, step.reasons)
    assert not result.generator_limited
    assert result.max_sustainable_rate is not None
    assert abs(result.max_sustainable_rate / REFERENCE_CAPACITY - 1) <= 0.10
    assert result.breaking_rate is not None
    assert result.breaking_rate <= REFERENCE_CAPACITY * 1.10
    assert elapsed < 120
    for step in result.steps:
        # only the hold is counted: the operations intended during the warm-up are not
        assert abs(step.summary["operations"]["sent"] - step.offered_rate * hold) <= 2
        if step.verdict == "fail":  # beyond capacity the busy devices refuse: errors, not latency
            assert step.summary["results"].get("ERROR_PROCESSING", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flags", "scenario"])
def test_cli_one_step(tmp_path, capsys, how):
    """Real time (one 0.5 s step on loopback): the command line end to end. The results root
    and the HTML switch are the run commands' keys: given as flags, or set in the scenario."""
    import argparse

    parser = argparse.ArgumentParser(prog="loadgen")
    register(parser.add_subparsers(dest="command", required=True))
    output = (
        ["--results", str(tmp_path), "--no-html"]
        if how == "flags"
        else ["--set", f"output.results={str(tmp_path)!r}", "--set", "output.html=false"]
    )
    args = parser.parse_args(
        ["capacity", str(REFERENCE), "--slo", "p99(complete) < 500ms", "--start-rate", "30",
         "--max-rate", "30", "--warmup", "0", "--hold", "500ms", "--max-error-rate", "1%",
         *output]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"step  1 +30\.0 ops/s .* PASS", out), out
    assert "raise max_rate" in out
    [folder] = (tmp_path / "reference-capacity-capacity").iterdir()
    document = orjson.loads((folder / "capacity.json").read_bytes())
    assert document["exhausted"] is True
    assert not (folder / "capacity.html").exists()


def test_refused_operations_are_not_achieved():
    """Issue 15, item 6: a target that answers ALREADY_IN_PROGRESS (or a busy device's
    ERROR_PROCESSING) to half the operations completes them all, fast, but carries out half.
    With an error budget that lets the refusals through, the achieved criterion must still see
    that only 50/s of the 100/s offered were done."""
    summary = {
        "achieved_rate": 100.0,  # completed per second, refusals included
        "error_rate": 0.5,
        "operations": {"issued": 1000, "sent": 1000, "completed": 1000, "succeeded": 500,
                       "failed": 500},
        "latency_ms": {"complete": {"count": 1000, "p99": 5.0}},
    }  # fmt: skip
    step = judge(100.0, 100.0, False, (), summary, plan(max_error_rate=1.0))
    assert step.achieved_rate == 50.0
    assert step.verdict == "fail"
    assert step.reasons == (
        "achieved 50.0/s < 98% of offered 100.0/s (500 refused: not counted as achieved)",
    )
    every_one_done = {**summary, "operations": {**summary["operations"], "succeeded": 1000,
                                                "failed": 0}}  # fmt: skip
    assert judge(100.0, 100.0, False, (), every_one_done, plan(max_error_rate=1.0)).verdict == (
        "pass"
    )


async def test_the_step_runner_reports_what_succeeded_as_achieved(reference):
    """The stub target refuses half the operations past its capacity (``failed``): the step's
    achieved rate is what succeeded, and the achieved criterion fails it even with an error
    budget of 100 %."""
    runner = StepRunner(reference, plan(slos=(), max_error_rate=1.0), run=stub_sides(100.0))
    below = await runner(50.0)
    above = await runner(200.0)
    assert (below.verdict, below.achieved_rate) == ("pass", 50.0)
    assert above.achieved_rate == 100.0  # 400 completed in the 2 s hold, 200 of them refused
    assert above.summary["achieved_rate"] == 200.0  # completed per second, as the summary says
    assert above.verdict == "fail"
    assert "200 refused" in above.reasons[0]


def flat_sides(capacity: float) -> RunSides:
    """A target whose p99 stays at 10 ms whatever the rate, and that refuses half the
    operations (``ALREADY_IN_PROGRESS``) past ``capacity``: a flat latency curve."""

    async def run(scenario: Scenario, metrics: Metrics) -> SidesOutcome:
        assert scenario.platform is not None
        rate, hold = (
            scenario.platform.arrival.stages[-1].rate,
            scenario.platform.arrival.stages[-1].duration,
        )
        sent = round(rate * hold)
        metrics.phase("complete").intended.record_us(10_000, sent)
        refused = sent // 2 if rate > capacity else 0
        metrics.counters.update(
            {"ops.issued": sent, "ops.sent": sent, "ops.completed": sent,
             "ops.succeeded": sent - refused, "ops.failed": refused,
             "result.ALREADY_IN_PROGRESS": refused}
        )  # fmt: skip
        result = PlatformResult(
            started_at=1.7e9, load_duration_s=hold, duration_s=hold + 1.0, offered_rate=rate,
            achieved_rate=sent / hold, sent_rate=sent / hold, counters=dict(metrics.counters),
            peak_in_flight=1, cut_off=0, saturated=False, reasons=(),
        )  # fmt: skip
        return SidesOutcome(platform=result, devices=None)

    return run


async def test_a_flat_curve_is_reported_without_a_knee(tmp_path):
    """Issue 15, item 6: p99 flat at 10 ms while the target refuses half the operations past
    1000 ops/s. The search breaks there on the achieved criterion (the refusals are not
    achieved, though the error budget lets them through), and the page names no knee: it says
    p99 did not bend, and by which rule."""
    outcome = await run_capacity(
        load_scenario(REFERENCE),
        plan(slos=(), max_error_rate=1.0),
        SearchConfig(start_rate=100, resolution=0.05),
        directory=tmp_path,
        run=flat_sides(1000.0),
    )
    result = outcome.result
    assert result.knee_rate is None
    assert result.max_sustainable_rate is not None
    assert 1000 / 1.05 <= result.max_sustainable_rate <= 1000
    assert result.breaking_rate is not None
    assert result.breaking_rate > 1000
    assert "knee" not in result.verdict_text()
    page = (tmp_path / "capacity.html").read_text(encoding="utf-8")
    assert "none: p99 did not bend" in page
    document = orjson.loads((tmp_path / "capacity.json").read_bytes())
    assert escape(knee_rule(document)) in page
    assert "refused: not counted as achieved" in page
