"""The north side's configuration: which north API, how many jobs, what they ask, how the close
is learned, how long to wait. Frozen, slotted, keyword-only records that validate themselves and
raise ``ConfigError`` naming the key, like the other sides'.

Decisions where the issue is silent (each a field, so a user can change it):

- ``timeouts`` are the jobs' ``operationParameters`` (seconds here, milliseconds on the wire),
  the platform side's ``Timeouts`` record and defaults (``ackTimeout`` 10 s, ``timeout`` 90 s);
  a mix entry's own ``timeouts`` wins, as on the platform side;
- a job is closed by its **callback** (served by loadgen) unless ``close_by = "poll"``; a poll
  reads N2 and never more than ``max_polls_per_s`` are sent, all jobs together;
- a job that has not been dispatched ``dispatch_timeout`` (10 s) after its intended time ends
  timed out; one that is not closed by ``timeout · (retries + 1) + retriesDelay · retries +
  close_margin`` (5 s) after it ends timed out too: the platform had all its attempts and a
  margin to report;
- the drain after the last job waits at most ``drain_grace`` (default: the longest close
  timeout, at most 30 s), then records what is left at its own deadline;
- ``targets`` ``None`` means the devices of the fleet that runs in the same campaign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from loadgen.errors import ConfigError
from loadgen.http.client import Origin
from loadgen.metrics.health import HealthLimits
from loadgen.platform.config import Arrival, MixEntry, Targets, Timeouts
from loadgen.protocol import OPERATION_NAMES
from loadgen.protocol.north import DEFAULT_NORTH_BASE
from loadgen.units import Seconds

__all__ = ["DEFAULT_CALLBACK_PATH", "NorthConfig"]

DEFAULT_CALLBACK_PATH: Final = "/loadgen/callback"
MAX_DEFAULT_GRACE: Final = 30.0


def _number(value: object, key: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"expected a number, got {value!r}", key=key)
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"expected a finite number {bound}, got {value!r}", key=key)


@dataclass(frozen=True, slots=True, kw_only=True)
class NorthConfig:
    """Everything ``run_north`` needs (see the module docstring for the decisions)."""

    # the north API: ``scheme://host[:port][/prefix]``; None: the stand-in of this campaign
    url: str | None = None
    base_path: str = DEFAULT_NORTH_BASE
    api_key: str | None = None  # sent as X-ApiKey
    verify: bool = True
    ca_file: str | None = None
    max_connections: int = 64
    keep_alive: bool = True
    arrival: Arrival = field(default_factory=Arrival)
    mix: tuple[MixEntry, ...] = (MixEntry(name=OPERATION_NAMES[0]),)
    timeouts: Timeouts = field(default_factory=Timeouts)  # the jobs' operationParameters
    stop_delay: Seconds | None = None  # schedule.stop.delayed of each job
    targets: Targets | None = None  # device ids; None: the fleet of this campaign
    targets_per_job: int = 1
    correlation: Literal["device"] = "device"
    close_by: Literal["callback", "poll"] = "callback"
    callback_host: str = "127.0.0.1"
    callback_port: int = 0
    callback_url: str | None = None  # as the platform reaches it; default http://host:port/path
    callback_path: str = DEFAULT_CALLBACK_PATH
    max_polls_per_s: float = 100.0
    dispatch_timeout: Seconds = 10.0
    close_margin: Seconds = 5.0
    job_id_key: str = "id"  # the body's key path of the job id (dotted), when no Location
    drain_grace: Seconds | None = None
    seed: int | None = None
    health: HealthLimits = field(default_factory=HealthLimits)

    def __post_init__(self) -> None:
        if self.url is not None:
            try:
                Origin.parse(self.url)
            except ConfigError as exc:
                raise ConfigError(str(exc), key="url") from None
        for key, kind in (("arrival", Arrival), ("timeouts", Timeouts), ("health", HealthLimits)):
            if not isinstance(getattr(self, key), kind):
                raise ConfigError(f"expected a {kind.__name__}", key=key)
        if self.arrival.model == "closed":
            raise ConfigError(
                "expected open or poisson: jobs arrive at a rate (an open model)",
                key="arrival.model",
            )
        if type(self.mix) is not tuple:
            object.__setattr__(self, "mix", tuple(self.mix))
        if not self.mix or not any(entry.weight > 0 for entry in self.mix):
            raise ConfigError("expected at least one operation with a weight > 0", key="mix")
        if self.targets is not None and not isinstance(self.targets, Targets):
            raise ConfigError("expected a Targets table", key="targets")
        for key in ("max_connections", "targets_per_job"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected an integer >= 1, got {value!r}", key=key)
        if self.targets is not None and self.targets_per_job > len(self.targets):
            raise ConfigError(
                f"expected at most {len(self.targets)} (the targets), got {self.targets_per_job}",
                key="targets_per_job",
            )
        if self.correlation != "device":
            raise ConfigError(f"expected device, got {self.correlation!r}", key="correlation")
        if self.close_by not in ("callback", "poll"):
            raise ConfigError(f"expected callback or poll, got {self.close_by!r}", key="close_by")
        if isinstance(self.callback_port, bool) or not 0 <= self.callback_port < 65536:
            raise ConfigError(f"expected a port 0..65535, got {self.callback_port!r}",
                              key="callback_port")  # fmt: skip
        if self.callback_url is not None:
            try:
                Origin.parse(self.callback_url)
            except ConfigError as exc:
                raise ConfigError(str(exc), key="callback_url") from None
        if not self.callback_path.startswith("/"):
            raise ConfigError("expected a path starting with /", key="callback_path")
        _number(self.max_polls_per_s, "max_polls_per_s")
        _number(self.dispatch_timeout, "dispatch_timeout")
        _number(self.close_margin, "close_margin", allow_zero=True)
        if self.stop_delay is not None:
            _number(self.stop_delay, "stop_delay")
        if self.drain_grace is not None:
            _number(self.drain_grace, "drain_grace", allow_zero=True)
        if not self.job_id_key or any(not part for part in self.job_id_key.split(".")):
            raise ConfigError(f"expected a dotted key path, got {self.job_id_key!r}",
                              key="job_id_key")  # fmt: skip
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"no such file: {self.ca_file}", key="ca_file")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ConfigError(f"expected an integer or none, got {self.seed!r}", key="seed")

    def timeouts_of(self, entry: MixEntry) -> Timeouts:
        return entry.timeouts or self.timeouts

    def close_timeout(self, entry: MixEntry) -> float:
        """How long after its intended time a job of ``entry`` may take to be closed."""
        t = self.timeouts_of(entry)
        return t.timeout * (t.retries + 1) + t.retries_delay * t.retries + self.close_margin

    @property
    def grace(self) -> float:
        if self.drain_grace is not None:
            return self.drain_grace
        return min(max(self.close_timeout(e) for e in self.mix), MAX_DEFAULT_GRACE)

    @property
    def key_path(self) -> tuple[str, ...]:
        return tuple(self.job_id_key.split("."))
