"""``loadgen capacity``: the step runner the capacity search drives, and the search's run folder.

Theory of operation
-------------------
``loadgen.campaign.capacity.search`` only asks for ``run_step(value) -> StepResult``. Here a
step is one in-process run of the scenario's sides (``run_sides``: the platform, and the fleet
it loads when sides = "both"), exactly as ``loadgen run`` starts them, with the stages replaced
by two at the step's rate: a **warm-up** (connections opened, queues filled, caches warm) and a
**hold**. Only the hold is judged: the platform's ``measure_from`` records operations *intended*
during the warm-up into a separate ``Metrics`` (``loadgen.platform.measured``), so the step's
summary (latencies per phase, counters, achieved rate per second of hold) describes the
operations intended in the hold, whenever they ended.

``--dimension devices`` searches the fleet size instead: the rate is fixed, the step parameter
is the device count (``devices.count``, or the platform's ``targets.count`` when the fleet is
not ours), and the search tries whole numbers only.

The verdict of a step (``judge``, pure):

- ``generator_limit`` when the platform says the generator was saturated (send lateness, loop
  lag or CPU over its limits, ``PlatformResult.saturated``): the numbers describe this process,
  not the target, whatever they are;
- ``pass`` when every SLO holds on the hold's summary, achieved >= ``min_achieved_ratio`` x
  offered and the error rate (failed + timed out + errors over issued) <= ``max_error_rate``.
  *Achieved* here is what the target carried out: operations completed ``SUCCESSFUL`` per second
  of the hold (``achieved``). A refusal (a final answer with any other code:
  ``ALREADY_IN_PROGRESS``, a busy device's ``ERROR_PROCESSING``, ...) ends an operation, often
  fast, but is no throughput: counted as achieved, a target that refuses everything past its
  capacity would look as if it kept up;
- ``fail`` otherwise, with the reasons.

``run_capacity`` writes ``capacity.json`` after every step (a killed search leaves every step it
measured) and, at the end, the result and ``capacity.html``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from loadgen.campaign.capacity import CapacityResult, SearchConfig, StepResult, search
from loadgen.campaign.runner import SidesOutcome, run_sides
from loadgen.campaign.scenario import LoadedScenario, Scenario
from loadgen.errors import ConfigError
from loadgen.metrics.registry import Metrics
from loadgen.metrics.thresholds import Threshold
from loadgen.platform.config import Stage
from loadgen.report.summary import PHASES, build_summary, histograms_of

__all__ = [
    "CAPACITY_JSON",
    "CapacityOutcome",
    "Dimension",
    "StepPlan",
    "StepRunner",
    "achieved",
    "format_step",
    "judge",
    "run_capacity",
    "step_scenario",
]

Dimension = Literal["rate", "devices"]
CAPACITY_JSON: Final = "capacity.json"
SCHEMA_VERSION: Final = 1

RunSides = Callable[[Scenario, Metrics], Awaitable[SidesOutcome]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPlan:
    """How each step runs and is judged. ``rate`` is the fixed rate of the devices dimension
    (None: the scenario's highest stage rate)."""

    dimension: Dimension = "rate"
    warmup: float = 3.0
    hold: float = 10.0
    slos: tuple[Threshold, ...] = ()
    max_error_rate: float = 0.01
    min_achieved_ratio: float = 0.98
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.dimension not in ("rate", "devices"):
            raise ConfigError(
                f"expected rate or devices, got {self.dimension!r}", key="capacity.dimension"
            )
        if not self.warmup >= 0:
            raise ConfigError(f"expected >= 0 s, got {self.warmup!r}", key="capacity.warmup")
        if not self.hold > 0:
            raise ConfigError(f"expected > 0 s, got {self.hold!r}", key="capacity.hold")
        if not 0 <= self.max_error_rate <= 1:
            raise ConfigError(
                f"expected a fraction in [0, 1], got {self.max_error_rate!r}",
                key="capacity.max_error_rate",
            )
        if not 0 < self.min_achieved_ratio <= 1:
            raise ConfigError(
                f"expected a ratio in (0, 1], got {self.min_achieved_ratio!r}",
                key="capacity.min_achieved_ratio",
            )
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"expected a rate > 0, got {self.rate!r}", key="capacity.rate")

    def latency_limits(self) -> dict[str, list[tuple[str, float]]]:
        """The SLOs that are a latency of one phase under a constant, by phase (ms), for the
        report's SLO lines: ``{"complete": [("p99(complete) < 500ms", 500.0)]}``."""
        out: dict[str, list[tuple[str, float]]] = {}
        for slo in self.slos:
            key = slo.metric.key
            if slo.metric.kind == "latency" and key[0] == "latency_ms" and slo.other is None:
                out.setdefault(key[1], []).append((slo.expression, slo.factor))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "warmup_s": self.warmup,
            "hold_s": self.hold,
            "slos": [slo.expression for slo in self.slos],
            "slo_limits_ms": self.latency_limits(),
            "max_error_rate": self.max_error_rate,
            "min_achieved_ratio": self.min_achieved_ratio,
            "rate": self.rate,
        }


def _check_scenario(scenario: Scenario) -> None:
    platform = scenario.platform
    if platform is None or scenario.campaign.sides == "devices":
        raise ConfigError(
            "a capacity search drives the load: it needs a platform side (sides = both or "
            "platform)",
            key="campaign.sides",
        )
    if platform.arrival.model == "closed":
        raise ConfigError(
            "a capacity search offers rates: expected an open or poisson arrival model",
            key="platform.arrival.model",
        )


def fixed_rate(scenario: Scenario, plan: StepPlan) -> float:
    """The rate of every step of the devices dimension."""
    if plan.rate is not None:
        return plan.rate
    assert scenario.platform is not None
    return max(stage.rate for stage in scenario.platform.arrival.stages)


def step_scenario(scenario: Scenario, plan: StepPlan, value: float) -> tuple[Scenario, float]:
    """The scenario of one step and its offered rate: the stages replaced by a warm-up and a
    hold at the rate, measured from the end of the warm-up; in the devices dimension, the
    fleet (or the target list) resized to ``value`` devices."""
    _check_scenario(scenario)
    platform = scenario.platform
    assert platform is not None
    devices = scenario.devices
    if plan.dimension == "rate":
        rate = value
    else:
        rate = fixed_rate(scenario, plan)
        count = int(value)
        if scenario.campaign.sides == "both" and devices is not None:
            devices = dataclasses.replace(devices, count=count)
        elif platform.targets.devices:
            if count > len(platform.targets.devices):
                raise ConfigError(
                    f"{count} devices asked, the target list has {len(platform.targets.devices)}",
                    key="platform.targets",
                )
            targets = dataclasses.replace(
                platform.targets, devices=platform.targets.devices[:count]
            )
            platform = dataclasses.replace(platform, targets=targets)
        else:
            platform = dataclasses.replace(
                platform, targets=dataclasses.replace(platform.targets, count=count)
            )
    stages = [Stage(duration=plan.hold, rate=rate, name="hold")]
    if plan.warmup > 0:
        stages.insert(0, Stage(duration=plan.warmup, rate=rate, name="warm-up"))
    arrival = dataclasses.replace(platform.arrival, stages=tuple(stages))
    platform = dataclasses.replace(platform, arrival=arrival, measure_from=plan.warmup)
    step = scenario.model_copy(update={"platform": platform, "devices": devices})
    return step, rate


def achieved(summary: Mapping[str, Any]) -> float:
    """Operations completed ``SUCCESSFUL`` per second of the hold (see the module docstring):
    the summary's ``achieved_rate`` (completed per second) less its refused share."""
    rate = float(summary.get("achieved_rate") or 0.0)
    operations: Mapping[str, Any] = summary.get("operations") or {}
    completed = operations.get("completed")
    if completed:
        rate *= int(operations.get("succeeded", 0)) / int(completed)
    return rate


def judge(
    value: float,
    offered_rate: float,
    saturated: bool,
    generator_reasons: Sequence[str],
    summary: Mapping[str, Any],
    plan: StepPlan,
) -> StepResult:
    """The verdict of one step from its hold's summary (see the module docstring)."""
    evaluated = [slo.evaluate(summary) for slo in plan.slos]
    latency: Mapping[str, Mapping[str, Any]] = summary.get("latency_ms") or {}
    p99 = {
        phase: latency[phase].get("p99")
        for phase in PHASES
        if (latency.get(phase) or {}).get("count")
    }
    succeeded = achieved(summary)
    error_rate = float(summary.get("error_rate") or 0.0)
    out = {**summary, "thresholds": [item.as_dict() for item in evaluated]}
    if saturated:
        return StepResult(
            offered_rate=value,
            achieved_rate=succeeded,
            verdict="generator_limit",
            reasons=("generator saturated: " + "; ".join(generator_reasons),),
            p99_ms=p99,
            summary=out,
        )
    reasons = [
        f"SLO {item.expression} failed (actual {item.actual if item.actual is not None else '-'}"
        + (f": {item.reason})" if item.reason else ")")
        for item in evaluated
        if not item.ok
    ]
    if succeeded < plan.min_achieved_ratio * offered_rate:
        refused = int((summary.get("operations") or {}).get("failed", 0))
        reasons.append(
            f"achieved {succeeded:.1f}/s < {plan.min_achieved_ratio:.0%} of offered "
            f"{offered_rate:.1f}/s"
            + (f" ({refused} refused: not counted as achieved)" if refused else "")
        )
    if error_rate > plan.max_error_rate:
        reasons.append(f"error rate {error_rate:.2%} > {plan.max_error_rate:.2%}")
    return StepResult(
        offered_rate=value,
        achieved_rate=succeeded,
        verdict="fail" if reasons else "pass",
        reasons=tuple(reasons),
        p99_ms=p99,
        summary=out,
    )


class StepRunner:
    """``run_step(value)`` for the search: one warm-up + hold of ``scenario`` (see the module
    docstring). ``run`` runs the sides (``run_sides``; a test passes a stub)."""

    def __init__(self, scenario: Scenario, plan: StepPlan, *, run: RunSides = run_sides) -> None:
        _check_scenario(scenario)
        self.scenario = scenario
        self.plan = plan
        self._run = run
        self.steps = 0

    def __repr__(self) -> str:
        return (
            f"<StepRunner {self.scenario.campaign.name} {self.plan.dimension} steps={self.steps}>"
        )

    async def __call__(self, value: float) -> StepResult:
        step, rate = step_scenario(self.scenario, self.plan, value)
        metrics = Metrics()
        outcome = await self._run(step, metrics)
        self.steps += 1
        result = outcome.platform
        info = result.run_info()
        info["campaign"] = self.scenario.campaign.name
        info["extra"] = {"step": {"value": value, "rate": rate, "warmup_s": self.plan.warmup}}
        if outcome.devices is not None:
            info["extra"]["devices"] = outcome.devices
        summary = build_summary(histograms_of(metrics), metrics.counters, info)
        return judge(value, rate, result.saturated, result.reasons, summary, self.plan)


def format_step(index: int, step: StepResult, dimension: Dimension) -> str:
    """The live line of one step."""
    unit = "devices" if dimension == "devices" else "ops/s"
    summary = step.summary
    phases = ", ".join(
        f"{phase} {'-' if p99 is None else f'{p99:.1f}'} ms" for phase, p99 in step.p99_ms.items()
    )
    error_rate = float(summary.get("error_rate") or 0.0)
    line = (
        f"step {index:>2}  {step.offered_rate:>10.1f} {unit}  achieved {step.achieved_rate:>10.1f}/s"
        f"  p99 {phases or '-'}  errors {error_rate:.2%}  {step.verdict.upper()}"
    )
    if step.reasons and step.verdict != "pass":
        line += "  (" + "; ".join(step.reasons) + ")"
    return line


@dataclass(frozen=True, slots=True)
class CapacityOutcome:
    directory: Path
    result: CapacityResult
    document: dict[str, Any]
    report: Path | None


def _write(path: Path, document: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    tmp.replace(path)


async def run_capacity(
    loaded: LoadedScenario,
    plan: StepPlan,
    config: SearchConfig,
    *,
    directory: Path,
    on_step: Callable[[int, StepResult], None] = lambda index, step: None,
    run: RunSides = run_sides,
    html: bool = True,
) -> CapacityOutcome:
    """Search the capacity of ``loaded`` and write into ``directory``, which must exist
    (``scenario.toml``, ``capacity.json`` after every step, ``capacity.html`` at the end)."""
    scenario = loaded.scenario
    runner = StepRunner(scenario, plan, run=run)
    if plan.dimension == "devices" and not config.integral:
        config = dataclasses.replace(config, integral=True)
    loaded.save(directory / "scenario.toml")
    head: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "campaign": scenario.campaign.name,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dimension": plan.dimension,
        "fixed_rate": fixed_rate(scenario, plan) if plan.dimension == "devices" else None,
        "devices": None if scenario.devices is None else scenario.devices.count,
        "plan": plan.as_dict(),
        "search": {
            "start": config.start_rate,
            "growth": config.growth,
            "max": config.max_rate,
            "resolution": config.resolution,
            "max_steps": config.max_steps,
            "knee_factor": config.knee_factor,
        },
    }
    steps: list[StepResult] = []
    path = directory / CAPACITY_JSON
    started = time.perf_counter()

    def step_done(step: StepResult) -> None:
        steps.append(step)
        _write(path, {**head, "finished": False, "steps": [s.as_dict() for s in steps]})
        on_step(len(steps), step)

    result = await search(runner, config, on_step=step_done)
    document = {
        **head,
        "finished": True,
        "duration_s": round(time.perf_counter() - started, 3),
        **result.as_dict(),
    }
    _write(path, document)
    report = None
    if html:
        from loadgen.report.capacity_html import write_capacity_report

        report = write_capacity_report(directory, document)
    return CapacityOutcome(directory=directory, result=result, document=document, report=report)
