"""The TLS pair of ``make bench`` end to end, briefly: the fleet serves HTTPS with a generated
certificate, the sender verifies it with the CA the fleet wrote, and both sides' CPU per operation
comes back for plain and TLS with the ratios computed from them."""

from __future__ import annotations

import pytest

from loadgen.bench.tlsbench import CONNECTIONS, TARGET_RATIO, tls_figures


@pytest.mark.slow
def test_tls_pair_runs_verified_and_reports_both_sides() -> None:
    """Real processes and real time (eight short peers, two rounds): the figures are not
    checked, their presence and consistency are."""
    figures = tls_figures(0.3, warmup=0.5, rounds=2)
    assert figures["connections"] == CONNECTIONS
    assert figures["target_ratio"] == TARGET_RATIO
    for key in ("plain", "tls"):
        row = figures[key]
        assert row["transport"] == key
        assert row["operations"] > 0
        assert row["errors"] == 0  # a certificate the sender refused would show here
        assert row["sender_us_per_op"] > 0
        rounds = row["rounds"]
        assert [one["transport"] for one in rounds] == [key, key]
        assert row["operations"] == sum(one["operations"] for one in rounds)  # pooled
        assert row["sender_cpu_s"] == pytest.approx(sum(one["sender_cpu_s"] for one in rounds))
    plain, tls = figures["plain"], figures["tls"]
    if plain["fleet_us_per_op"] is None:  # no /proc: the fleet's CPU is unknown
        assert figures["fleet_ratio"] is None
    else:
        assert figures["fleet_ratio"] == round(plain["fleet_us_per_op"] / tls["fleet_us_per_op"], 3)
    assert figures["sender_ratio"] == round(plain["sender_us_per_op"] / tls["sender_us_per_op"], 3)
