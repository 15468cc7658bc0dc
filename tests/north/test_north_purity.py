"""The application side's tracker is pure: importing it pulls in no trio, sockets or HTTP."""

from __future__ import annotations

import subprocess
import sys


def test_the_tracker_imports_no_io() -> None:
    code = (
        "import loadgen.north.jobs, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'trio', 'httpx', 'asyncio', 'h11', 'hypercorn', 'socket'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
