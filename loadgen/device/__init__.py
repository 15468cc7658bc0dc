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
