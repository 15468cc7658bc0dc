"""``raise_fd_limit``: the soft descriptor limit goes up to the hard one; one warning line when the
limit stays below what a run can open. The limit is changed in this process and restored."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadgen.http.fdlimit import FD_HEADROOM, FdLimit, fd_limit_plan, raise_fd_limit

INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "needed", "target"),
    [
        (256, 256, 300, 256),  # nothing to raise
        (1024, 65536, 300, 65536),  # up to the hard limit, need or not
        (1024, INF, 5000, 5000),  # unlimited hard: ask for what is needed
        (1024, INF, 100, 1024),  # ... never lower
        (INF, INF, 100, INF),
    ],
)
def test_plan(soft: int, hard: int, needed: int, target: int) -> None:
    assert fd_limit_plan(soft, hard, needed) == target


@pytest.fixture
def lowered() -> Iterator[tuple[int, int]]:
    """The soft limit lowered to 512 (or the hard one, if lower); restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 512 if hard == INF else min(512, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    yield low, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raises_to_the_hard_limit_quietly_when_enough(
    lowered: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    low, hard = lowered
    if hard != INF and hard < 200 + FD_HEADROOM:
        pytest.skip(f"hard limit {hard} too low for this case")
    limit = raise_fd_limit(200, what="the test")
    expected = hard if hard != INF else low
    assert limit == FdLimit(before=low, soft=expected, hard=hard, needed=200 + FD_HEADROOM)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)
    assert limit.enough
    assert not [r for r in caplog.records if r.name == "loadgen.http.fdlimit"]


def test_warns_once_when_the_hard_limit_is_short(
    lowered: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    low, hard = lowered
    if hard == INF:
        pytest.skip("no hard limit to fall short of")
    caplog.set_level(logging.WARNING, logger="loadgen.http.fdlimit")
    limit = raise_fd_limit(hard, what="the fleet")
    assert (limit.before, limit.soft, limit.enough) == (low, hard, False)
    [line] = [r.getMessage() for r in caplog.records if r.name == "loadgen.http.fdlimit"]
    assert line == (
        f"file descriptor limit is {hard} (hard {hard}), below the {hard + FD_HEADROOM} that the "
        f"fleet can need ({hard} connections + {FD_HEADROOM} spare): connections beyond it are "
        f"refused or shed; raise it (ulimit -n {hard + FD_HEADROOM})"
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_the_descriptor_table_is_grown_before_the_load() -> None:
    """Linux grows the table as descriptors open, and in a process with threads each growth
    stalls for an RCU grace period (10-30 ms measured): raise_fd_limit grows it once, at
    start-up, to what the run needs. A fresh process starts with a table of 64."""
    probe = (
        "import re, pathlib\n"
        "from loadgen.http.fdlimit import raise_fd_limit\n"
        "size = lambda: int(re.search(r'FDSize:\\s+(\\d+)', "
        "pathlib.Path('/proc/self/status').read_text()).group(1))\n"
        "before = size()\n"
        "limit = raise_fd_limit(3000, what='the test')\n"
        "print(before, size(), limit.soft)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    before, after, soft = (int(word) for word in done.stdout.split())
    assert before < 3000 + FD_HEADROOM
    assert after >= min(3000 + FD_HEADROOM, soft)
