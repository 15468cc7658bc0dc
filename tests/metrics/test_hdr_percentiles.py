"""``values_at`` answers exactly what HdrHistogram_py's ``get_value_at_percentile`` answers.

The summary, the live dashboard and the plots ask for many percentiles per histogram inside the
event loop; ``values_at`` does it in one vectorised pass. It is only allowed to be faster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.metrics.hdr import HIGHEST_US, new_histogram, percentiles_ms, values_at

EDGES = [0.0, 0.001, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0, 150.0]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.integers(min_value=0, max_value=HIGHEST_US), st.integers(1, 1000)),
        min_size=1,
        max_size=40,
    ),
    percentiles=st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=10),
)
def test_values_at_is_get_value_at_percentile(
    values: list[tuple[int, int]], percentiles: list[float]
) -> None:
    histogram = new_histogram()
    for value, count in values:
        histogram.record_value(value, count)
    asked = [*EDGES, *percentiles]
    assert values_at(histogram, asked) == [histogram.get_value_at_percentile(p) for p in asked]


def test_an_empty_histogram_and_the_summary_figures() -> None:
    empty = new_histogram()
    assert values_at(empty, [50.0, 100.0]) == [0, 0]
    histogram = new_histogram()
    for us in range(1, 10_001):
        histogram.record_value(us)
    figures = percentiles_ms(histogram)
    assert figures["p50"] == histogram.get_value_at_percentile(50.0) / 1000
    assert figures["p999"] == histogram.get_value_at_percentile(99.9) / 1000
    assert figures["count"] == 10_000
