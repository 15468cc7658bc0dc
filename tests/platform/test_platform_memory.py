"""Bytes per operation in flight on the platform side (issue 14: at most 1 KB), measured with
tracemalloc on the real run (mock clock, a transport that acknowledges at once): deterministic,
not a timing."""

from __future__ import annotations

import pytest

from loadgen.bench.inflightmem import platform_bytes_per_operation

#: The issue's target is 1 KB per operation in flight; the bound leaves 20 % of it as margin.
BYTES_PER_OPERATION = 0.8 * 1024


@pytest.mark.parametrize("name", ["REBOOT_EQUIPMENT", "UPDATE"])
def test_an_operation_waiting_for_its_final_stays_under_a_kilobyte(name: str) -> None:
    """An acknowledged operation without retries left drops its request body (UPDATE's is
    ~400 bytes): nothing will re-send it."""
    figure = platform_bytes_per_operation(5_000, name)
    assert figure["bytes_per_op"] <= BYTES_PER_OPERATION, figure
