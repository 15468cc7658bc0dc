"""The protocol layer is pure: importing it pulls in no networking or async machinery."""

from __future__ import annotations

import subprocess
import sys

CODE = (
    "import loadgen.protocol, loadgen.protocol.north, sys; "
    "print(sorted(m for m in sys.modules "
    "if m.split('.')[0] in {'trio','httpx','socket','asyncio','h11'}))"
)


def test_import_pulls_in_no_io_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
