"""Fixtures of the report tests (the helpers live in ``report_fixtures``, a unique module name)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import Recorded, write_run


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Awaitable[Recorded]]:
    """``await make_run(name, **options)``: a synthetic results folder under ``tmp_path``.

    The test itself must request ``autojump_clock``: pytest-trio only takes the clock from the
    test's own arguments, so asking for it here would leave the load running in real time.
    """

    async def make(name: str = "run", **options: Any) -> Recorded:
        directory = tmp_path / name
        directory.mkdir()
        return await write_run(directory, **options)

    return make
