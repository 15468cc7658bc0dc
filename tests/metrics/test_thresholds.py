import pytest

from loadgen.errors import ConfigError
from loadgen.metrics.thresholds import parse_threshold
from loadgen.report.summary import build_summary

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


# --- boundaries: every operator on both sides of and exactly at its limit -------------------
#
# (summary, metric, literal equal to the summary's value, one just below it, one just above):
# latencies in each unit, ratios as a fraction and as a percentage, counts, rates and a
# metric against another. The values are what a summary really holds (µs / 1000, rounded
# ratios and rates), and the literals are how a user would write the same number.
LATENCY_1234US = {"latency_ms": {"complete": {"p99": 1234 / 1000}}}
BOUNDARIES = [
    ({"latency_ms": {"complete": {"p99": 240.0}}}, "p99(complete)", "240ms", "239ms", "241ms"),
    (LATENCY_1234US, "p99(complete)", "1.234ms", "1.233ms", "1.235ms"),
    (LATENCY_1234US, "p99(complete)", "1234us", "1233us", "1235us"),
    (LATENCY_1234US, "p99(complete)", "1234µs", "1233µs", "1235µs"),
    (LATENCY_1234US, "p99(complete)", "0.001234s", "0.001233s", "0.001235s"),
    ({"latency_ms": {"ack": {"max": 113 / 1000}}}, "max(ack)", "0.000113s", "112us", "114us"),
    ({"generator": {"lateness_ms": {"p99": 0.8}}}, "p99(lateness)", "800us", "0.7ms", "0.9ms"),
    ({"error_rate": round(7 / 1000, 6)}, "error_rate", "0.7%", "0.6%", "0.8%"),
    ({"error_rate": round(7 / 1000, 6)}, "error_rate", "0.007", "0.0069", "0.0071"),
    ({"error_rate": round(29 / 1000, 6)}, "error_rate", "2.9%", "2.8%", "3%"),
    ({"operations": {"timed_out": 3}}, "timeouts", "3", "2", "4"),
    ({"operations": {"sent": 1000}}, "sent", "1e3", "999", "1001"),
    ({"achieved_rate": round(1000 / 12, 3)}, "achieved_rate", "83.333", "83.332", "83.334"),
    (
        {"sent_rate": 110.0, "offered_rate": 100.0},
        "sent_rate",
        "1.1 * offered_rate",
        "1.09 * offered_rate",
        "1.11 * offered_rate",
    ),
    (
        {"achieved_rate": 98.0, "offered_rate": 100.0},
        "achieved_rate",
        "0.98 * offered_rate",
        "0.97 * offered_rate",
        "0.99 * offered_rate",
    ),
    ({"sent_rate": 100.0, "offered_rate": 100.0}, "sent_rate", "offered_rate", None, None),
]
# (actual < limit, actual == limit, actual > limit)
TRUTH = {
    "<": (True, False, False),
    "<=": (True, True, False),
    ">": (False, False, True),
    ">=": (False, True, True),
    "==": (False, True, False),
    "!=": (True, False, True),
}
BOUNDARY_CASES = [
    pytest.param(summary, f"{metric} {op} {literal}", expected, id=f"{metric} {op} {literal}")
    for summary, metric, equal, below, above in BOUNDARIES
    for op, (when_less, when_equal, when_greater) in TRUTH.items()
    for literal, expected in ((above, when_less), (equal, when_equal), (below, when_greater))
    if literal is not None
]


@pytest.mark.parametrize(("summary", "expression", "expected"), BOUNDARY_CASES)
def test_every_operator_on_both_sides_of_and_at_its_limit(summary, expression, expected):
    result = parse_threshold(expression).evaluate(summary)
    assert result.ok is expected, result
    assert result.reason == ""


@pytest.mark.parametrize(("summary", "metric", "equal"), [b[:3] for b in BOUNDARIES])
def test_at_the_boundary_actual_and_limit_are_the_same_number(summary, metric, equal):
    result = parse_threshold(f"{metric} <= {equal}").evaluate(summary)
    assert result.actual == result.limit


# --- no data: never a pass, whatever the operator and whichever side is missing -------------
#
# A closed-model run has no schedule, so its summary's offered_rate is None: a threshold that
# compares with it has nothing to compare with and must fail, naming the metric.


def closed_model_summary() -> dict:
    counters = {"ops.sent": 500, "ops.completed": 500, "ops.succeeded": 500}
    return build_summary({}, counters, {"load_duration_s": 10.0, "offered_rate": None})


@pytest.mark.parametrize("op", TRUTH)
def test_a_right_hand_metric_without_data_fails_whatever_the_operator(op):
    summary = closed_model_summary()
    assert summary["offered_rate"] is None
    assert summary["achieved_rate"] == 50.0
    for expression in (f"achieved_rate {op} 0.98 * offered_rate", f"sent_rate {op} offered_rate"):
        result = parse_threshold(expression).evaluate(summary)
        assert not result.ok, result
        assert result.reason == "no data for offered_rate"
        assert result.limit is None
        assert result.actual == 50.0


@pytest.mark.parametrize("op", TRUTH)
def test_a_left_hand_metric_without_data_fails_whatever_the_operator(op):
    summary = closed_model_summary()
    for expression, metric in (
        (f"offered_rate {op} 100", "offered_rate"),
        (f"offered_rate {op} achieved_rate", "offered_rate"),
        (f"p99(first_response) {op} 1s", "p99(first_response)"),
        (f"p99(callback) {op} 1s", "p99(callback)"),
    ):
        result = parse_threshold(expression).evaluate(summary)
        assert not result.ok, result
        assert result.reason == f"no data for {metric}"


@pytest.mark.parametrize("value", ["fast", [1, 2], {"p99": 1}, True])
def test_a_value_that_is_not_a_number_is_no_data_not_a_crash(value):
    result = parse_threshold("sent_rate >= offered_rate").evaluate(
        {"sent_rate": 10.0, "offered_rate": value}
    )
    assert not result.ok
    assert result.reason == "no data for offered_rate"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("achieved_rate >= 1.2.3 * offered_rate", "unknown metric '1.2.3 * offered_rate'"),
        ("achieved_rate >= 1e999 * offered_rate", "the factor 1e999 is too large"),
    ],
)
def test_a_malformed_factor_is_a_config_error(expression, message):
    with pytest.raises(ConfigError) as info:
        parse_threshold(expression, key="thresholds[0]")
    assert message in str(info.value)
