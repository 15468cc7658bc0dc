"""The virtual platform's configuration: what to load, how hard, with what, and how long to wait.

Every record is a frozen, slotted, keyword-only dataclass that validates itself in
``__post_init__`` and raises ``ConfigError`` with the key path of the offending value
(``arrival.stages[1].rate``), so a scenario fails before any load starts, naming what was
expected; the scenario loader places it in the file with the full key path.

Targets come in two shapes (issue 4 §1): a base URL plus an id pattern and a count (a fleet that
shares one address, such as the virtual fleet), or an explicit list of ``(device_id, url)`` pairs
read from a CSV or JSON-lines file by ``load_targets_file`` (real devices with their own
addresses). A URL is a device's *base* address, ``scheme://host[:port][/prefix]``; the request
path ``{prefix}{base_path}/{deviceId}/operation/request`` is appended to it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from loadgen.errors import ConfigError
from loadgen.http.client import Origin
from loadgen.http.server import DEFAULT_BACKLOG
from loadgen.metrics.health import HealthLimits
from loadgen.protocol import DEFAULT_BASE_PATH, OPERATION_NAMES, PathTemplate
from loadgen.protocol.catalogue import unknown_operation
from loadgen.protocol.enums import RESULT_CODE_BY_VALUE, RESULT_CODE_EXPECTED
from loadgen.units import Seconds

__all__ = [
    "DEFAULT_ID_PATTERN",
    "Arrival",
    "ArrivalModel",
    "DeviceChoice",
    "MixEntry",
    "NorthAPI",
    "PlatformConfig",
    "SouthAPI",
    "Stage",
    "Target",
    "Targets",
    "Timeouts",
    "load_targets_file",
]

ArrivalModel = Literal["open", "poisson", "closed"]
DeviceChoice = Literal["uniform", "round-robin", "zipf"]

DEFAULT_ID_PATTERN: Final = "dev-{:06d}"  # the fleet's default; "dev-{index:06d}" works too
DEFAULT_DEVICE_URL: Final = "http://127.0.0.1:1123"
#: The grace period after the last stage, when none is given: min(timeout, this).
MAX_DEFAULT_GRACE: Final = 30.0
#: Operations one device address may hold queued (issued, waiting for a connection: the
#: sender's lane) by default (``max_queued``). Past its ceiling a generator's queue would
#: otherwise grow without end: memory grows, the collector scans an ever larger heap and
#: throughput falls (measured: 43k/s to 17k/s in five seconds offered 60k/s), and most of the
#: queue times out inside the generator. Refused at the bound, an operation is counted
#: (``ops.rejected``, ``ops.rejected.queue_full``) and the run is flagged saturated: its numbers
#: describe the generator, not the target. The queue is there to ride out jitter (every line of
#: a lane busy for a moment), not to hold an overload: 2,000 operations are ~40 ms at the open
#: model's ceiling. A deeper queue costs CPU per operation all the same: each operation is
#: written long after it was built, its state fallen out of the core's cache (measured offered
#: 60k/s, at the ceiling, interleaved runs: 10,000 deep, 26.1 µs CPU per operation; 2,000, 24.9;
#: 1,000, 24.5), and k6 or wrk2 hold no such queue at all.
#: A target that stalls with every connection busy fills it too (at 30k ops/s, in ~70 ms): the
#: refusals then say the generator could not offer the load over ``max_connections``; raise
#: ``max_queued`` (or the connections) to ride out longer stalls.
MAX_QUEUED: Final = 2_000


def _positive(value: float, key: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"expected a number, got {value!r}", key=key)
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"expected a finite number {bound}, got {value!r}", key=key)


def _check_listener(host: object, port: object) -> None:
    """A server's ``host`` and ``port`` (0: any free one), as the south and north APIs take."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ConfigError(f"expected a port number 0..65535, got {port!r}", key="port")
    if not host:
        raise ConfigError("expected a host to bind", key="host")


def _check_url(url: str, key: str) -> None:
    try:
        Origin.parse(url)
    except ConfigError as exc:
        raise ConfigError(str(exc), key=key) from None


# --- arrival ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """``duration`` seconds at ``rate`` operations per second.

    With ``ramp``, the rate goes linearly from the previous stage's end rate (0 for the first
    stage) to ``rate`` over the stage; without, it is ``rate`` throughout.
    """

    duration: Seconds
    rate: float
    ramp: bool = False
    name: str = ""  # shown in progress and the time series ("warm-up", "hold", ...)

    def __post_init__(self) -> None:
        _positive(self.duration, "duration")
        _positive(self.rate, "rate", allow_zero=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """How operations arrive.

    ``open``: at ``t0 + i / rate`` (integrated over the stages); ``poisson``: a seeded Poisson
    process with the same mean; ``closed``: ``concurrency`` operations in flight, a new one as
    soon as one ends (or, with ``per_device``, one in flight per device), for the stages' total
    duration (rates are ignored).
    """

    model: ArrivalModel = "open"
    stages: tuple[Stage, ...] = (Stage(duration=10.0, rate=100.0),)
    concurrency: int = 1
    per_device: bool = False

    def __post_init__(self) -> None:
        if self.model not in ("open", "poisson", "closed"):
            raise ConfigError(
                f"expected one of open, poisson, closed, got {self.model!r}", key="model"
            )
        if type(self.stages) is not tuple:
            object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ConfigError("expected at least one stage", key="stages")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, Stage):
                raise ConfigError(f"expected a Stage, got {stage!r}", key=f"stages[{i}]")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise ConfigError(f"expected an integer, got {self.concurrency!r}", key="concurrency")
        if self.concurrency < 1:
            raise ConfigError(f"expected >= 1, got {self.concurrency}", key="concurrency")

    @property
    def duration(self) -> float:
        return math.fsum(stage.duration for stage in self.stages)


# --- operation mix ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """PROTOCOL.md §7: ``ackTimeout``, ``timeout``, ``retries``, ``retriesDelay``,
    ``retryResultList``.

    ``ack_timeout`` bounds the wait for the HTTP answer to the request, ``timeout`` the wait for
    the final response; both count from the intended send time of the attempt (the retry's send
    time for a retry). A final response whose code is in ``retry_result_list`` is re-sent after
    ``retries_delay`` seconds, at most ``retries`` times, with the same operation id.
    """

    ack_timeout: Seconds = 10.0
    timeout: Seconds = 90.0
    retries: int = 0
    retries_delay: Seconds = 1.0
    retry_result_list: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _positive(self.ack_timeout, "ack_timeout")
        _positive(self.timeout, "timeout")
        _positive(self.retries_delay, "retries_delay", allow_zero=True)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"expected an integer >= 0, got {self.retries!r}", key="retries")
        if type(self.retry_result_list) is not tuple:
            object.__setattr__(self, "retry_result_list", tuple(self.retry_result_list))
        for i, code in enumerate(self.retry_result_list):
            if code not in RESULT_CODE_BY_VALUE:
                raise ConfigError(
                    f"expected {RESULT_CODE_EXPECTED}, got {code!r}",
                    key=f"retry_result_list[{i}]",
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class MixEntry:
    """One operation of the mix: its ``name``, relative ``weight`` and ``parameters``.

    ``parameters`` ``None`` means the catalogue default of PROTOCOL.md §6 (``{}`` for a custom
    name); ``timeouts`` ``None`` means the platform's. A name outside the catalogue is refused
    (a misspelling would otherwise load a device with operations it never heard of) unless it
    is declared ``custom``.
    """

    name: str
    weight: float = 1.0
    parameters: Mapping[str, Any] | None = None
    timeouts: Timeouts | None = None
    custom: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"expected a non-empty operation name, got {self.name!r}", key="name")
        if not self.custom and self.name not in OPERATION_NAMES:
            raise ConfigError(unknown_operation(self.name), key="name")
        _positive(self.weight, "weight", allow_zero=True)
        if self.parameters is not None:
            if not isinstance(self.parameters, Mapping):
                raise ConfigError(f"expected an object, got {self.parameters!r}", key="parameters")
            try:
                orjson.dumps(dict(self.parameters))
            except TypeError as exc:
                raise ConfigError(f"not JSON: {exc}", key="parameters") from None


# --- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One device with its own base address."""

    device_id: str
    url: str

    def __post_init__(self) -> None:
        if not isinstance(self.device_id, str) or not self.device_id:
            raise ConfigError(
                f"expected a non-empty device id, got {self.device_id!r}", key="device_id"
            )
        _check_url(self.url, "url")


@dataclass(frozen=True, slots=True, kw_only=True)
class Targets:
    """Devices to send to: ``count`` ids from ``id_pattern`` at ``base_url``, or ``devices``.

    ``id_pattern`` is a ``str.format`` pattern with one field, positional (``dev-{:06d}``, the
    fleet's form) or named ``index`` (``first_index`` ..
    ``first_index + count - 1``; a shard sets ``first_index``). When ``devices`` is not empty,
    it is the whole target list and the other fields are ignored.
    """

    base_url: str = DEFAULT_DEVICE_URL
    id_pattern: str = DEFAULT_ID_PATTERN
    count: int = 1
    first_index: int = 0
    devices: tuple[Target, ...] = ()

    def __post_init__(self) -> None:
        if type(self.devices) is not tuple:
            object.__setattr__(self, "devices", tuple(self.devices))
        if self.devices:
            seen: set[str] = set()
            for i, target in enumerate(self.devices):
                if not isinstance(target, Target):
                    raise ConfigError(f"expected a Target, got {target!r}", key=f"devices[{i}]")
                if target.device_id in seen:
                    raise ConfigError(
                        f"device id {target.device_id!r} listed twice", key=f"devices[{i}]"
                    )
                seen.add(target.device_id)
            return
        _check_url(self.base_url, "base_url")
        for key in ("count", "first_index"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"expected an integer >= 0, got {value!r}", key=key)
        if self.count < 1:
            raise ConfigError(f"expected at least 1 device, got {self.count}", key="count")
        try:
            first = self.id_pattern.format(self.first_index, index=self.first_index)
            second = self.id_pattern.format(self.first_index + 1, index=self.first_index + 1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                "expected a str.format pattern with one field, positional ('dev-{:06d}', as the "
                f"fleet's) or named ('dev-{{index:06d}}'), got {self.id_pattern!r} ({exc})",
                key="id_pattern",
            ) from None
        if first == second or not first:
            raise ConfigError(
                f"the pattern must give each index its own id, got {self.id_pattern!r}",
                key="id_pattern",
            )

    def __len__(self) -> int:
        return len(self.devices) if self.devices else self.count

    def resolve(self) -> list[tuple[str, str]]:
        """Every ``(device_id, base_url)`` in order."""
        if self.devices:
            return [(t.device_id, t.url) for t in self.devices]
        pattern, url = self.id_pattern, self.base_url
        first = self.first_index
        return [(pattern.format(i, index=i), url) for i in range(first, first + self.count)]


_ID_KEYS: Final = ("device_id", "deviceId", "id")


def _row(source: str, line: int, device_id: object, url: object) -> Target:
    where = f"{source}:{line}"
    if not isinstance(device_id, str) or not device_id.strip():
        raise ConfigError(f"expected a device id, got {device_id!r}", source=where)
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"expected a URL after the device id, got {url!r}", source=where)
    try:
        return Target(device_id=device_id.strip(), url=url.strip())
    except ConfigError as exc:
        raise ConfigError(str(exc), source=where) from None


def _jsonl_row(source: str, line: int, text: str) -> Target:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            f"expected a JSON object per line ({exc})", source=f"{source}:{line}"
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(
            'expected a JSON object like {"device_id": "...", "url": "..."}',
            source=f"{source}:{line}",
        )
    device_id = next((obj[key] for key in _ID_KEYS if key in obj), None)
    return _row(source, line, device_id, obj.get("url"))


def load_targets_file(path: str | Path) -> Targets:
    """Read ``device id, URL`` pairs from a CSV or JSON-lines file.

    CSV: two columns, an optional header row (``device_id,url``), ``#`` comments and blank lines
    ignored. JSON lines (``.jsonl``/``.ndjson``, or any file whose first entry starts with
    ``{``): one ``{"device_id": ..., "url": ...}`` per line. Errors name the file and line.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the targets file: {exc}", source=source) from None
    lines = [
        (number, raw.strip())
        for number, raw in enumerate(text.splitlines(), start=1)
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    if not lines:
        raise ConfigError("no targets in the file", source=source)
    jsonl = Path(path).suffix in (".jsonl", ".ndjson") or lines[0][1].startswith("{")
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for number, content in lines:
        if jsonl:
            target = _jsonl_row(source, number, content)
        else:
            cells = next(csv.reader(io.StringIO(content)))
            if (
                number == lines[0][0]
                and cells
                and cells[0].strip().lower() in (*_ID_KEYS, "device")
            ):
                continue  # the header row
            if len(cells) != 2:
                raise ConfigError(
                    f"expected 2 columns (device id, URL), got {len(cells)}",
                    source=f"{source}:{number}",
                )
            target = _row(source, number, cells[0], cells[1])
        if target.device_id in seen:
            raise ConfigError(
                f"device id {target.device_id!r} already listed on line {seen[target.device_id]}",
                source=f"{source}:{number}",
            )
        seen[target.device_id] = number
        targets.append(target)
    if not targets:
        raise ConfigError("no targets in the file", source=source)
    return Targets(devices=tuple(targets))


# --- the south API and the whole platform ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SouthAPI:
    """Where the platform's south API listens (devices POST their responses there).

    ``port`` 0 picks a free port. ``advertise_host`` is the host put in ``south_url`` when it
    differs from the bind address (binding 0.0.0.0 in a container). With ``tls`` the API serves
    HTTPS with ``cert_file``/``key_file``, or a generated self-signed certificate when none is
    given. ``api_key``: when set, requests without that ``X-ApiKey`` get 401.

    ``linger``: how long the API keeps listening after the last operation has ended, so that a
    duplicate final or a partial after the final arriving right behind it is still answered 201
    and counted (``south.duplicate`` / ``south.late``) rather than refused. It delays only the
    server's close: the load window and the drain are over by then. A run whose devices never
    talked to the south API and whose operations all got their answer does not linger.

    ``backlog``: the listen backlog (``loadgen.http.server.DEFAULT_BACKLOG``): connections from
    a whole fleet arriving at once wait in it instead of being refused.
    """

    host: str = "127.0.0.1"
    port: int = 0
    advertise_host: str | None = None
    api_key: str | None = None
    tls: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    linger: Seconds = 3.0
    backlog: int = DEFAULT_BACKLOG

    def __post_init__(self) -> None:
        _check_listener(self.host, self.port)
        if self.key_file and not self.cert_file:
            raise ConfigError("a key file needs its certificate file", key="cert_file")
        _positive(self.linger, "linger", allow_zero=True)
        if type(self.backlog) is not int or not 1 <= self.backlog <= DEFAULT_BACKLOG:
            raise ConfigError(
                f"expected an integer 1..{DEFAULT_BACKLOG}, got {self.backlog!r}", key="backlog"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class NorthAPI:
    """The stand-in's north API (PROTOCOL.md §9): applications create jobs here (N1), read them
    (N2, N3), move an operation (N4); each finished operation of a job with a ``callback`` is
    POSTed there. A job's operations go through the platform's sender like its own.

    ``port`` 0 picks a free port. ``api_key``: when set, requests without it get 401.
    ``keep_finished`` / ``keep_seconds`` bound the finished jobs kept for N2/N3 (the oldest go
    first), so memory stays flat over a long run. ``callback_connections`` bounds the POSTs to
    callback URLs in progress, ``callback_timeout`` each one.
    """

    host: str = "127.0.0.1"
    port: int = 0
    advertise_host: str | None = None
    api_key: str | None = None
    base_path: str = "/north/v80"
    keep_finished: int = 10_000
    keep_seconds: Seconds = 60.0
    callback_connections: int = 64
    callback_timeout: Seconds = 5.0

    def __post_init__(self) -> None:
        _check_listener(self.host, self.port)
        if not self.base_path.startswith("/"):
            raise ConfigError(f"expected a path starting with /, got {self.base_path!r}",
                              key="base_path")  # fmt: skip
        for key in ("keep_finished", "callback_connections"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected an integer >= 1, got {value!r}", key=key)
        _positive(self.keep_seconds, "keep_seconds", allow_zero=True)
        _positive(self.callback_timeout, "callback_timeout")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformConfig:
    """Everything ``run_platform`` needs. Defaults: 100 ops/s of REBOOT_EQUIPMENT for 10 s at
    one device on 127.0.0.1:1123, keep-alive, open model, a fresh seed (``seed=None``)."""

    targets: Targets = field(default_factory=Targets)
    arrival: Arrival = field(default_factory=Arrival)
    mix: tuple[MixEntry, ...] = (MixEntry(name=OPERATION_NAMES[0]),)
    device_choice: DeviceChoice = "uniform"
    zipf_s: float = 1.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    south: SouthAPI = field(default_factory=SouthAPI)
    north: NorthAPI | None = None  # the stand-in's north API (jobs), when set
    api_key: str | None = None  # sent to devices as X-ApiKey
    verify: bool = True
    ca_file: str | None = None
    keep_alive: bool = True
    max_connections: int = 64  # per device address; also the sender's workers per address
    max_in_flight: int | None = None
    max_queued: int = MAX_QUEUED  # per device address, waiting for a connection (see MAX_QUEUED)
    # every random choice (Poisson arrivals, mix, device choice); None: ``run_platform`` draws
    # one (``loadgen.seeds``) and reports it in ``PlatformResult.seed``
    seed: int | None = None
    base_path: str = DEFAULT_BASE_PATH
    plural_requests: bool = False  # .../operation/requests, as real device agents serve it
    sleepy_share: float = 0.0
    sleepy_devices: frozenset[str] = frozenset()
    health: HealthLimits = field(default_factory=HealthLimits)
    # latency and outcomes per operation name; None: when the mix has more than one name
    breakdown_by_name: bool | None = None
    drain_grace: Seconds | None = None  # None: min(timeout, 30 s)
    # Seconds after the load start: operations intended earlier (a warm-up) are run but not
    # counted in the run's metrics (``loadgen.platform.measured``); None counts every one.
    measure_from: Seconds | None = None
    # An answer whose id, name or deviceId does not match its operation is always counted
    # (device.wrong_id / wrong_name / wrong_device); strict also ends the operation as an error.
    strict: bool = False

    def __post_init__(self) -> None:
        for key, kind in (
            ("targets", Targets),
            ("arrival", Arrival),
            ("timeouts", Timeouts),
            ("south", SouthAPI),
            ("health", HealthLimits),
        ):
            if not isinstance(getattr(self, key), kind):
                raise ConfigError(f"expected a {kind.__name__}", key=key)
        if self.north is not None and not isinstance(self.north, NorthAPI):
            raise ConfigError("expected a NorthAPI", key="north")
        if type(self.mix) is not tuple:
            object.__setattr__(self, "mix", tuple(self.mix))
        if not self.mix:
            raise ConfigError("expected at least one operation", key="mix")
        for i, entry in enumerate(self.mix):
            if not isinstance(entry, MixEntry):
                raise ConfigError(f"expected a MixEntry, got {entry!r}", key=f"mix[{i}]")
        if not any(entry.weight > 0 for entry in self.mix):
            raise ConfigError("expected at least one operation with a weight > 0", key="mix")
        if self.device_choice not in ("uniform", "round-robin", "zipf"):
            raise ConfigError(
                f"expected one of uniform, round-robin, zipf, got {self.device_choice!r}",
                key="device_choice",
            )
        _positive(self.zipf_s, "zipf_s")
        if self.max_connections < 1:
            raise ConfigError(f"expected >= 1, got {self.max_connections}", key="max_connections")
        if self.max_queued < 1:
            raise ConfigError(f"expected >= 1, got {self.max_queued}", key="max_queued")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError(
                f"expected >= 1 or none, got {self.max_in_flight}", key="max_in_flight"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ConfigError(f"expected an integer or none, got {self.seed!r}", key="seed")
        if not isinstance(self.strict, bool):
            raise ConfigError(f"expected true or false, got {self.strict!r}", key="strict")
        try:
            PathTemplate(self.base_path)
        except ValueError as exc:
            raise ConfigError(str(exc), key="base_path") from None
        if not 0.0 <= self.sleepy_share <= 1.0:
            raise ConfigError(
                f"expected a share in [0, 1], got {self.sleepy_share}", key="sleepy_share"
            )
        if type(self.sleepy_devices) is not frozenset:
            object.__setattr__(self, "sleepy_devices", frozenset(self.sleepy_devices))
        if self.drain_grace is not None:
            _positive(self.drain_grace, "drain_grace", allow_zero=True)
        if self.measure_from is not None:
            _positive(self.measure_from, "measure_from", allow_zero=True)
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"no such file: {self.ca_file}", key="ca_file")

    @property
    def grace(self) -> float:
        """How long to wait for operations in flight after the last stage."""
        if self.drain_grace is not None:
            return self.drain_grace
        longest = max((e.timeouts or self.timeouts).timeout for e in self.mix)
        return min(longest, MAX_DEFAULT_GRACE)

    @property
    def breakdown(self) -> bool:
        """Whether results are broken down by operation name."""
        if self.breakdown_by_name is not None:
            return self.breakdown_by_name
        return len({entry.name for entry in self.mix}) > 1

    def timeouts_of(self, entry: MixEntry) -> Timeouts:
        return entry.timeouts or self.timeouts
