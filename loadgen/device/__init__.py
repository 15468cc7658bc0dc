"""The virtual device fleet (issue 3): thousands of simulated OpenGate devices in one process.

Devices share HTTP/HTTPS listeners and are routed by the id in the request path; each one is a
small record, so memory grows with the operations in flight, not with the fleet. Behaviour
(sync / async / async-multi flows, steps, delays, result mix, faults) comes from seeded
profiles; asynchronous answers are POSTed to the platform over pooled keep-alive connections.

    config = FleetConfig(count=100_000, http_port=0)
    info = await nursery.start(run_fleet, config, metrics)
    ...
    info.handle.shutdown()      # drain: finish what is in flight, then return
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadgen.device.config import (
        DEFAULT_HTTP_PORT,
        DEFAULT_HTTPS_PORT,
        FAULT_NAMES,
        Delay,
        Delays,
        Faults,
        FleetConfig,
        Profile,
        Responder,
        Sleepy,
        address_range,
    )
    from loadgen.device.runner import FleetHandle, FleetInfo, run_fleet

# Exported lazily, so that importing a pure submodule (timers, steps, behaviour) does not pull in
# trio through the runner.
_HOME = {
    **dict.fromkeys(
        ("DEFAULT_HTTPS_PORT", "DEFAULT_HTTP_PORT", "FAULT_NAMES", "Delay", "Delays", "Faults",
         "FleetConfig", "Profile", "Responder", "Sleepy", "address_range"),
        "loadgen.device.config",
    ),
    **dict.fromkeys(("FleetHandle", "FleetInfo", "run_fleet"), "loadgen.device.runner"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "DEFAULT_HTTPS_PORT",
    "DEFAULT_HTTP_PORT",
    "FAULT_NAMES",
    "Delay",
    "Delays",
    "Faults",
    "FleetConfig",
    "FleetHandle",
    "FleetInfo",
    "Profile",
    "Responder",
    "Sleepy",
    "address_range",
    "run_fleet",
]
