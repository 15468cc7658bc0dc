"""``Counts``, the counters of ``Metrics``: a ``Counter`` in all but the cost of a store."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from loadgen.metrics.registry import Counts, Metrics


def test_the_counters_count_as_a_counter_does() -> None:
    counters = Metrics().counters
    assert isinstance(counters, Counts)
    assert isinstance(counters, Counter)
    assert counters["never.counted"] == 0  # a missing name reads 0 and is not stored
    assert "never.counted" not in counters
    counters["ops.sent"] += 1
    counters["ops.sent"] += 2
    counters.update({"ops.sent": 1, "ops.completed": 4})
    assert counters == Counter({"ops.sent": 4, "ops.completed": 4})
    assert counters.most_common(1) in ([("ops.sent", 4)], [("ops.completed", 4)])
    assert counters.total() == 8
    assert orjson.loads(orjson.dumps(counters)) == {"ops.sent": 4, "ops.completed": 4}
    del counters["ops.completed"]
    assert dict(counters) == {"ops.sent": 4}


def test_deleting_a_name_never_counted_is_an_error_as_in_a_dict() -> None:
    with pytest.raises(KeyError):
        del Counts()["never.counted"]
