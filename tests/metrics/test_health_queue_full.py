"""The one verdict on the generator names refusals at the queue's bound."""

from __future__ import annotations

from loadgen.metrics.health import HealthLimits, saturation_reasons


def test_refusals_at_the_queue_bound_are_a_saturation_reason() -> None:
    quiet = {"lateness_p99_ms": 0.5, "loop_lag_p99_ms": 0.5, "cpu_percent": 30.0}
    assert saturation_reasons(HealthLimits(), **quiet) == []
    assert saturation_reasons(HealthLimits(), **quiet, queue_full=0) == []
    assert saturation_reasons(HealthLimits(), **quiet, queue_full=7) == [
        "7 operations refused: the generator's queue was full"
    ]
