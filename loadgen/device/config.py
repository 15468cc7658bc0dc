"""Configuration of the virtual device fleet: frozen records a TOML section maps onto 1:1.

Every record is a frozen, slotted, keyword-only dataclass that validates itself in
``__post_init__`` and raises ``ConfigError`` with the key of the offending field *relative to
the record* (``Delay`` says ``median``; ``Profile`` says ``delays.ack``; ``FleetConfig`` says
``profiles.UPDATE.flow``); the scenario loader places it in the file.

The nesting follows the issue: ``FleetConfig`` holds the listeners, a default ``Profile`` and
per-operation ones, ``Faults``, the ``Responder`` (where async answers go) and ``Sleepy``
(devices that poll for work). Nothing here does I/O; sampling a ``Delay`` takes the caller's
``random.Random`` so a fleet is reproducible from its seed.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Final, Literal

from loadgen.errors import ConfigError, key_prefix
from loadgen.http.server import DEFAULT_BACKLOG, ServerLimits
from loadgen.protocol import (
    DEFAULT_BASE_PATH,
    DEVICE_RESULT_CODES,
    OPERATION_NAMES,
    PathTemplate,
    ResultCode,
)
from loadgen.protocol.catalogue import unknown_operation
from loadgen.units import Seconds

__all__ = [
    "DEFAULT_HTTPS_PORT",
    "DEFAULT_HTTP_PORT",
    "FAULT_NAMES",
    "Delay",
    "Delays",
    "Faults",
    "FleetConfig",
    "Flow",
    "Profile",
    "Responder",
    "Sleepy",
    "address_range",
]

DEFAULT_HTTP_PORT: Final = 1123
DEFAULT_HTTPS_PORT: Final = 11235
#: z such that P(N(0,1) <= z) = 0.99: lognormal sigma = ln(p99 / median) / Z99.
Z99: Final = 2.3263478740408408

DelayKind = Literal["fixed", "uniform", "exponential", "lognormal"]
Flow = Literal["sync", "async", "async-multi"]
StepsMode = Literal["together", "partials"]
WhenBusy = Literal["queue", "reject"]

_DELAY_KINDS: Final = ("fixed", "uniform", "exponential", "lognormal")
_FLOWS: Final = ("sync", "async", "async-multi")
_ANSWER_STATUSES: Final = (200, 201, 202, 204)


def _seconds(value: object, key: str, *, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        what = "> 0" if positive else ">= 0"
        raise ConfigError(f"expected a finite number of seconds {what}, got {value!r}", key=key)


def _probability(value: object, key: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise ConfigError(f"expected a probability between 0 and 1, got {value!r}", key=key)


def _count(value: object, key: str, *, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"expected an integer >= {minimum}, got {value!r}", key=key)


def _choice(value: object, allowed: tuple[object, ...], key: str) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"expected one of {shown}, got {value!r}", key=key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delay:
    """A modelled delay in seconds, drawn from a distribution.

    ``fixed`` uses ``value``; ``uniform`` draws in [``low``, ``high``]; ``exponential`` has mean
    ``mean``; ``lognormal`` is given the way latencies are described, by its ``median`` and its
    ``p99`` (sigma = ln(p99/median) / 2.326). ``cap`` bounds any draw (heavy tails included).
    """

    kind: DelayKind = "fixed"
    value: Seconds = 0.0
    low: Seconds = 0.0
    high: Seconds = 0.0
    mean: Seconds = 0.0
    median: Seconds = 0.0
    p99: Seconds = 0.0
    cap: Seconds = math.inf

    def __post_init__(self) -> None:
        _choice(self.kind, _DELAY_KINDS, "kind")
        for name in ("value", "low", "high", "mean", "median", "p99"):
            _seconds(getattr(self, name), name)
        if not (isinstance(self.cap, (int, float)) and self.cap >= 0):
            raise ConfigError(f"expected seconds >= 0 (or inf), got {self.cap!r}", key="cap")
        if self.kind == "uniform" and self.high < self.low:
            raise ConfigError(f"expected high >= low ({self.low}), got {self.high}", key="high")
        if self.kind == "lognormal":
            if self.median <= 0:
                raise ConfigError(f"expected a median > 0, got {self.median}", key="median")
            if self.p99 < self.median:
                raise ConfigError(
                    f"expected p99 >= median ({self.median}), got {self.p99}", key="p99"
                )

    @classmethod
    def fixed(cls, seconds: float) -> Delay:
        return cls(kind="fixed", value=seconds)

    @classmethod
    def uniform(cls, low: float, high: float) -> Delay:
        return cls(kind="uniform", low=low, high=high)

    @classmethod
    def exponential(cls, mean: float) -> Delay:
        return cls(kind="exponential", mean=mean)

    @classmethod
    def lognormal(cls, median: float, p99: float) -> Delay:
        return cls(kind="lognormal", median=median, p99=p99)

    @classmethod
    def parse(cls, text: str) -> Delay:
        """``0.2`` | ``fixed:0.2`` | ``uniform:0.1,0.3`` | ``exponential:0.2`` |
        ``lognormal:0.05,0.5`` (median, p99), as the command line gives them."""
        kind, sep, rest = text.strip().partition(":")
        if not sep:
            kind, rest = "fixed", kind
        kind = {"exp": "exponential", "lognorm": "lognormal"}.get(kind, kind)
        try:
            numbers = [float(part) for part in rest.split(",")] if rest else []
        except ValueError:
            raise ConfigError(f"expected numbers of seconds, got {text!r}") from None
        arity = {"fixed": 1, "uniform": 2, "exponential": 1, "lognormal": 2}.get(kind)
        if arity is None:
            raise ConfigError(f"expected one of {', '.join(_DELAY_KINDS)}, got {kind!r}")
        if len(numbers) != arity:
            raise ConfigError(f"{kind} takes {arity} number(s), got {text!r}")
        if kind == "fixed":
            return cls.fixed(numbers[0])
        if kind == "uniform":
            return cls.uniform(numbers[0], numbers[1])
        if kind == "exponential":
            return cls.exponential(numbers[0])
        return cls.lognormal(numbers[0], numbers[1])

    @property
    def is_zero(self) -> bool:
        """True when every draw is 0 (the fast path skips the sleep and the draw)."""
        return (self.kind == "fixed" and self.value == 0) or self.cap == 0

    def sample(self, rng: random.Random) -> float:
        """One draw, in seconds; consumes ``rng`` only for the random kinds."""
        kind = self.kind
        if kind == "fixed":
            drawn = self.value
        elif kind == "uniform":
            drawn = rng.uniform(self.low, self.high)
        elif kind == "exponential":
            drawn = rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0
        else:
            sigma = math.log(self.p99 / self.median) / Z99
            drawn = rng.lognormvariate(math.log(self.median), sigma)
        return min(drawn, self.cap)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.value:g}s"
        if self.kind == "uniform":
            return f"uniform({self.low:g}..{self.high:g}s)"
        if self.kind == "exponential":
            return f"exponential(mean {self.mean:g}s)"
        return f"lognormal(median {self.median:g}s, p99 {self.p99:g}s)"


ZERO: Final = Delay()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delays:
    """Where an operation waits. ``sync``: before the synchronous answer. ``ack``: before the
    acknowledgement of an async operation. ``step``: before each step is done (async flows).
    ``final``: after the last step, before the final response is POSTed (async flows)."""

    sync: Delay = ZERO
    ack: Delay = ZERO
    step: Delay = ZERO
    final: Delay = ZERO

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), Delay):
                raise ConfigError("expected a Delay", key=f.name)


def _default_results() -> Mapping[ResultCode, float]:
    return MappingProxyType({ResultCode.SUCCESSFUL: 1.0})


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """How a device runs one kind of operation.

    ``flow``: ``sync`` (201 + response JSON), ``async`` (ack, then one final POST) or
    ``async-multi`` (ack, partial POSTs without ``resultCode``, then the final). ``steps``:
    ``None`` for the catalogue's steps (PROTOCOL.md §6) or an explicit list of names.
    ``steps_mode``: ``together`` (all steps in one message) or ``partials`` (one partial per
    step; only with ``async-multi``, and its default there). ``results``: the result mix,
    weights per device result code, normalised (a step failure matches the code: see
    ``behaviour``). ``sync_status`` / ``ack_status``: 200, 201, 202 or 204 (204 cannot carry
    the sync response body). ``concurrency``: operations one device runs at once; above it,
    ``when_busy = "queue"`` waits (at most ``queue_limit``, then rejects) and ``"reject"``
    answers ``ERROR_PROCESSING`` at once. The concurrency settings of the profile of the
    operation being admitted apply.
    """

    flow: Flow = "sync"
    steps: tuple[str, ...] | None = None
    steps_mode: StepsMode | None = None
    delays: Delays = field(default_factory=Delays)
    results: Mapping[ResultCode, float] = field(default_factory=_default_results)
    sync_status: int = 201
    ack_status: int = 201
    version: str = "1.0"
    concurrency: int = 1
    when_busy: WhenBusy = "queue"
    queue_limit: int = 1000
    custom: bool = False  # the profile of an operation outside the catalogue, on purpose

    def __post_init__(self) -> None:
        _choice(self.flow, _FLOWS, "flow")
        if self.steps is not None:
            steps: object = self.steps
            if isinstance(steps, str) or not all(isinstance(s, str) and s for s in self.steps):
                raise ConfigError(
                    f"expected a list of non-empty step names, got {self.steps!r}", key="steps"
                )
            object.__setattr__(self, "steps", tuple(self.steps))
        mode = self.steps_mode
        if mode is None:
            mode = "partials" if self.flow == "async-multi" else "together"
            object.__setattr__(self, "steps_mode", mode)
        _choice(mode, ("together", "partials"), "steps_mode")
        if mode == "partials" and self.flow != "async-multi":
            raise ConfigError(
                f"steps_mode 'partials' needs flow 'async-multi', not {self.flow!r}",
                key="steps_mode",
            )
        if not isinstance(self.delays, Delays):
            raise ConfigError("expected a Delays record", key="delays")
        self._check_results()
        _choice(self.sync_status, _ANSWER_STATUSES, "sync_status")
        _choice(self.ack_status, _ANSWER_STATUSES, "ack_status")
        if self.flow == "sync" and self.sync_status == 204:
            raise ConfigError(
                "a 204 answer has no body, so it cannot carry a sync response", key="sync_status"
            )
        if not isinstance(self.version, str) or not self.version:
            raise ConfigError(f"expected a non-empty string, got {self.version!r}", key="version")
        _count(self.concurrency, "concurrency", minimum=1)
        _choice(self.when_busy, ("queue", "reject"), "when_busy")
        _count(self.queue_limit, "queue_limit", minimum=0)

    def _check_results(self) -> None:
        if not isinstance(self.results, Mapping) or not self.results:
            raise ConfigError("expected a non-empty table of result code weights", key="results")
        normalised: dict[ResultCode, float] = {}
        for code, weight in self.results.items():
            member = ResultCode.__members__.get(str(code))
            if member is None or member not in DEVICE_RESULT_CODES:
                allowed = ", ".join(sorted(DEVICE_RESULT_CODES))
                raise ConfigError(f"expected one of {allowed}, got {code!r}", key="results")
            ok = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not ok or not 0 <= weight < math.inf:
                raise ConfigError(f"expected a weight >= 0, got {weight!r}", key=f"results.{code}")
            normalised[member] = float(weight)
        total = sum(normalised.values())
        if total <= 0:
            raise ConfigError("the result weights add up to 0", key="results")
        object.__setattr__(
            self, "results", MappingProxyType({c: w / total for c, w in normalised.items()})
        )

    @property
    def is_async(self) -> bool:
        return self.flow != "sync"


#: The fault names, as counters (``device.fault.<name>``) and as ``Faults`` fields.
FAULT_NAMES: Final = (
    "close",
    "hang",
    "error_500",
    "malformed_json",
    "wrong_id",
    "drip",
    "no_final",
    "duplicate_final",
    "partial_after_final",
)
#: Faults that only exist for async flows (they concern the POSTs after the ack).
ASYNC_ONLY_FAULTS: Final = frozenset({"no_final", "duplicate_final", "partial_after_final"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Probability per operation of each misbehaviour (they are exclusive: at most one is drawn,
    so the probabilities that apply to a flow must add up to at most 1).

    On the HTTP answer: ``close`` (close without answering), ``hang`` (never answer), ``error_500``,
    ``malformed_json`` (a cut-off body; for async flows the final POST is cut off instead),
    ``wrong_id`` (another operation's id; in the POSTs for async flows), ``drip`` (write the answer
    ``drip_bytes`` at a time every ``drip_interval`` s). After the ack (async flows only):
    ``no_final``, ``duplicate_final``, ``partial_after_final``.
    """

    close: float = 0.0
    hang: float = 0.0
    error_500: float = 0.0
    malformed_json: float = 0.0
    wrong_id: float = 0.0
    drip: float = 0.0
    no_final: float = 0.0
    duplicate_final: float = 0.0
    partial_after_final: float = 0.0
    drip_bytes: int = 8
    drip_interval: Seconds = 0.05

    def __post_init__(self) -> None:
        for name in FAULT_NAMES:
            _probability(getattr(self, name), name)
        total = sum(getattr(self, name) for name in FAULT_NAMES)
        if total > 1.0 + 1e-9:
            raise ConfigError(f"the fault probabilities add up to {total:g} > 1", key="faults")
        _count(self.drip_bytes, "drip_bytes", minimum=1)
        _seconds(self.drip_interval, "drip_interval")

    def probabilities(self, *, is_async: bool) -> tuple[tuple[str, float], ...]:
        """The (name, probability) pairs that apply to a flow, zeros left out."""
        return tuple(
            (name, p)
            for name in FAULT_NAMES
            if (p := getattr(self, name)) > 0 and (is_async or name not in ASYNC_ONLY_FAULTS)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Responder:
    """Where and how partial and final responses (and collect/iot data) are POSTed.

    ``platform_url`` is ``http(s)://host:port[/prefix]``; the path is ``prefix + base_path +
    /{deviceId}/operation/response``. A delivery that fails on the network or gets 408, 429 or
    5xx is retried ``retries`` times after ``backoff_base * 2**attempt`` seconds (at most
    ``backoff_max``); then it is counted as undelivered.
    """

    platform_url: str | None = None
    api_key: str | None = None
    base_path: str = DEFAULT_BASE_PATH
    retries: int = 3
    backoff_base: Seconds = 0.1
    backoff_max: Seconds = 2.0
    connect_timeout: Seconds = 5.0
    read_timeout: Seconds = 10.0
    max_connections: int = 64
    verify_tls: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.platform_url is not None:
            from loadgen.http.client import Origin

            with key_prefix("platform_url"):
                Origin.parse(self.platform_url)
        _check_base_path(self.base_path)
        _count(self.retries, "retries", minimum=0)
        _seconds(self.backoff_base, "backoff_base")
        _seconds(self.backoff_max, "backoff_max")
        _seconds(self.connect_timeout, "connect_timeout", positive=True)
        _seconds(self.read_timeout, "read_timeout", positive=True)
        _count(self.max_connections, "max_connections", minimum=1)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        return min(self.backoff_max, self.backoff_base * (2.0**attempt))


@dataclass(frozen=True, slots=True, kw_only=True)
class Sleepy:
    """Devices that drive operations themselves: a ``share`` of the fleet polls
    ``GET .../operation/pending`` every ``poll_period`` s (each period drawn uniformly within
    ``± jitter`` of it, a fraction), runs what it gets and answers with POSTs. At most
    ``max_polls`` polls are in flight. ``collect_after_refresh``: after a successful
    REFRESH_INFO (sleepy or not) the device POSTs fresh data to ``collect/iot``."""

    share: float = 0.0
    poll_period: Seconds = 60.0
    jitter: float = 0.1
    max_polls: int = 256
    collect_after_refresh: bool = False

    def __post_init__(self) -> None:
        _probability(self.share, "share")
        _seconds(self.poll_period, "poll_period", positive=True)
        _probability(self.jitter, "jitter")
        _count(self.max_polls, "max_polls", minimum=1)


def _backlog(value: object, key: str = "backlog") -> None:
    if type(value) is not int or not 1 <= value <= DEFAULT_BACKLOG:
        raise ConfigError(f"expected an integer 1..{DEFAULT_BACKLOG}, got {value!r}", key=key)


def _check_base_path(base: object, key: str = "base_path") -> None:
    try:
        PathTemplate(base)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def address_range(first: str, count: int) -> tuple[str, ...]:
    """``count`` consecutive loopback addresses from ``first`` (e.g. 127.1.0.1, 127.1.0.2...)."""
    try:
        start = ipaddress.IPv4Address(first)
    except ValueError:
        raise ConfigError(f"expected an IPv4 address, got {first!r}", key="addresses") from None
    if count < 1:
        raise ConfigError(f"expected at least one address, got {count}", key="addresses")
    out = tuple(str(start + i) for i in range(count))
    if not ipaddress.IPv4Address(out[-1]).is_loopback or not start.is_loopback:
        raise ConfigError(f"{first} + {count} leaves 127.0.0.0/8", key="addresses")
    return out


def _default_profiles() -> Mapping[str, Profile]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    """A fleet: ``count`` devices named ``id_pattern.format(first_index + i)``, served on shared
    listeners and routed by the id in the path.

    Listeners: plain HTTP on ``http_port`` (``None``: off) and HTTPS on ``https_port`` (``None``:
    off; self-signed unless ``tls_cert``/``tls_key`` are given), bound to ``host``, or, in
    address mode, to each of ``addresses`` (loopback addresses; requests are still routed by
    the id in the path, so a device is reachable on every address). ``api_key``: when set,
    incoming requests must carry it (header or query parameter) or get 401. ``drain_timeout``
    bounds how long ``shutdown()`` waits for operations in flight. ``backlog``: the listen
    backlog of each listener (``loadgen.http.server.DEFAULT_BACKLOG``).
    """

    count: int = 1000
    id_pattern: str = "dev-{:06d}"
    first_index: int = 0
    host: str = "127.0.0.1"
    http_port: int | None = DEFAULT_HTTP_PORT
    https_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    base_path: str = DEFAULT_BASE_PATH
    api_key: str | None = None
    addresses: tuple[str, ...] = ()
    default: Profile = field(default_factory=Profile)
    profiles: Mapping[str, Profile] = field(default_factory=_default_profiles)
    faults: Faults = field(default_factory=Faults)
    responder: Responder = field(default_factory=Responder)
    sleepy: Sleepy = field(default_factory=Sleepy)
    # every random choice of the fleet; None: ``run_fleet`` draws one (``loadgen.seeds``) and
    # reports it in ``FleetInfo.seed``
    seed: int | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)
    drain_timeout: Seconds = 30.0
    backlog: int = DEFAULT_BACKLOG

    def __post_init__(self) -> None:
        _count(self.count, "count", minimum=0)
        _count(self.first_index, "first_index", minimum=0)
        try:
            first, second = self.id_pattern.format(0), self.id_pattern.format(1)
        except (IndexError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"expected a str.format pattern with one positional field, got "
                f"{self.id_pattern!r} ({exc})",
                key="id_pattern",
            ) from None
        if first == second or "/" in first:
            raise ConfigError(
                f"the pattern must give distinct ids without '/', got {self.id_pattern!r}",
                key="id_pattern",
            )
        for key in ("http_port", "https_port"):
            port = getattr(self, key)
            if port is not None and (type(port) is not int or not 0 <= port <= 65535):
                raise ConfigError(f"expected a port 0..65535 or none, got {port!r}", key=key)
        if self.http_port is None and self.https_port is None:
            raise ConfigError("both listeners are off", key="http_port")
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError("a key file needs its certificate file", key="tls_cert")
        _check_base_path(self.base_path)
        if self.api_key is not None and not self.api_key:
            raise ConfigError("expected a non-empty key or none", key="api_key")
        object.__setattr__(self, "addresses", tuple(self.addresses))
        for address in self.addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(
                    f"expected an IP address, got {address!r}", key="addresses"
                ) from None
        if not isinstance(self.default, Profile):
            raise ConfigError("expected a Profile", key="default")
        for name, profile in self.profiles.items():
            if not isinstance(profile, Profile):
                raise ConfigError("expected a Profile", key=f"profiles.{name}")
            if name not in OPERATION_NAMES and not profile.custom:
                raise ConfigError(unknown_operation(name), key=f"profiles.{name}")
        object.__setattr__(self, "profiles", MappingProxyType(dict(self.profiles)))
        if self.seed is not None and type(self.seed) is not int:
            raise ConfigError(f"expected an integer or none, got {self.seed!r}", key="seed")
        _seconds(self.drain_timeout, "drain_timeout")
        _backlog(self.backlog)
        needs_platform = self.default.is_async or self.sleepy.share > 0
        needs_platform = needs_platform or any(p.is_async for p in self.profiles.values())
        if needs_platform and self.responder.platform_url is None:
            raise ConfigError(
                "async flows and sleepy devices POST to the platform: set its URL",
                key="responder.platform_url",
            )

    def profile(self, name: str) -> Profile:
        """The profile of operation ``name`` (the default one when it has none of its own)."""
        return self.profiles.get(name, self.default)

    def device_id(self, index: int) -> str:
        """The id of device number ``index`` (0-based within this fleet)."""
        return self.id_pattern.format(self.first_index + index)

    def listen_hosts(self) -> tuple[str, ...]:
        return self.addresses or (self.host,)
