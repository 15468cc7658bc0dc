"""Measurement: HDR latency recorders per phase, counters, interval logs, generator health."""

from loadgen.metrics.hdr import (
    HIGHEST_US,
    LOWEST_US,
    SIGNIFICANT_FIGURES,
    LatencyRecorder,
    new_histogram,
    percentiles_ms,
)
from loadgen.metrics.registry import Metrics, PhaseRecorder

__all__ = [
    "HIGHEST_US",
    "LOWEST_US",
    "SIGNIFICANT_FIGURES",
    "LatencyRecorder",
    "Metrics",
    "PhaseRecorder",
    "new_histogram",
    "percentiles_ms",
]
