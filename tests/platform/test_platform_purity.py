"""The pacing, mix and in-flight modules are pure: importing them pulls in no trio or sockets,
so a test (or another tool) can drive them with plain floats."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["schedule", "mix", "inflight", "jobs"])
def test_pure_modules_import_no_io(module: str) -> None:
    code = (
        f"import loadgen.platform.{module}, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'trio', 'httpx', 'asyncio', 'h11', 'hypercorn'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
