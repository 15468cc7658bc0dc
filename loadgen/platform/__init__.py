"""The virtual platform: sends operations to devices at an open-model rate and receives their
asynchronous responses on its south API (issue 4).

Layout, one concept per module:

- ``config``: what to run (targets, arrival stages, mix, timeouts, south API), validated;
- ``schedule``: stages -> intended send times (pure; theory of pacing);
- ``mix``: operation and device choice, request bodies, operation ids (pure);
- ``inflight``: the in-flight table and the operation lifecycle state machine (pure);
- ``south``: the south API's behaviour and its fast-server handler; ``asgi``: the same as ASGI;
- ``sender``: the issuing task and the per-address workers (trio);
- ``runner``: ``run_platform``, the start/load/drain sequence and generator health;
- ``cli``: ``loadgen platform``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadgen.platform.config import (
        Arrival,
        MixEntry,
        PlatformConfig,
        SouthAPI,
        Stage,
        Target,
        Targets,
        Timeouts,
        load_targets_file,
    )
    from loadgen.platform.runner import PlatformInfo, PlatformResult, PlatformStats, run_platform

# Exported lazily, so that importing a pure submodule (schedule, mix, inflight) does not pull in
# trio through the runner.
_HOME = {
    **dict.fromkeys(
        ("Arrival", "MixEntry", "PlatformConfig", "SouthAPI", "Stage", "Target", "Targets",
         "Timeouts", "load_targets_file"),
        "loadgen.platform.config",
    ),
    **dict.fromkeys(
        ("PlatformInfo", "PlatformResult", "PlatformStats", "run_platform"),
        "loadgen.platform.runner",
    ),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "Arrival",
    "MixEntry",
    "PlatformConfig",
    "PlatformInfo",
    "PlatformResult",
    "PlatformStats",
    "SouthAPI",
    "Stage",
    "Target",
    "Targets",
    "Timeouts",
    "load_targets_file",
    "run_platform",
]
