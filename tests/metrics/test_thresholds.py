import pytest

from loadgen.errors import ConfigError
from loadgen.metrics.thresholds import parse_threshold

SUMMARY = {
    "offered_rate": 100.0,
    "achieved_rate": 99.0,
    "sent_rate": 100.0,
    "error_rate": 0.0005,
    "operations": {"sent": 1000, "completed": 990, "timed_out": 0, "errors": 10, "failed": 3},
    "latency_ms": {
        "complete": {"p50": 12.0, "p90": 80.0, "p99": 240.0, "p999": 900.0, "max": 1500.0},
        "ack": {"p99": 3.5},
        "first_response": {"p99": None},
    },
    "generator": {"lateness_ms": {"p99": 0.8}},
}

PASSING = [
    ("p99(complete) < 250ms", 240.0, 250.0),
    ("p99.9(complete) <= 1s", 900.0, 1000.0),
    ("max(complete) > 1400000us", 1500.0, 1400.0),
    ("error_rate < 0.1%", 0.0005, 0.001),
    ("error_rate <= 0.001", 0.0005, 0.001),
    ("timeouts == 0", 0.0, 0.0),
    ("errors != 0", 10.0, 0.0),
    ("achieved_rate >= 0.98 * offered_rate", 99.0, 98.0),
    ("sent_rate >= offered_rate", 100.0, 100.0),
    ("p99(lateness) < 1ms", 0.8, 1.0),
    ("  p50(complete)<15ms ", 12.0, 15.0),
]


@pytest.mark.parametrize(("expression", "actual", "limit"), PASSING)
def test_passing_thresholds(expression, actual, limit):
    result = parse_threshold(expression).evaluate(SUMMARY)
    assert result.ok, result
    assert result.actual == pytest.approx(actual)
    assert result.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    "expression",
    [
        "p99(complete) < 200ms",
        "timeouts > 0",
        "achieved_rate >= 0.995 * offered_rate",
        "failed == 0",
    ],
)
def test_failing_thresholds(expression):
    assert not parse_threshold(expression).evaluate(SUMMARY).ok


def test_missing_data_fails_instead_of_passing_vacuously():
    result = parse_threshold("p99(first_response) < 1s").evaluate(SUMMARY)
    assert not result.ok
    assert result.reason == "no data for p99(first_response)"


BAD = [
    ("p99(compete) < 250ms", "unknown latency phase 'compete'"),
    ("p98(complete) < 250ms", "unknown statistic 'p98'"),
    ("p99(complete) < 250", "a latency needs a unit (us, ms or s)"),
    ("eror_rate < 1%", "unknown metric 'eror_rate'"),
    ("timeouts = 0", "expected METRIC OP VALUE"),
    ("timeouts == 5%", "% only applies to error_rate"),
    ("achieved_rate >= 0.9 * p99(complete)", "cannot compare achieved_rate (rate)"),
    ("timeouts == lots", "unknown metric 'lots'"),
]


@pytest.mark.parametrize(("expression", "message"), BAD)
def test_bad_expressions_name_key_and_expectation(expression, message):
    with pytest.raises(ConfigError) as info:
        parse_threshold(expression, key="thresholds[2]")
    assert message in str(info.value)
    assert str(info.value).startswith("thresholds[2]: ")
