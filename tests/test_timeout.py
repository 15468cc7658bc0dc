"""The per-test timeout fails a hanging test and the session goes on (tests/conftest.py).

Run in a separate pytest process: the timeout is a SIGALRM of the process, which the outer
session already uses for this very test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HANGING = """
import time

import trio


async def test_virtual_time_runs_on_forever(autojump_clock):
    while True:  # an expiry check that never expires: the mock clock jumps on and on
        await trio.sleep(1)


async def test_waits_forever_in_real_time():
    await trio.sleep_forever()


async def test_never_yields_to_trio():
    while True:
        pass


def test_sync_sleeps_forever():
    while True:
        time.sleep(0.05)


async def test_the_next_trio_test_still_runs():
    await trio.sleep(0)
    assert trio.current_time() >= 0
"""


def test_hanging_tests_fail_with_the_timeout_and_the_session_goes_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makeini(
        "[pytest]\ntrio_mode = true\ntimeout = 1\ntimeout_method = signal\nfilterwarnings = error\n"
    )
    pytester.makepyfile(test_hanging=HANGING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=4, passed=1)
    failed = [
        "test_virtual_time_runs_on_forever",
        "test_waits_forever_in_real_time",
        "test_never_yields_to_trio",
        "test_sync_sleeps_forever",
    ]
    result.stdout.fnmatch_lines([f"FAILED test_hanging.py::{name} - *" for name in failed])
    assert result.stdout.str().count("Timeout (>1.0s) from pytest-timeout.") >= len(failed)
    # a trio test stuck at an await says where
    result.stdout.fnmatch_lines(
        [
            "trio tasks when it expired:",
            "*task <test 'test_virtual_time_runs_on_forever'>",
            "*test_hanging.py:8 in test_virtual_time_runs_on_forever",
        ]
    )
    assert "Attempted to call run() from inside a run()" not in result.stdout.str()
    assert "TrioInternalError" not in result.stdout.str()
